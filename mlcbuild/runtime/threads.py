"""The decode thread count, chosen by measurement while decoding: fewer threads when a core is busy.

TVM's CPU kernels split each parallel loop statically over the pool's threads and wait for the
slowest at the end. When another process occupies one of the cores, the thread sharing it is
descheduled for a time slice now and then, and each of a decode step's ~150 parallel kernels
waits for it: measured on a 2-core Intel Xeon VM (2026-12-04, one core busy), SmolLM2-135M
q8f32_1 decoded 10.1x slower with 2 threads, and llama.cpp, with the same static split, 58x.
One thread fewer then runs on the free core at nearly one-thread speed.

:class:`DecodeThreads` times every decode step and tries the other candidate counts (all
threads, one fewer) now and then; it keeps the count whose recent steps were fastest:

- at the first decode steps of an engine, :data:`PROBE_STEPS` steps on each candidate;
- again when the current count's last :data:`WINDOW` steps got :data:`SLOWDOWN` times slower
  than when it was chosen (load appeared), and every :data:`REPROBE_EVERY` steps (load went).
  Not sooner: under load a probe's steps on every thread are the slow ones (probing 32 steps
  after moving to one thread, doubling up to 256: SmolLM2-135M's decode under load 94-166
  tokens/s against 212-243, on the Zen 4 host, 2026-12-07, measured together with the margin
  tried below, while 7 of its 8 probes chose one thread).

Idle, this costs the probes' slower steps: :data:`PROBE_STEPS` per :data:`REPROBE_EVERY`
decode steps. The thresholds are set against this project's 2-vCPU VMs, whose idle step times
drift by +-30 % within a run while a busy core slows a 2-thread step 3.8x (Zen 4) to 10x (Intel):
with ``SLOWDOWN = 1.3`` over 4 steps, idle drift alone started up to 15 extra probes per 5 x 64
timed steps (SmolLM2-135M q4f32_1, ``mlcbuild bench --local``, 2 threads, on the Zen 4 host,
2026-12-07; decode 216-268 tokens/s against 265-293 with the choice off). A probe keeps the
faster count, with no margin for all threads: in the first steps under load the two counts'
steps can be within 10 % (8.3 against 7.7 ms) before the thread sharing the busy core falls
behind (90-200 ms steps later), and a 1.15x margin then kept every thread (SmolLM2 q8f32_1
decode with one core busy 30 tokens/s, against 113-143 without the margin).

The count is set with TVM's ``runtime.config_threadpool`` (the calling thread's pool:
``num_workers_used``, no thread is created or pinned), so it never exceeds the pool's size
(``TVM_NUM_THREADS``, :func:`mlcbuild.runtime.engine.use_all_cores`). ``MLCBUILD_ADAPT_THREADS=0``
keeps the pool's size.
"""

from __future__ import annotations

import os
import statistics
from collections import deque
from typing import Callable

PROBE_STEPS = 3  # steps timed per candidate when probing
WINDOW = 8  # recent steps whose median is compared
SLOWDOWN = 1.6  # re-probe when the current count's recent median exceeds its reference by this
REPROBE_EVERY = 256  # decode steps between scheduled probes


class DecodeThreads:
    """Chooses the thread count of each decode step by measured step time (seconds).

    Args:
        max_threads: the pool's size; candidates are ``max_threads`` and ``max_threads - 1``
            (a single candidate, nothing to choose, below 2).
        configure: sets the count, ``runtime.config_threadpool`` by default.

    Use: ``threads.before(phase)`` ahead of every step, ``threads.after(seconds)`` after a decode step.
    """

    def __init__(self, max_threads: int, configure: Callable[[int], None] | None = None):
        self.candidates = [max_threads, max_threads - 1] if max_threads >= 2 else [max(1, max_threads)]
        self._configure = configure or _config_threadpool
        self.current = self.candidates[0]
        # unknown until the first step sets it: an earlier engine in this process may have left
        # TVM's pool (process-wide) at another count
        self._set: int | None = None
        self._recent: deque[float] = deque(maxlen=WINDOW)
        self._reference: float | None = None  # the current count's median when chosen
        self._probe: list[tuple[int, float]] = []  # (count, seconds) of the running probe
        self._queue: list[int] = []  # counts still to run in the probe
        self._since_probe = 0
        if len(self.candidates) > 1:
            self._start_probe()

    @property
    def probing(self) -> bool:
        return bool(self._queue)

    def _start_probe(self) -> None:
        self._probe = []
        self._queue = [c for c in self.candidates for _ in range(PROBE_STEPS)]

    def before(self, phase: str = "decode") -> int:
        """Set the count of the next step; returns it. A prefill step runs on the chosen count
        (a probe in progress goes on at the next decode step)."""
        n = self._queue[0] if self._queue and phase == "decode" else self.current
        if n != self._set:
            self._configure(n)
            self._set = n
        return n

    def after(self, seconds: float) -> None:
        """Record the step's time (seconds) and decide the next count."""
        if len(self.candidates) < 2:
            return
        if self._queue:
            self._probe.append((self._queue.pop(0), seconds))
            if not self._queue:
                self._finish_probe()
            return
        self._since_probe += 1
        self._recent.append(seconds)
        slowed = (
            len(self._recent) == WINDOW
            and self._reference is not None
            and statistics.median(self._recent) > SLOWDOWN * self._reference
        )
        if slowed or self._since_probe >= REPROBE_EVERY:
            self._start_probe()

    def _finish_probe(self) -> None:
        medians = {c: statistics.median(s for n, s in self._probe if n == c) for c in self.candidates}
        self.current = min(medians, key=medians.__getitem__)
        self._reference = medians[self.current]
        self._recent.clear()
        self._since_probe = 0


def _config_threadpool(n: int) -> None:
    import tvm

    tvm.get_global_func("runtime.config_threadpool")(1, n)  # kBig; n overrides its count


def decode_threads(max_threads: int) -> DecodeThreads | None:
    """A :class:`DecodeThreads` for a pool of ``max_threads``, or ``None`` where there is nothing to
    choose (one thread) or the user turned it off (``MLCBUILD_ADAPT_THREADS=0``)."""
    if max_threads < 2 or os.environ.get("MLCBUILD_ADAPT_THREADS", "1") == "0":
        return None
    return DecodeThreads(max_threads)
