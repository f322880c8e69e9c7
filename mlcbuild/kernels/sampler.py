"""GPU kernels of the sampler functions MLC-LLM's engine calls on Metal, CUDA and Vulkan
(``cpp/serve/sampler/gpu_sampler.cc``; signatures of ``python/mlc_llm/compiler_pass/attach_sampler.py``),
for the parts TVM's sampling operators do not cover. One thread per element, ``threads`` a block.
"""

from __future__ import annotations

from tvm.script import tirx as T


def fill_rows(threads: int):
    """``fill(value int64, result [batch_size, 1] int32)``: every row ``value`` (top-k = the
    vocabulary; the argument order of ``call_tir``: inputs, then the output)."""

    @T.prim_func(s_tir=False)
    def fill(value: T.int64, var_result: T.handle):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch_size = T.int32()
        result = T.match_buffer(var_result, (batch_size, 1), "int32")
        for bx in T.thread_binding((batch_size + threads - 1) // threads, thread="blockIdx.x"):
            for tx in T.thread_binding(threads, thread="threadIdx.x"):
                if bx * threads + tx < batch_size:
                    result[bx * threads + tx, 0] = T.Cast("int32", value)

    return fill


def take_probs(threads: int):
    """``sampler_take_probs_tir(unsorted_probs [b, v] f32, sorted_indices [b, v] i32,
    sample_indices [s] i32, sampling_results [s] i32, top_prob_offsets [p] i32,
    sampled_values [s] f32, top_prob_probs [p] f32, top_prob_indices [p] i32)``: the probability
    of each sampled token (row ``sample_indices[j]``), and for each flat offset ``o`` into the
    sorted order the token ``sorted_indices[o // v, o % v]`` and its probability."""

    @T.prim_func(s_tir=False)
    def take(
        var_unsorted_probs: T.handle,
        var_sorted_indices: T.handle,
        var_sample_indices: T.handle,
        var_sampling_results: T.handle,
        var_top_prob_offsets: T.handle,
        var_sampled_values: T.handle,
        var_top_prob_probs: T.handle,
        var_top_prob_indices: T.handle,
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        batch_size, vocab_size, num_samples, num_positions = T.int32(), T.int32(), T.int32(), T.int32()
        probs = T.match_buffer(var_unsorted_probs, (batch_size, vocab_size), "float32")
        sorted_indices = T.match_buffer(var_sorted_indices, (batch_size, vocab_size), "int32")
        sample_indices = T.match_buffer(var_sample_indices, (num_samples,), "int32")
        results = T.match_buffer(var_sampling_results, (num_samples,), "int32")
        offsets = T.match_buffer(var_top_prob_offsets, (num_positions,), "int32")
        sampled = T.match_buffer(var_sampled_values, (num_samples,), "float32")
        top_probs = T.match_buffer(var_top_prob_probs, (num_positions,), "float32")
        top_indices = T.match_buffer(var_top_prob_indices, (num_positions,), "int32")
        for bx in T.thread_binding((num_positions + num_samples + threads - 1) // threads, thread="blockIdx.x"):
            for tx in T.thread_binding(threads, thread="threadIdx.x"):
                if bx * threads + tx < num_positions:
                    i = bx * threads + tx
                    token = sorted_indices[offsets[i] // vocab_size, offsets[i] % vocab_size]
                    top_indices[i] = token
                    top_probs[i] = probs[offsets[i] // vocab_size, token]
                elif bx * threads + tx < num_positions + num_samples:
                    j = bx * threads + tx - num_positions
                    sampled[j] = probs[sample_indices[j], results[j]]

    return take
