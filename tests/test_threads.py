"""The decode thread count chosen by measurement (``mlcbuild.runtime.threads``): which count
it keeps for given step times, when it probes again, and that it sets TVM's pool."""

from __future__ import annotations

import pytest

from mlcbuild.runtime import threads as T


class FakeMachine:
    """Step times (seconds) by thread count, changeable mid-run; records what was configured."""

    def __init__(self, times: dict[int, float]):
        self.times = dict(times)
        self.configured: list[int] = []

    def configure(self, n: int) -> None:
        self.configured.append(n)

    def run(self, dt: T.DecodeThreads, steps: int) -> list[int]:
        used = []
        for _ in range(steps):
            n = dt.before("decode")
            used.append(n)
            dt.after(self.times[n])
        return used


def test_idle_keeps_every_thread_after_one_probe():
    m = FakeMachine({2: 1.0, 1: 1.6})
    dt = T.DecodeThreads(2, m.configure)
    used = m.run(dt, 100)
    probe = 2 * T.PROBE_STEPS
    assert used[:probe] == [2] * T.PROBE_STEPS + [1] * T.PROBE_STEPS
    assert set(used[probe:]) == {2} and dt.current == 2
    assert m.configured == [2, 1, 2]  # set at the first step, then only when the count changes


def test_a_busy_core_moves_decode_to_one_thread_fewer_and_back_when_it_goes():
    m = FakeMachine({2: 1.0, 1: 1.6})
    dt = T.DecodeThreads(2, m.configure)
    m.run(dt, 20)
    m.times[2] = 4.0  # another process takes a core: the static split waits for it
    used = m.run(dt, T.WINDOW + 2 * T.PROBE_STEPS + 10)
    assert T.WINDOW // 2 < used.index(1) <= T.WINDOW + T.PROBE_STEPS  # noticed within a window of slow steps
    assert dt.current == 1 and used[-10:] == [1] * 10
    m.times[2] = 1.0  # the load goes: found at the next scheduled probe
    used = m.run(dt, T.REPROBE_EVERY + 2 * T.PROBE_STEPS + 5)
    assert dt.current == 2 and used[-5:] == [2] * 5


def test_small_drift_does_not_probe():
    m = FakeMachine({2: 1.0, 1: 1.6})
    dt = T.DecodeThreads(2, m.configure)
    m.run(dt, 20)
    m.times[2] = 1.0 * T.SLOWDOWN * 0.95  # a longer context, not a busy core
    used = m.run(dt, 100)
    assert used == [2] * 100


def test_prefill_runs_on_the_chosen_count_during_a_probe():
    m = FakeMachine({3: 1.0, 2: 2.0})
    dt = T.DecodeThreads(3, m.configure)
    assert dt.candidates == [3, 2]
    m.run(dt, T.PROBE_STEPS)  # the probe is on the second candidate next
    assert dt.probing and dt.before("prefill") == 3
    assert dt.before("decode") == 2


@pytest.mark.parametrize("max_threads,env,made", [(1, None, False), (2, "0", False), (2, None, True), (2, "1", True)])
def test_decode_threads_only_where_there_is_a_choice(monkeypatch, max_threads, env, made):
    if env is None:
        monkeypatch.delenv("MLCBUILD_ADAPT_THREADS", raising=False)
    else:
        monkeypatch.setenv("MLCBUILD_ADAPT_THREADS", env)
    assert (T.decode_threads(max_threads) is not None) == made


def test_config_threadpool_sets_the_pool_size():
    """The default ``configure`` changes how many of TVM's threads a parallel kernel uses
    (``runtime.NumThreads``); it never grows the pool past its size, the count TVM itself
    chooses when asked for none (``config_threadpool(1, 0)``: ``TVM_NUM_THREADS`` or the cores)."""
    import tvm

    num_threads = tvm.get_global_func("runtime.NumThreads")
    T._config_threadpool(0)  # TVM's own default, whatever an earlier test left set
    size = num_threads()
    try:
        T._config_threadpool(1)
        assert num_threads() == 1
        T._config_threadpool(size + 4)
        assert num_threads() == size
    finally:
        T._config_threadpool(0)


def test_a_new_engine_sets_its_count_whatever_an_earlier_one_left():
    """TVM's pool is process-wide: an engine that ended on fewer threads must not leave the next
    one believing it runs on all of them."""
    m = FakeMachine({2: 4.0, 1: 1.6})  # a busy core: the first engine settles on one thread
    first = T.DecodeThreads(2, m.configure)
    m.run(first, 2 * T.PROBE_STEPS + 1)
    assert first.current == 1 and m.configured[-1] == 1
    second = T.DecodeThreads(2, m.configure)
    assert second.before("prefill") == 2 and m.configured[-1] == 2
