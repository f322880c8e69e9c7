"""The logit processor's in-place kernels MLC-LLM's engine calls by name
(``cpp/serve/logit_processor.cc``; signatures of ``python/mlc_llm/compiler_pass/attach_logit_processor.py``).

All take ``logits``, ``[batch_size, vocab_size]`` float32, and change it in place:

- ``apply_logit_bias_inplace(logits, pos2seq_id [n] int32, token_ids [n] int32, logit_bias [n] float32)``:
  ``logits[pos2seq_id[i], token_ids[i]] += logit_bias[i]`` (OpenAI's ``logit_bias``).
- ``apply_penalty_inplace(logits, seq_ids [s] int32, pos2seq_id [n] int32, token_ids [n] int32,
  token_cnt [n] int32, penalties [s, 3] float32)``: for each seen token, on row
  ``seq_ids[pos2seq_id[i]]``: subtract ``presence + token_cnt[i] * frequency`` (OpenAI's
  presence and frequency penalties), then divide a positive logit by the repetition
  penalty or multiply a negative one (Keskar et al. 2019, CTRL); ``penalties[j] =
  (presence, frequency, repetition)``.
- ``apply_bitmask_inplace(logits, seq_ids [s] int32, bitmask [batch_size, ceil(vocab/32)] int32)``:
  a token whose bit (``bitmask[row, v // 32] >> (v % 32) & 1``) is 0 gets the lowest float32
  (grammar-constrained decoding), for the rows ``seq_ids``.

Each kernel is written once over a flat element index ``bx * t + tx``: GPU builds bind ``bx``
and ``tx`` to blocks and threads (``t`` threads a block), CPU builds run them as serial loops
(``t`` = 1).
"""

from __future__ import annotations

from tvm.script import tirx as T


def _loops(threads: int):
    """(outer, inner, t): the two loop kinds of the flat element index and the inner extent.
    ``threads`` 0: serial loops, t = 1 (CPU); else ``blockIdx.x`` x ``threadIdx.x`` of ``threads``."""
    if not threads:
        return T.serial, T.serial, 1
    return (
        (lambda n: T.thread_binding(n, thread="blockIdx.x")),
        (lambda n: T.thread_binding(n, thread="threadIdx.x")),
        threads,
    )


def logit_bias(threads: int = 0):
    """``apply_logit_bias_inplace``; ``threads`` 0: the CPU form, else GPU blocks of that many threads."""
    outer, inner, t = _loops(threads)

    @T.prim_func(s_tir=False)
    def func(var_logits: T.handle, var_pos2seq_id: T.handle, var_token_ids: T.handle, var_logit_bias: T.handle):
        T.func_attr({"global_symbol": "apply_logit_bias_inplace", "tirx.is_scheduled": True, "tirx.noalias": True})
        batch_size, vocab_size, num_token = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch_size, vocab_size), "float32")
        pos2seq_id = T.match_buffer(var_pos2seq_id, (num_token,), "int32")
        token_ids = T.match_buffer(var_token_ids, (num_token,), "int32")
        bias = T.match_buffer(var_logit_bias, (num_token,), "float32")
        for bx in outer((num_token + t - 1) // t):
            for tx in inner(t):
                if bx * t + tx < num_token:
                    i = bx * t + tx
                    logits[pos2seq_id[i], token_ids[i]] = logits[pos2seq_id[i], token_ids[i]] + bias[i]

    return func


def penalty(threads: int = 0):
    """``apply_penalty_inplace``; ``threads`` as :func:`logit_bias`."""
    outer, inner, t = _loops(threads)

    @T.prim_func(s_tir=False)
    def func(
        var_logits: T.handle,
        var_seq_ids: T.handle,
        var_pos2seq_id: T.handle,
        var_token_ids: T.handle,
        var_token_cnt: T.handle,
        var_penalties: T.handle,
    ):
        T.func_attr({"global_symbol": "apply_penalty_inplace", "tirx.is_scheduled": True, "tirx.noalias": True})
        batch_size, vocab_size, num_token, num_seq = T.int32(), T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch_size, vocab_size), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (num_seq,), "int32")
        pos2seq_id = T.match_buffer(var_pos2seq_id, (num_token,), "int32")
        token_ids = T.match_buffer(var_token_ids, (num_token,), "int32")
        token_cnt = T.match_buffer(var_token_cnt, (num_token,), "int32")
        penalties = T.match_buffer(var_penalties, (num_seq, 3), "float32")
        for bx in outer((num_token + t - 1) // t):
            for tx in inner(t):
                if bx * t + tx < num_token:
                    i = bx * t + tx
                    s = pos2seq_id[i]
                    v = logits[seq_ids[s], token_ids[i]] - (
                        penalties[s, 0] + T.Cast("float32", token_cnt[i]) * penalties[s, 1]
                    )
                    logits[seq_ids[s], token_ids[i]] = T.if_then_else(
                        v < T.float32(0), v * penalties[s, 2], v / penalties[s, 2]
                    )

    return func


def bitmask(threads: int = 0):
    """``apply_bitmask_inplace``; ``threads`` as :func:`logit_bias`."""
    outer, inner, t = _loops(threads)

    @T.prim_func(s_tir=False)
    def func(var_logits: T.handle, var_seq_ids: T.handle, var_bitmask: T.handle):
        T.func_attr({"global_symbol": "apply_bitmask_inplace", "tirx.is_scheduled": True, "tirx.noalias": True})
        batch_size, vocab_size, num_seq = T.int32(), T.int32(), T.int32()
        logits = T.match_buffer(var_logits, (batch_size, vocab_size), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (num_seq,), "int32")
        mask = T.match_buffer(var_bitmask, (batch_size, (vocab_size + 31) // 32), "int32")
        for bx in outer((num_seq * vocab_size + t - 1) // t):
            for tx in inner(t):
                if bx * t + tx < num_seq * vocab_size:
                    s = (bx * t + tx) // vocab_size
                    v = (bx * t + tx) % vocab_size
                    if (mask[seq_ids[s], v // 32] >> (v % 32)) & 1 == 0:
                        logits[seq_ids[s], v] = T.min_value("float32")

    return func
