"""Devices over TVM RPC: the tracker, sessions on a device key, bounded waits.

The components are TVM's own: ``python -m tvm.exec.rpc_tracker`` and
``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY`` (on phones, TVM's
Android RPC app or the ``tvm_rpc`` binary). This module only talks to them, and turns
what goes wrong (no tracker, no server for the key, a busy key, a device that
disappears) into a :class:`DeviceError` that says what to do.

:class:`LocalCluster` starts a real tracker and server on 127.0.0.1 with the host CPU
as the device (tests, benchmarks, and tuning for ``host``).

TVM RPC has no authentication: whoever reaches a server's or tracker's port can upload and
run code there. Our helpers bind 127.0.0.1; use RPC on a trusted network or through an SSH
tunnel (``ssh -L 9190:127.0.0.1:9190 lab-host``). Every wait is bounded: connecting to the
tracker, its handshake and each of its answers take at most ``wait_s``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from typing import Iterator

from mlcbuild.errors import MlcbuildError

DEFAULT_WAIT_S = 60.0
NO_AUTH = (
    "TVM RPC has no authentication: anyone who reaches the port can upload and run code; "
    "use it on a trusted network or through an SSH tunnel"
)


class DeviceError(MlcbuildError):
    """The tracker or a device cannot be reached, is busy, or went away."""


def parse_tracker(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)``.

    Raises:
        DeviceError: not of that form.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise DeviceError(f"tracker address {text!r} is not HOST:PORT", fix="pass e.g. --tracker 127.0.0.1:9190")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]") and not host.startswith("127."):
        logging.getLogger("mlcbuild.device.rpc").warning("tracker %s is not on loopback: %s", text, NO_AUTH)
    return host, int(port)


@dataclasses.dataclass(frozen=True)
class KeyStatus:
    """One device key at the tracker: servers registered, free and pending requests."""

    key: str
    total: int
    free: int
    pending: int

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _tracker(host: str, port: int, wait_s: float):
    from tvm import rpc

    # TVM's client retries a refused connection for 60 s and waits for the handshake for ever;
    # bound both here (the socket it creates takes the default timeout), and every answer after.
    deadline = time.monotonic() + wait_s
    while True:
        previous = socket.getdefaulttimeout()
        try:
            with socket.create_connection((host, port), timeout=min(5.0, wait_s)):
                pass
            socket.setdefaulttimeout(max(0.5, min(wait_s, deadline - time.monotonic())))
            sess = rpc.connect_tracker(host, port)
            sess._sock.settimeout(wait_s)  # noqa: SLF001 - TrackerSession has no public timeout
            return sess
        except TimeoutError as e:
            raise DeviceError(
                f"{host}:{port} accepted the connection but did not answer as an RPC tracker within {wait_s:g} s",
                fix="check that --tracker names a TVM RPC tracker (`python -m tvm.exec.rpc_tracker`), or raise --wait",
            ) from e
        except (OSError, RuntimeError) as e:
            if isinstance(e, RuntimeError) and "not RPC Tracker" in str(e):
                raise DeviceError(
                    f"{host}:{port} is not a TVM RPC tracker", fix="pass the tracker's HOST:PORT as --tracker"
                ) from e
            if time.monotonic() >= deadline:
                raise DeviceError(
                    f"no RPC tracker at {host}:{port} ({getattr(e, 'strerror', None) or e})",
                    fix="start one with `python -m tvm.exec.rpc_tracker --host 127.0.0.1 --port "
                    f"{port}` (loopback; {NO_AUTH}) or pass the right --tracker",
                ) from e
            time.sleep(0.5)
        finally:
            socket.setdefaulttimeout(previous)


def list_devices(tracker: str, wait_s: float = 5.0) -> list[KeyStatus]:
    """The device keys a tracker knows, with counts.

    Args:
        tracker: ``"HOST:PORT"``.
        wait_s: how long to keep trying to reach the tracker, s.
    Returns:
        One :class:`KeyStatus` per key (registered servers or pending requests), by key.
    Raises:
        DeviceError: no tracker answers at that address.
    """
    host, port = parse_tracker(tracker)
    sess = _tracker(host, port, wait_s)
    try:
        data = sess.summary()
    except TimeoutError as e:
        raise DeviceError(
            f"the RPC tracker at {tracker} did not answer within {wait_s:g} s", fix="check the tracker, or raise --wait"
        ) from e
    finally:
        sess.close()
    totals: dict[str, int] = {}
    for item in data.get("server_info", []):
        key = item["key"].split(":", 1)[-1]  # "server:KEY"
        totals[key] = totals.get(key, 0) + 1
    out = []
    for key in sorted(set(totals) | set(data.get("queue_info", {}))):
        q = data.get("queue_info", {}).get(key, {"free": 0, "pending": 0})
        out.append(KeyStatus(key, totals.get(key, 0), int(q["free"]), int(q["pending"])))
    return [k for k in out if k.total or k.pending]


def request_session(tracker: str, key: str, wait_s: float = DEFAULT_WAIT_S, session_timeout_s: float = 0):
    """A session on a free device of ``key``, waiting at most ``wait_s`` for one.

    Args:
        tracker: ``"HOST:PORT"``.
        key: the device key the servers registered with (``--key``).
        wait_s: how long to wait for the tracker and for a free device, s.
        session_timeout_s: the server ends the session after this long (0: never), s.
    Returns:
        ``tvm.rpc.RPCSession``.
    Raises:
        DeviceError: no tracker, no server registered with ``key`` (the message lists
            the keys there are), or every device of ``key`` stayed busy for ``wait_s``.
    """
    host, port = parse_tracker(tracker)
    keys = {k.key: k for k in list_devices(tracker, wait_s=min(wait_s, 10.0))}
    if key not in keys or keys[key].total == 0:
        have = ", ".join(f"{k} ({s.total} servers)" for k, s in keys.items() if s.total) or "none"
        raise DeviceError(
            f"no device with key {key!r} is registered at the tracker {tracker}; keys there: {have}",
            fix=f"start a server with `python -m tvm.exec.rpc_server --tracker {tracker} --key {key} --host 127.0.0.1` "
            f"(or the Android RPC app with that key; {NO_AUTH}), or pass one of the keys listed",
        )
    sess = _tracker(host, port, wait_s)
    # The tracker queues the request until a device of `key` is free; bound that wait.
    sess._sock.settimeout(wait_s)  # noqa: SLF001 - TrackerSession has no public timeout
    try:
        return sess.request(key, priority=1, session_timeout=session_timeout_s, max_retry=1)
    except (RuntimeError, TimeoutError) as e:
        busy = "timed out" in str(e) or isinstance(e, TimeoutError)
        raise DeviceError(
            f"no free device with key {key!r} at {tracker} within {wait_s:.0f} s"
            if busy
            else f"could not open a session on {key!r} at {tracker}: {e}",
            fix="wait for the running jobs on that key to finish (see `mlcbuild devices`), add a device, "
            "or raise --wait",
        ) from e
    finally:
        sess.close()


@contextlib.contextmanager
def device_session(tracker: str, key: str, wait_s: float = DEFAULT_WAIT_S, session_timeout_s: float = 0):
    """:func:`request_session` for the length of a ``with`` block: the session ends when the
    block does, error or not, so the device is free for the next job at once.

    Without this a session lives until its last reference goes, and an error's traceback
    (kept by a caller that reports it, or by a test runner) holds the frames that refer to
    it: the tracker then lists the device as busy until garbage collection runs.

    Raises:
        DeviceError: as :func:`request_session`.
    """
    sess = request_session(tracker, key, wait_s=wait_s, session_timeout_s=session_timeout_s)
    try:
        yield sess
    except BaseException as e:
        traceback.clear_frames(e.__traceback__)  # the finished frames' locals: remote functions, arrays
        raise
    finally:
        sess._sess = None  # noqa: SLF001 - RPCSession has no close(); its module is the connection
        sess._remote_funcs.clear()  # noqa: SLF001


def local_session():
    """An in-process session on this machine (``--local``): the same API as a device's."""
    from tvm import rpc

    return rpc.LocalSession()


@contextlib.contextmanager
def device_calls(what: str, key: str) -> Iterator[None]:
    """Turn a lost connection inside the block into a :class:`DeviceError` naming ``what``."""
    try:
        yield
    except DeviceError:
        raise
    except Exception as e:  # TVM raises TVMError/RuntimeError subclasses for socket errors
        text = str(e)
        lost = any(
            s in text for s in ("Socket", "socket", "connection", "Connection", "RPCSession", "timeout", "Broken")
        )
        if not lost:
            raise
        raise DeviceError(
            f"the device {key!r} went away during {what}: {text.splitlines()[0] if text else type(e).__name__}",
            fix="check that its RPC server is still running (`mlcbuild devices`) and run the command again",
        ) from e


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """A real TVM tracker and one server on 127.0.0.1, as subprocesses: the host CPU, and with
    ``device_kind="opencl"`` the OpenCL device of TVM's OpenCL runtime
    (:func:`mlcbuild.runtime.devices.runtime_libraries`: the server loads it by
    ``--load-library``), as a phone's server has its GPU.

    Each runs in its own process group, so that stopping it also stops the
    ``popen_worker`` children TVM leaves behind.

    Attributes:
        tracker: ``"127.0.0.1:PORT"``.
        key: the server's device key.

    Raises:
        MlcbuildError: ``device_kind``'s runtime is not built (``make opencl-runtime``).
    """

    def __init__(self, key: str = "host", wait_s: float = 30.0, device_kind: str = "llvm"):
        from mlcbuild.runtime.devices import runtime_libraries

        self.libraries = [str(p) for p in runtime_libraries(device_kind)]  # sets the env they read
        self.key = key
        self.wait_s = wait_s
        self.port = free_port()
        self.tracker = f"127.0.0.1:{self.port}"
        self._procs: list[subprocess.Popen] = []

    def _spawn(self, *args: str) -> subprocess.Popen:
        # The server is the device: give its TVM thread pool every core (TVM's x86 default is half).
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))
        p = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        self._procs.append(p)
        return p

    def start(self) -> "LocalCluster":
        self._spawn("tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(self.port),
                    "--port-end", str(self.port + 1), "--silent")  # fmt: skip
        _tracker("127.0.0.1", self.port, self.wait_s).close()
        self.start_server()
        return self

    def start_server(self) -> subprocess.Popen:
        """Start one more server for ``key``; returns once the tracker lists it."""
        before = sum(k.total for k in list_devices(self.tracker) if k.key == self.key)
        sp = free_port()
        p = self._spawn("tvm.exec.rpc_server", "--tracker", self.tracker, "--key", self.key,
                        "--host", "127.0.0.1", "--port", str(sp), "--port-end", str(sp + 1), "--silent",
                        *(["--load-library", ":".join(self.libraries)] if self.libraries else []))  # fmt: skip
        deadline = time.monotonic() + self.wait_s
        while sum(k.total for k in list_devices(self.tracker) if k.key == self.key) <= before:
            if time.monotonic() > deadline or p.poll() is not None:
                raise DeviceError(f"the RPC server for {self.key!r} did not register with {self.tracker}")
            time.sleep(0.2)
        return p

    def kill_servers(self) -> None:
        """SIGKILL every server (a device that disappears), leaving the tracker up."""
        for p in self._procs[1:]:
            _kill_group(p, signal.SIGKILL)

    def stop(self) -> None:
        for p in reversed(self._procs):
            _kill_group(p, signal.SIGTERM)
        self._procs.clear()

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _kill_group(p: subprocess.Popen, sig: int) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, sig)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
    else:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)  # children left behind by a dead leader
