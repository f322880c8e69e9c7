"""The decoder-only LM every architecture builds from the blocks of :mod:`.common`.

Mirrors Hugging Face ``transformers/models/llama/modeling_llama.py``
(``LlamaForCausalLM``): pre-norm decoder blocks of RMSNorm -> GQA attention with
RoPE -> residual -> RMSNorm -> SwiGLU MLP -> residual, a final RMSNorm, and an LM
head that may be tied to the token embedding. The :class:`~.config.DecoderConfig`
flags add what other architectures change: q/k/v bias (Qwen2,
``modeling_qwen2.py``), per-head q/k RMSNorm (Qwen3, ``modeling_qwen3.py``), Gemma 3's
scaled embeddings, four norms per layer, GeGLU, score scale and per-layer RoPE bases
(``modeling_gemma3.py``; its ``1 + weight`` norms are stored as ``1 + weight`` by the loader).
"""

from __future__ import annotations

import numpy as np
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache

from mlcbuild.models.common import Embedding, GatedMLP, PagedAttention, create_generic_paged_kv_cache, last_token
from mlcbuild.models.config import DecoderConfig


class DecoderLayer(nn.Module):
    """``x + attn(norm(x))`` then ``+ mlp(norm(.))``: ``[b, s, d]`` -> ``[b, s, d]`` (HF ``LlamaDecoderLayer``).

    With ``sandwich_norms`` (HF ``Gemma3DecoderLayer``): ``x + post_attention_layernorm(attn(
    input_layernorm(x)))`` then ``+ post_feedforward_layernorm(mlp(pre_feedforward_layernorm(.)))``.
    """

    def __init__(self, cfg: DecoderConfig, dtype: str, layer_id: int = 0, windowed: bool = False):
        def norm():
            return nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False, dtype=dtype)

        self.input_layernorm = norm()
        self.self_attn = PagedAttention(
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
            dtype,
            bias=cfg.attention_bias,
            qk_norm_eps=cfg.rms_norm_eps if cfg.qk_norm else None,
            sm_scale=cfg.attn_scale,
            rope=cfg.layer_rope[layer_id] if cfg.layer_rope else None,
            windowed=windowed,
        )
        self.post_attention_layernorm = norm()
        self.sandwich = cfg.sandwich_norms
        if self.sandwich:
            self.pre_feedforward_layernorm = norm()
            self.post_feedforward_layernorm = norm()
        self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size, dtype, act=cfg.hidden_act)

    def forward(self, x: Tensor, paged_kv_cache: PagedKVCache, layer_id: int) -> Tensor:
        if self.sandwich:
            x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), paged_kv_cache, layer_id))
            return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        x = x + self.self_attn(self.input_layernorm(x), paged_kv_cache, layer_id)
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderModel(nn.Module):
    """Embedding table, decoder layers and the final RMSNorm (HF ``LlamaModel``).

    ``windowed``: the layers with sliding-window attention (``cfg.sliding_layers``, or all) mark
    their attention calls as windowed (:class:`~.common.PagedAttention`).
    """

    def __init__(self, cfg: DecoderConfig, dtype: str, windowed: bool = False):
        sliding = cfg.sliding_layers or (True,) * cfg.num_hidden_layers
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size, dtype=dtype)
        self.layers = nn.ModuleList(
            [DecoderLayer(cfg, dtype, i, windowed and sliding[i]) for i in range(cfg.num_hidden_layers)]
        )
        self.norm = nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False, dtype=dtype)

    def forward(self, x: Tensor, paged_kv_cache: PagedKVCache) -> Tensor:
        for layer_id, layer in enumerate(self.layers):
            x = layer(x, paged_kv_cache, layer_id)
        return self.norm(x)


class DecoderForCausalLM(nn.Module):
    """The exported model. Entry functions follow MLC-LLM's runtime names.

    Args:
        cfg: the parsed config.
        dtype: activation and unquantized-weight dtype, ``"float32"`` or ``"float16"``.
        attention_window: ``cfg.sliding_window`` where a sequence can outgrow it (our
            attention kernels then apply it, :mod:`mlcbuild.kernels.attention`), else 0.
    """

    def __init__(self, cfg: DecoderConfig, dtype: str, attention_window: int = 0):
        self.cfg = cfg
        self.dtype = dtype
        self.attention_window = attention_window
        # TVM's tree-mask attention kernels have neither a soft-cap nor a window: batch_verify
        # is exported only where they compute the model's attention
        self.tree_attention = cfg.attn_logit_softcapping is None and attention_window == 0
        self.model = DecoderModel(cfg, dtype, windowed=attention_window > 0)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False, dtype=dtype)

    def _logits(self, x: Tensor) -> Tensor:
        if self.cfg.tie_word_embeddings:
            logits = self.model.embed_tokens.lm_head_forward(x)
        else:
            logits = self.lm_head(x)
        logits = logits.astype("float32") if logits.dtype != "float32" else logits
        cap = self.cfg.final_logit_softcapping
        if cap is not None:  # HF Gemma2ForCausalLM: logits / cap -> tanh -> * cap
            logits = op.tanh(logits / cap) * cap
        return logits

    def embed(self, input_ids: Tensor) -> Tensor:
        """Token ids ``[s]`` int32 -> embeddings ``[s, d]`` of the model dtype (Gemma: times
        ``sqrt(hidden_size)`` rounded to that dtype, as HF ``Gemma3TextScaledWordEmbedding``)."""
        x = self.model.embed_tokens(input_ids)
        if self.cfg.embed_scale:
            x = x * float(np.array(self.cfg.hidden_size**0.5, dtype=x.dtype))
        return x

    def prefill(self, input_embed: Tensor, paged_kv_cache: PagedKVCache):
        """One sequence's prompt chunk ``[1, s, d]`` -> last-token logits ``[1, 1, vocab]`` float32."""
        hidden = self.model(input_embed, paged_kv_cache)
        return self._logits(last_token(hidden)), paged_kv_cache

    def decode(self, input_embed: Tensor, paged_kv_cache: PagedKVCache):
        """One token ``[1, 1, d]`` -> logits ``[1, 1, vocab]`` float32."""
        return self._logits(self.model(input_embed, paged_kv_cache)), paged_kv_cache

    def batch_prefill(self, input_embeds: Tensor, logit_positions: Tensor, paged_kv_cache: PagedKVCache):
        """Concatenated prompts ``[1, s, d]`` and per-sequence last positions ``[n]`` int32
        -> logits ``[1, n, vocab]`` float32."""
        hidden = self.model(input_embeds, paged_kv_cache)
        hidden = op.take(hidden, logit_positions, axis=1)
        return self._logits(hidden), paged_kv_cache

    def batch_decode(self, input_embeds: Tensor, paged_kv_cache: PagedKVCache):
        """One token per sequence ``[n, 1, d]`` -> logits ``[n, 1, vocab]`` float32."""
        return self._logits(self.model(input_embeds, paged_kv_cache)), paged_kv_cache

    def batch_verify(self, input_embeds: Tensor, paged_kv_cache: PagedKVCache):
        """Draft tokens of one or more token trees, concatenated ``[1, s, d]`` (each tree's
        parents given to the KV cache's ``begin_forward``) -> logits of every token
        ``[1, s, vocab]`` float32. Speculative decoding's verify step, as MLC-LLM's
        ``batch_verify`` (``python/mlc_llm/model/llama/llama_model.py``); the KV cache's
        tree-mask attention kernels (TVM's ``tree_attn*``) give each token its ancestors only."""
        return self._logits(self.model(input_embeds, paged_kv_cache)), paged_kv_cache

    def create_paged_kv_cache(
        self, max_batch_size, max_total_seq_len, prefill_chunk_size, page_size, support_sliding_window
    ) -> PagedKVCache:
        """A fresh paged KV cache; sizes in sequences, tokens, tokens, tokens per page, 0/1
        (target-independent: the compiler builds it for the target)."""
        return create_generic_paged_kv_cache(
            self.cfg.kv_cache_spec(),
            self.dtype,
            max_batch_size,
            max_total_seq_len,
            prefill_chunk_size,
            page_size,
            support_sliding_window,
        )

    def get_default_spec(self) -> nn.spec.ModuleSpec:
        d = self.cfg.hidden_size
        kv = nn.spec.Object(object_type=PagedKVCache)
        packed = {"param_mode": "packed", "effect_mode": "none"}
        spec = {
            "embed": {"input_ids": nn.spec.Tensor(["seq_len"], "int32"), "$": packed},
            "prefill": {
                "input_embed": nn.spec.Tensor([1, "seq_len", d], self.dtype),
                "paged_kv_cache": kv,
                "$": packed,
            },
            "decode": {"input_embed": nn.spec.Tensor([1, 1, d], self.dtype), "paged_kv_cache": kv, "$": packed},
            "batch_prefill": {
                "input_embeds": nn.spec.Tensor([1, "seq_len", d], self.dtype),
                "logit_positions": nn.spec.Tensor(["batch_size"], "int32"),
                "paged_kv_cache": kv,
                "$": packed,
            },
            "batch_decode": {
                "input_embeds": nn.spec.Tensor(["batch_size", 1, d], self.dtype),
                "paged_kv_cache": kv,
                "$": packed,
            },
            "create_paged_kv_cache": {
                "max_batch_size": int,
                "max_total_seq_len": int,
                "prefill_chunk_size": int,
                "page_size": int,
                "support_sliding_window": int,
                "$": {"param_mode": "none", "effect_mode": "none"},
            },
        }
        if self.tree_attention:
            spec["batch_verify"] = {
                "input_embeds": nn.spec.Tensor([1, "seq_len", d], self.dtype),
                "paged_kv_cache": kv,
                "$": packed,
            }
        return nn.spec.ModuleSpec.from_raw(spec, self)
