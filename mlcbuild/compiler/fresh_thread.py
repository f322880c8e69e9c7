"""Run a lowering step on a fresh thread, whose Python stack is a few frames deep.

TVMScript's parser (``T.prim_func``, ``T.macro``: every kernel the pipeline parses) calls
``inspect.stack()``, which for every frame of the caller's stack looks the frame's file up
among all loaded modules: its cost is frames x ``sys.modules``. Measured on the 2-core Zen 4
machine (2026-12-07): 11.8 ms per call 33 frames deep in pytest with ``torch`` loaded, 0.3 ms
on a fresh thread; a tiny model's host compile (~60 kernels parsed) took 6.1-8.2 s 63 frames
deep and 5.2-5.5 s on a fresh thread. A CLI compile is ~40 frames deep.
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
import threading
from typing import Callable, TypeVar

T = TypeVar("T")


def in_fresh_thread(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorate ``fn`` to run on a new thread and return its result or raise its exception.

    The caller blocks until it ends. The thread is a daemon: Ctrl-C (or SIGTERM, which the
    CLI turns into ``SystemExit``) interrupts the caller's wait and unwinds the caller (the
    build cache removes its work directory); the process then exits with 130 (or the
    ``SystemExit`` code) without waiting for the lowering, and without letting the
    interpreter tear down a thread that is inside TVM's C++ (``std::terminate``, SIGABRT).
    Thread-local TVM state (an enclosing ``PassContext`` or ``Target`` scope) does not reach
    the thread: ``fn`` must open the scopes it needs itself.
    """

    @functools.wraps(fn)
    def run(*args, **kwargs):
        out: dict[str, object] = {}

        def body() -> None:
            try:
                out["value"] = fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread
                out["error"] = e

        t = threading.Thread(target=body, name=f"mlcbuild-{fn.__name__}", daemon=True)
        t.start()
        try:
            t.join()
        except BaseException as e:
            _abandon(e)
            raise
        if "error" in out:
            raise out["error"]  # type: ignore[misc]
        return out["value"]  # type: ignore[return-value]

    return run


_exit_codes: list[int] = []  # one per lowering thread its caller stopped waiting for


def _abandon(why: BaseException) -> None:
    """Note that a caller stopped waiting for its lowering thread; at exit, leave at once (the
    caller's cleanup, e.g. the cache removing its work directory, ran as the exception unwound it)."""
    if not _exit_codes:
        atexit.register(_exit_without_abandoned)
    _exit_codes.append(why.code if isinstance(why, SystemExit) and isinstance(why.code, int) else 130)


def _exit_without_abandoned() -> None:
    # Even a thread that has ended since leaves TVM's C++ state (its thread pool) mid-use:
    # the interpreter's teardown of it calls std::terminate.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_codes[0])
