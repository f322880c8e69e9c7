"""A host library driven the way MLC-LLM's engine drives it, step by step from its sources
(mlc-ai/mlc-llm 79d603f): ``cpp/serve/function_table.cc`` (loading, function lookup,
parameters by name), ``cpp/serve/model.cc`` (KV cache creation, ``AllocEmbeddingTensor``,
``BatchPrefill``, ``BatchDecode``), ``cpp/serve/logit_processor.cc`` (``softmax_with_temperature``),
``cpp/serve/sampler/cpu_sampler.cc`` (greedy: the most probable token), ``BatchVerify`` and
``CommitAcceptedTokenTreeNodesToKVCache`` (speculative decoding). Two sequences of different
lengths run in one batch; each one's greedy ids, and each draft-tree node's logits, must equal
``transformers``'.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from factories import make_checkpoint, tiny_config
from helpers import emulate_int8_activations
from test_convert_run import cli, hf_greedy, recipe_file
from test_mixed import fake_quantized
from test_parity import GEMMA2

from mlcbuild.artifacts.mlc_contract import library_functions
from mlcbuild.artifacts.stamp import library_bytes
from mlcbuild.quant import get_scheme
from mlcbuild.spec.target import load_target

PROMPTS = ([1, 5, 9, 22, 7, 60, 3, 44, 17, 2, 31], [4, 8, 15, 16, 23])  # 11 and 5 tokens
N_DECODE = 8
CASES = {"llama": tiny_config(), "qwen3": tiny_config(model_type="qwen3", head_dim=32), "gemma2": GEMMA2}
K_DL_CPU, POOLED = 1, 2  # DLDeviceType kDLCPU; tvm::runtime::memory::AllocatorType::kPooled


class MLCStyleEngine:
    """The calls MLC-LLM's engine makes, in its order, against a library on the CPU."""

    def __init__(self, lib_path, weights_dir):
        import tvm

        self.tvm = tvm
        g = tvm.get_global_func
        # function_table.cc: vm_load_executable, vm_initialization(device, pooled, host, pooled)
        self.vm = tvm.runtime.load_module(str(lib_path))["vm_load_executable"]()
        self.vm["vm_initialization"](K_DL_CPU, 0, POOLED, K_DL_CPU, 0, POOLED)
        # metadata/model.cc: ModelMetadata::FromModule
        self.metadata = json.loads(self.fn("_metadata")())
        # FunctionTable::LoadParams: the tensor cache, then parameters by _metadata's names
        g("vm.builtin.tensor_cache.load")(str(weights_dir), K_DL_CPU, 0)
        names = [p["name"] for p in self.metadata["params"]]
        self.params = g("vm.builtin.param_array_from_cache_by_name")(names)
        g("vm.builtin.tensor_cache.clear")()
        self.add_seq = g("vm.builtin.kv_state_add_sequence")
        self.begin, self.end = g("vm.builtin.kv_state_begin_forward"), g("vm.builtin.kv_state_end_forward")
        self.shape = tvm.runtime.ShapeTuple

    def fn(self, name):
        """``mod->GetFunction(name, /*query_imports=*/true)``; must be there."""
        f = self.vm.get_function(name, query_imports=True)
        assert f is not None, f"library lacks {name}"
        return f

    def create_kv_cache(self, n_seq: int):
        """model.cc CreateKVCache: five ShapeTuples; page 16; no sliding window (-1 in _metadata)."""
        md = self.metadata
        assert md["sliding_window_size"] == -1
        S = self.shape
        self.kv = self.fn("create_tir_paged_kv_cache")(
            S([n_seq]), S([md["context_window_size"]]), S([md["prefill_chunk_size"]]), S([16]), S([0])
        )
        for s in range(n_seq):
            self.add_seq(self.kv, s)

    def embed(self, ids: list[int]) -> np.ndarray:
        """TokenEmbed into the AllocEmbeddingTensor buffer (``mlc.copy_embedding_to_offset``: a copy)."""
        buf = self.fn("alloc_embedding_tensor")()
        assert buf.shape[0] >= self.metadata["prefill_chunk_size"] and len(buf.shape) == 2
        out = self.fn("embed")(self.tvm.runtime.tensor(np.asarray(ids, np.int32)), self.params).numpy()
        assert out.shape[1] == buf.shape[1]  # hidden_size_, as model.cc reads it from the buffer
        return out

    def sample(self, logits) -> list[int]:
        """softmax_with_temperature at temperature 0, then the CPU sampler's greedy choice."""
        n = logits.shape[0]
        probs = self.fn("softmax_with_temperature")(logits, self.tvm.runtime.tensor(np.zeros(n, np.float32)))
        return [int(np.argmax(row)) for row in probs.numpy().reshape(n, -1)]

    def batch_prefill(self, prompts) -> tuple[list[int], np.ndarray]:
        """All prompts in one ``batch_prefill`` (logit positions: each one's last token)."""
        lengths = [len(p) for p in prompts]
        emb = self.embed([t for p in prompts for t in p])
        view = self.tvm.runtime.tensor(emb.reshape(1, sum(lengths), -1))
        logit_pos = self.tvm.runtime.tensor(np.cumsum(lengths).astype(np.int32) - 1)
        self.begin(self.kv, self.shape(range(len(prompts))), self.shape(lengths))
        logits, self.kv = self.fn("batch_prefill")(view, logit_pos, self.kv, self.params)
        self.end(self.kv)
        logits = self.tvm.runtime.tensor(logits.numpy().reshape(len(prompts), 1, -1))  # [n, 1, vocab]
        return self.sample(logits), logits.numpy()

    def batch_decode(self, tokens: list[int]) -> list[int]:
        """One token for every sequence in one ``batch_decode``."""
        emb = self.embed(tokens)
        view = self.tvm.runtime.tensor(emb.reshape(len(tokens), 1, -1))
        self.begin(self.kv, self.shape(range(len(tokens))), self.shape([1] * len(tokens)))
        logits, self.kv = self.fn("batch_decode")(view, self.kv, self.params)
        self.end(self.kv)
        return self.sample(logits)

    def batch_verify(self, trees: list[list[int]], parents: list[list[int]]) -> np.ndarray:
        """model.cc BatchVerify: every sequence's draft tree in one ``batch_verify``, the trees'
        parent indices (each tree's own, root -1) concatenated into ``begin_forward``;
        logits ``[total, vocab]``."""
        lengths = [len(t) for t in trees]
        emb = self.embed([t for tree in trees for t in tree])
        view = self.tvm.runtime.tensor(emb.reshape(1, sum(lengths), -1))
        self.begin(
            self.kv, self.shape(range(len(trees))), self.shape(lengths), self.shape([p for ps in parents for p in ps])
        )
        logits, self.kv = self.fn("batch_verify")(view, self.kv, self.params)
        self.end(self.kv)
        return logits.numpy().reshape(sum(lengths), -1)

    def commit(self, leaves: list[int]) -> None:
        """CommitAcceptedTokenTreeNodesToKVCache: keep each tree's path to its accepted leaf."""
        self.tvm.get_global_func("vm.builtin.attention_kv_cache_commit_accepted_token_tree_nodes")(
            self.kv, self.shape(range(len(leaves))), self.shape(leaves)
        )


@pytest.mark.parametrize("scheme", ["q0f32", "q4f32_1"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_mlc_style_driver_two_sequences_match_transformers(case, scheme, tmp_path, cache_dir):
    cfg = CASES[case]
    hf = make_checkpoint(tmp_path / "ckpt", cfg, seed=1)
    recipe = recipe_file(tmp_path, cfg, scheme, name=f"mlc-{case}")
    text = recipe.read_text().replace("max_batch_size = 1", "max_batch_size = 2")
    recipe.write_text(text)
    conv = cli("convert", recipe, "--weights", tmp_path / "ckpt", "--json", "--cache-dir", cache_dir)
    assert conv.exit_code == 0, conv.output
    comp = cli("compile", recipe, "--target", "host", "--json", "--cache-dir", cache_dir)
    assert comp.exit_code == 0, comp.output
    artifact = json.loads(comp.stdout.strip().splitlines()[-1])["artifact"]
    weights = json.loads(conv.stdout.strip().splitlines()[-1])["weights"]
    from mlcbuild.artifacts.info import read_build

    build = read_build(artifact)
    eng = MLCStyleEngine(f"{artifact}/{build.library.file}", weights)
    md = eng.metadata
    assert md["model_type"] == case and md["quantization"] == scheme and md["max_batch_size"] == 2
    assert [(p["name"], tuple(p["shape"]), p["dtype"]) for p in md["params"]] == [
        (p.name, tuple(p.shape), p.dtype) for p in build.params
    ]
    assert md["kv_cache"]["num_hidden_layers"] == cfg["num_hidden_layers"]

    if scheme != "q0f32":
        hf = fake_quantized(hf, scheme, {})
    # On x86 hosts with VNNI the batched prefill's linears quantize their input rows to int8
    # (kernels/int8_matmul.py) while the batched decode stays float: greedy ids of a float
    # reference then part at the first near tie. There only the prefill logits are checked,
    # against a reference quantizing the prompt rows as the kernel does, within the flip bound
    # of test_parity.check_against; the int8 numerics themselves are checked in test_cpu_linear.
    int8_prefill = _int8_prefill_host(scheme)
    eng.create_kv_cache(len(PROMPTS))
    first, logits = eng.batch_prefill(PROMPTS)
    for i, p in enumerate(PROMPTS):
        hooks = (
            emulate_int8_activations(hf, get_scheme(scheme).dequantize_info(), len(p), prompt_only=True)
            if int8_prefill
            else []
        )
        with torch.no_grad():
            ref = hf(torch.tensor([p])).logits[0, -1].numpy()
        for h in hooks:
            h.remove()
        bound = 5e-2 if int8_prefill else 1e-4
        assert np.abs(logits[i, 0] - ref).max() <= bound * np.abs(ref).max()
    got = [[t] for t in first]
    for _ in range(N_DECODE):
        for seq, t in zip(got, eng.batch_decode([s[-1] for s in got]), strict=True):
            seq.append(t)
    assert [len(s) for s in got] == [N_DECODE + 1] * len(PROMPTS)
    if int8_prefill:
        return
    want = [hf_greedy(hf, p, n=N_DECODE + 1) for p in PROMPTS]
    assert got == want
    if case == "gemma2":  # soft-capped attention: TVM's tree-mask kernels would drop the cap
        assert "batch_verify" not in library_functions(library_bytes(f"{artifact}/{build.library.file}"))
        return
    _verify_token_trees(eng, hf, [p + s[:-1] for p, s in zip(PROMPTS, got, strict=True)], [s[-1] for s in got])


def _int8_prefill_host(scheme: str) -> bool:
    """Whether this host's prefill runs ``scheme``'s linears through the int8 matmul."""
    from mlcbuild.compiler.target import int8_dot_isa, tvm_target
    from mlcbuild.kernels import int8_matmul

    return (
        int8_dot_isa(tvm_target(load_target("host"))) in int8_matmul.ISAS
        and get_scheme(scheme).dequantize_info() is not None
    )


def _verify_token_trees(eng, hf, contexts, roots):
    """Speculative decoding as MLC runs it: sequence 0 verifies a chain of 3 draft tokens,
    sequence 1 a root with two children; every node's logits equal ``transformers``' on the
    context plus the node's path; after committing each tree's last node, a decode step sees
    exactly the accepted path."""
    trees = [[roots[0], 30, 41], [roots[1], 52, 63]]
    parents = [[-1, 0, 1], [-1, 0, 0]]
    paths = [[[0], [0, 1], [0, 1, 2]], [[0], [0, 1], [0, 2]]]

    def ref(ids):
        with torch.no_grad():
            return hf(torch.tensor([ids])).logits[0, -1].numpy()

    logits = eng.batch_verify(trees, parents)
    k = 0
    for ctx, tree, tree_paths in zip(contexts, trees, paths, strict=True):
        for path in tree_paths:
            want = ref(ctx + [tree[i] for i in path])
            assert np.abs(logits[k] - want).max() <= 1e-4 * np.abs(want).max(), (k, path)
            k += 1
    eng.commit([2, 2])
    accepted = [ctx + [tree[i] for i in ps[2]] for ctx, tree, ps in zip(contexts, trees, paths, strict=True)]
    nxt = eng.batch_decode([7, 9])
    assert nxt == [int(np.argmax(ref(a + [t]))) for a, t in zip(accepted, [7, 9], strict=True)]


def test_verify_mlc_names_what_an_old_artifact_lacks(tmp_path, cache_dir):
    """An artifact as mlcbuild wrote it before MLC's function table (its names and _metadata
    struck from the library bytes, chat config with conv_template "LM" and tokenizer_info {}):
    ``verify --mlc`` names each missing piece and fails; the current artifact passes."""
    import shutil

    recipe = recipe_file(tmp_path, tiny_config(), "q0f32", name="mlc-llama")
    comp = cli("compile", recipe, "--target", "host", "--json", "--cache-dir", cache_dir)
    artifact = json.loads(comp.stdout.strip().splitlines()[-1])["artifact"]
    ok = cli("verify", "--mlc", artifact)
    assert ok.exit_code == 0, ok.output
    old = tmp_path / "old"
    shutil.copytree(artifact, old)
    lib = old / "lib.so"
    data = lib.read_bytes()
    for name in (b"create_tir_paged_kv_cache", b"alloc_embedding_tensor", b"softmax_with_temperature",
                 b"apply_penalty_inplace", b'{"attention_sink_size"'):  # fmt: skip
        data = data.replace(name, b"x" * len(name))
    lib.write_bytes(data)
    chat = json.loads((old / "mlc-chat-config.json").read_text())
    chat["conv_template"], chat["tokenizer_info"] = "LM", {}
    del chat["model_config"]["prefill_chunk_size"]
    (old / "mlc-chat-config.json").write_text(json.dumps(chat))
    r = cli("verify", "--mlc", old)
    assert r.exit_code == 1
    for piece in ("create_tir_paged_kv_cache", "alloc_embedding_tensor", "softmax_with_temperature",
                  "apply_penalty_inplace", "_metadata", "conv_template", "tokenizer_info",
                  "model_config.prefill_chunk_size"):  # fmt: skip
        assert piece in r.output, piece
    assert "apply_logit_bias_inplace" not in r.output  # only what is missing is named
