"""``mlcbuild bench``: prefill and decode speed of a build on a device, as llama-bench reports it.

The library and the converted weights are uploaded to the device's RPC server (or to
an in-process session with ``--local``); the weights are loaded there by TVM's own
tensor-cache loader (``vm.builtin.tensor_cache.load``), and the Relax VM runs there.
What crosses the link per step is a few token ids, never the weights or the logits
(except the last prompt token's, for time to first token).

Method (llama-bench's): a warm-up, then per repeat

- **pp** (prefill): a fresh KV cache, ``n_prompt`` random token ids fed in chunks of
  the build's prefill chunk; tokens/s = n_prompt / time. Time to first token adds
  fetching the last token's logits and taking their argmax on the host.
- **tg** (decode): a fresh KV cache, ``n_gen`` decode steps of one random token each
  (no sampling, as llama-bench); tokens/s = n_gen / time.

Times include the RPC round trips of each step (on loopback ~0.1 ms; measure them on
your link with ``--local`` vs a device). Records follow llama-bench's JSON schema
(``n_prompt``, ``n_gen``, ``avg_ts``, ``stddev_ts``, ``samples_ts``, ``avg_ns``, ...),
one for pp and one for tg, so results of both tools sit in one table.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlcbuild.artifacts.info import BuildInfo
from mlcbuild.device.rpc import device_calls
from mlcbuild.errors import MlcbuildError
from mlcbuild.runtime.artifact import checked_build, engine_sizes
from mlcbuild.runtime.engine import Engine, use_all_cores
from mlcbuild.runtime.threads import PROBE_STEPS, decode_threads


def remote_engine(session, artifact: Path, weights: Path, key: str = "local") -> tuple[Engine, BuildInfo]:
    """A build loaded on a device through ``session`` (``tvm.rpc.RPCSession`` or a ``LocalSession``):
    the library and the weights are uploaded, the weights loaded there by TVM's tensor-cache
    loader (``vm.builtin.tensor_cache.load``), and the :class:`Engine` drives the VM there.

    Args:
        artifact: the artifact directory (``build.json`` + ``lib.so``).
        weights: the converted weight directory (``tensor-cache.json`` + shards), checked
            against the build (md5 of every shard verified before upload).
        key: the device key, for error messages.
    Returns:
        ``(engine, build)``.
    Raises:
        MlcbuildError: as :func:`mlcbuild.runtime.artifact.checked_build` (wrong weights, a
            library stamped for another runtime than this process's, a ``.tar`` system library),
            or a corrupt shard.
        DeviceError: the device went away.
    """
    from tvm import relax, rpc

    from mlcbuild.artifacts.tensor_cache import INDEX_FILE, verify_tensor_cache

    max_threads = use_all_cores()  # for --local (a device's server sizes its own pool)
    build, lib = checked_build(artifact, weights)
    verify_tensor_cache(weights)
    if isinstance(session, rpc.LocalSession):  # --local: this process is the device, with its runtime
        from mlcbuild.runtime.devices import device_for

        device_for(build.device_kind)
    with device_calls("upload", key):
        device = session.cpu(0) if build.device_kind == "llvm" else session.device(build.device_kind, 0)
        session.upload(str(lib), "mlcbuild_lib.so")
        module = session.load_module("mlcbuild_lib.so")
        for f in [weights / INDEX_FILE, *sorted(weights.glob("params_shard_*.bin"))]:
            session.upload(str(f), f.name)
        where = session.get_function("tvm.rpc.server.workpath")(INDEX_FILE)
        remote_dir = str(where).rsplit("/", 1)[0]
        f = session.get_function
        f("vm.builtin.tensor_cache.load")(remote_dir, int(device.dlpack_device_type()) % 128, device.index)
        params = f("vm.builtin.param_array_from_cache_by_name_unpacked")(*(p.name for p in build.params))
        f("vm.builtin.tensor_cache.clear")()  # the VM holds the parameters now
        vm = relax.VirtualMachine(module, device)
        local_cpu = isinstance(session, rpc.LocalSession) and build.device_kind == "llvm"
        threads = decode_threads(max_threads) if local_cpu else None  # as Engine.local's
        engine = Engine(vm, params, device, get_function=f, threads=threads, **engine_sizes(build))
    return engine, build


class DeviceModel:
    """A build on a device (:func:`remote_engine`), timed as llama-bench times it.

    Raises:
        as :func:`remote_engine`.
    """

    def __init__(self, session, artifact: Path, weights: Path, key: str = "local"):
        self.key = key
        self.engine, self.build = remote_engine(session, Path(artifact), Path(weights), key)
        self.vocab_size = self.engine.vocab_size
        self.context_window_size = self.engine.context_window_size
        self.last_logits: np.ndarray | None = None  # [vocab] float32, of the last prefill

    def prefill(self, ids: np.ndarray) -> tuple[float, float]:
        """Prefill ``ids`` into a fresh KV cache.

        Returns:
            ``(seconds, seconds to first token)``: the first until the device finished,
            the second also fetching the last logits and taking their argmax here.
        """
        e = self.engine
        with device_calls("prefill", self.key):
            e.reset()
            e.sync()
            t0 = time.perf_counter()
            out = e.forward(ids)
            e.sync()
            t1 = time.perf_counter()
            logits = out.numpy()
            int(np.argmax(logits))
            t2 = time.perf_counter()
            self.last_logits = logits.reshape(-1)
            return t1 - t0, t2 - t0

    def decode(self, ids: np.ndarray) -> float:
        """Decode ``ids`` one token per step into a fresh KV cache. Returns seconds."""
        e = self.engine
        with device_calls("decode", self.key):
            e.reset()
            e.sync()
            t0 = time.perf_counter()
            for tok in ids:
                e.step(np.asarray([tok]), "decode")
            e.sync()
            return time.perf_counter() - t0

    def memory(self) -> dict[str, int | None]:
        """What the device reports of its memory, bytes (``None`` where it does not)."""
        with device_calls("reading device memory", self.key):
            return {
                "device_total_memory_bytes": self.engine.device.total_global_memory,
                "device_available_memory_bytes": self.engine.device.available_global_memory,
            }


@dataclasses.dataclass
class BenchSpec:
    """What to measure: prompt tokens (pp), generated tokens (tg), repeats, RNG seed."""

    n_prompt: int = 128
    n_gen: int = 64
    repeat: int = 5
    seed: int = 0


def run_bench(model: DeviceModel, spec: BenchSpec, device: str) -> list[dict[str, Any]]:
    """Measure pp and tg; two llama-bench-style records (``n_gen == 0`` for pp, ``n_prompt == 0`` for tg).

    Each record: ``avg_ts``/``stddev_ts`` (tokens/s), ``samples_ts``, ``avg_ns``/``stddev_ns``
    /``samples_ns`` (ns per test), plus ours: ``ttft_ms`` (pp only; mean), memory, build key.
    """
    if not spec.n_prompt and not spec.n_gen:
        raise MlcbuildError(
            "nothing to measure: 0 prompt and 0 generated tokens",
            fix="give --prompt-tokens or --gen-tokens a positive count",
        )
    if spec.n_prompt + 1 > model.context_window_size or spec.n_gen > model.context_window_size:
        raise MlcbuildError(
            f"{spec.n_prompt} prompt / {spec.n_gen} generated tokens exceed the build's context window "
            f"({model.context_window_size})",
            fix="lower --prompt-tokens/--gen-tokens or compile with a larger context_window_size",
        )
    rng = np.random.default_rng(spec.seed)
    prompt = rng.integers(0, model.vocab_size, size=spec.n_prompt)
    gen = rng.integers(0, model.vocab_size, size=spec.n_gen)
    # warm-up: first calls, page faults, thread pool (a decode-only run, ``-p 0``, warms up on its
    # tokens), and on a local CPU the decode thread choice's first probe (its later ones are timed)
    model.prefill(prompt[:8] if spec.n_prompt else gen[:1])
    model.decode(gen[: 2 + 2 * PROBE_STEPS])
    pp_s, ttft_s, tg_s = [], [], []
    for _ in range(spec.repeat):
        if spec.n_prompt:
            s, ttft = model.prefill(prompt)
            pp_s.append(s)
            ttft_s.append(ttft)
        if spec.n_gen:
            tg_s.append(model.decode(gen))
    common = _common_fields(model, device)
    out = []
    if pp_s:
        out.append({**common, **_stats(pp_s, spec.n_prompt), "n_prompt": spec.n_prompt, "n_gen": 0,
                    "ttft_ms": round(1e3 * statistics.fmean(ttft_s), 3)})  # fmt: skip
    if tg_s:
        out.append({**common, **_stats(tg_s, spec.n_gen), "n_prompt": 0, "n_gen": spec.n_gen})
    return out


def _stats(seconds: list[float], tokens: int) -> dict[str, Any]:
    ns = [int(s * 1e9) for s in seconds]
    ts = [tokens / s for s in seconds]
    return {
        "avg_ns": int(statistics.fmean(ns)),
        "stddev_ns": int(statistics.stdev(ns)) if len(ns) > 1 else 0,
        "avg_ts": round(statistics.fmean(ts), 4),
        "stddev_ts": round(statistics.stdev(ts), 4) if len(ts) > 1 else 0.0,
        "samples_ns": ns,
        "samples_ts": [round(x, 4) for x in ts],
    }


def _common_fields(model: DeviceModel, device: str) -> dict[str, Any]:
    from mlcbuild import __version__
    from mlcbuild.spec.target import cpu_model_name

    b = model.build
    recipe, desc, host = b.recipe, b.descriptor, b.tvm_host
    return {
        "build_commit": b.key[:12],  # the build's cache key: what exactly ran
        "build_number": 0,
        "tool": f"mlcbuild {__version__}",
        # this machine's CPU by name when it runs the library (--local), else the target's -mcpu
        "cpu_info": cpu_model_name() if device == "local" else host.get("mcpu") or platform.machine(),
        "gpu_info": desc["device"].get("device") or desc["device"]["kind"],
        "backends": desc["device"]["kind"],
        "device": device,
        "target": b.target_name,
        "model_filename": b.recipe_file or recipe.get("name"),
        "model_type": f"{recipe['model']['architecture']} {recipe['quantization']['scheme']}",
        "model_size": int(b.memory["params_bytes"]),
        "model_n_params": b.n_params,
        "scheme": recipe["quantization"]["scheme"],
        "n_batch": recipe["build"]["prefill_chunk_size"],
        "n_threads": host.get("num-cores"),
        "test_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **model.memory(),
        "model_memory_estimate_bytes": b.memory["total_bytes"],
    }


def test_name(rec: dict) -> str:
    """llama-bench's test name of a record: ``pp128``, ``tg64``, or ``pp128+tg64``."""
    if rec.get("n_prompt") and not rec.get("n_gen"):
        return f"pp{rec['n_prompt']}"
    if rec.get("n_gen") and not rec.get("n_prompt"):
        return f"tg{rec['n_gen']}"
    return f"pp{rec.get('n_prompt', 0)}+tg{rec.get('n_gen', 0)}"


def load_records(path: Path) -> list[dict]:
    """Records from a ``bench --json`` file or llama-bench's ``-o json`` / ``-o jsonl`` output.

    Raises:
        MlcbuildError: not JSON, or no records with ``n_prompt``/``n_gen``/``avg_ts``.
    """
    if not path.is_file():
        raise MlcbuildError(
            "no such file", path=path, fix="pass two files written by `mlcbuild bench --json` or llama-bench -o json"
        )
    text = path.read_text()
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as e:
            raise MlcbuildError(
                f"not JSON: {e}", path=path, fix="pass a file written by `bench --json` or llama-bench -o json"
            ) from e
    if isinstance(data, dict):
        data = data.get("records", [data])
    recs = [r for r in data if isinstance(r, dict) and {"n_prompt", "n_gen", "avg_ts"} <= set(r)]
    if not recs:
        raise MlcbuildError("no benchmark records (objects with n_prompt, n_gen, avg_ts)", path=path,
                            fix="pass a file written by `mlcbuild bench --json` or llama-bench -o json")  # fmt: skip
    return recs


def compare(a: list[dict], b: list[dict]) -> list[dict[str, Any]]:
    """Ratios ``b / a`` of tokens/s for each test both files have (``pp128``, ``tg64``, ...)."""
    by_a = {test_name(r): r for r in a}
    out = []
    for rec in b:
        name = test_name(rec)
        if name in by_a:
            ra = by_a[name]
            out.append({
                "test": name,
                "a": ra.get("model_type", ""),
                "b": rec.get("model_type", ""),
                "a_ts": ra["avg_ts"],
                "b_ts": rec["avg_ts"],
                "ratio": round(rec["avg_ts"] / ra["avg_ts"], 4) if ra["avg_ts"] else None,
            })  # fmt: skip
    return out
