"""AttachEmbeddingAllocator: ``alloc_embedding_tensor() -> [prefill_chunk_size, hidden_size]``
(the embedding's dtype), the buffer MLC-LLM's engine gathers a batch's embeddings into and
reads the hidden size from (``cpp/serve/model.cc`` ``AllocEmbeddingTensor``; MLC-LLM's
``python/mlc_llm/compiler_pass/attach_embedding_allocator.py``)."""

from __future__ import annotations

import tvm
from tvm import relax

NAME = "alloc_embedding_tensor"


def attach_embedding_allocator(prefill_chunk_size: int):
    """The pass; a module without ``embed`` is left as it is."""

    @tvm.transform.module_pass(opt_level=0, name="AttachEmbeddingAllocator")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        embed = next((f for gv, f in mod.functions_items() if gv.name_hint == "embed"), None)
        if embed is None:
            return mod
        ret = embed.ret_ty  # [seq_len, hidden_size]
        bb = relax.BlockBuilder(mod)
        with bb.function(NAME, []):
            shape = relax.ShapeExpr([prefill_chunk_size, ret.shape.values[-1]])
            out = bb.emit(relax.op.builtin.alloc_tensor(shape, str(ret.dtype), runtime_device_index=0))
            bb.emit_func_output(out)
        return bb.finalize()

    return _pass
