"""Transformer: one PyTorch module for the Llama family (RoPE, RMSNorm, GQA, SwiGLU) and GPT-2.

`forward(tokens, positions, kv_cache)` takes explicit positions so the generation engine decides
where each token sits (prefill, decode, batches of mixed lengths); the model keeps no state between
calls. Weights are loaded by core.gguf / core.hf into our parameter names; this module never reads
a file, and a freshly built Transformer holds uninitialised memory until they are assigned.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from core import cpu_kernels, decode_step
from core.attention import attention_mask, causal, one_query, query_rows
from core.config import ModelConfig
from core.kv_cache import KVCache


class Linear(nn.Linear):
    """nn.Linear left uninitialised: every weight comes from a checkpoint, and random init of a
    135M model costs a second at start-up (building on the meta device instead imports ~800 modules)."""

    def reset_parameters(self) -> None:
        pass


class Embedding(nn.Embedding):
    """nn.Embedding left uninitialised, for the same reason as Linear."""

    def reset_parameters(self) -> None:
        pass


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight, normalised in float32 whatever the dtype, as the reference does.

    bfloat16 on CPU: core.cpu_kernels' kernel, the one a decode step calls, so that every path (a step, a batch,
    a prompt) rounds alike. Elsewhere the layer norm of [x, -x], whose mean is 0 and whose variance is mean(x^2):
    layer_norm is one fused kernel, while torch's rms_norm runs as a dozen small ops on CPU (13 against 7 us a row,
    61 norms per decode step)."""
    normed = cpu_kernels.rms_norm(x, weight, eps)
    if normed is not None:
        return normed
    n = x.shape[-1]
    return F.layer_norm(torch.cat((x, -x), -1), (2 * n,), eps=eps)[..., :n] * weight


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def make_norm(config: ModelConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.dim, config.norm_eps)
    return nn.LayerNorm(config.dim, eps=config.norm_eps)


def rope_tables(config: ModelConfig, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, signed sin (B, 1, T, D) for positions (B, T), in the half-split layout ("rotate_half"): the sin
    table's first half is negated, so that apply_rope rotates with one roll instead of slicing and negating."""
    d = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))  # (D/2,)
    freqs = positions[..., None].float() * inv_freq.to(positions.device)  # (B, T, D/2)
    angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, T, D)
    sin = angles.sin()
    sin[..., : d // 2].neg_()
    return angles.cos(), sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin, where rotate_half(x) = (-x2, x1) = roll(x, D/2) with the first half negated."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, -1), signed_sin)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.config, self.layer = config, layer
        kv_dim = config.n_kv_heads * config.head_dim
        self.wq = Linear(config.dim, config.dim, bias=config.qkv_bias)
        self.wk = Linear(config.dim, kv_dim, bias=config.qkv_bias)
        self.wv = Linear(config.dim, kv_dim, bias=config.qkv_bias)
        self.wo = Linear(config.dim, config.dim, bias=config.proj_bias)

    def forward(self, x, positions, rope, mask, kv_cache: KVCache | None, cache_len: int, attentions=None):
        """`attentions`: a list to append this layer's attention weights (B, H, T, S) to; they are then computed
        explicitly, in float32, rather than by SDPA's fused kernel (which never holds them)."""
        c = self.config
        B, T, _ = x.shape
        if self.wk is None:  # core.quant fused the three projections into wq: one product, RoPE on q and k at once
            qkv = self.wq(x).view(B, T, c.n_heads + 2 * c.n_kv_heads, c.head_dim).transpose(1, 2)
            qk, v = qkv.split([c.n_heads + c.n_kv_heads, c.n_kv_heads], dim=1)
            if rope is not None:
                qk = apply_rope(qk, *rope)
            q, k = qk.split([c.n_heads, c.n_kv_heads], dim=1)
        else:
            q = self.wq(x).view(B, T, c.n_heads, c.head_dim).transpose(1, 2)  # (B, H, T, D)
            k = self.wk(x).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
            v = self.wv(x).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
            if rope is not None:
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer, positions, cache_len, k, v)  # (B, Hkv, S, D)
        # Grouped-query attention without copying K/V per query head: the n_rep query heads that share a
        # KV head become n_rep * T query rows of it (the mask arrives repeated to match).
        n_rep = c.n_heads // c.n_kv_heads
        if attentions is not None:  # softmax(QK^T / sqrt(D) + mask) V, as SDPA computes it, keeping the softmax
            q = q.reshape(B, c.n_kv_heads, n_rep * T, c.head_dim)  # (B, Hkv, n_rep*T, D)
            scores = q.float() @ k.float().transpose(-2, -1) / math.sqrt(c.head_dim) + mask  # (B, Hkv, n_rep*T, S)
            weights = torch.softmax(scores, dim=-1)
            attentions.append(weights.view(B, c.n_heads, T, -1))  # (B, H, T, S): row r*T + t is head kv*n_rep + r
            y = weights.to(v.dtype) @ v  # (B, Hkv, n_rep*T, D)
        elif mask is None and T > 1:  # a prefill, from position 0 or after cached slots: a causal kernel
            y = causal(q, k, v)  # (B, H, T, D)
        else:  # masked, or one sequence's decode step (mask None: its one query sees every key). A decode step's
            # n_rep query rows per KV head beat enable_gqa in bfloat16, whose GQA kernel is slow on CPU: 0.13 ms
            # against 0.66 ms a layer at 1,200 keys (float32: about even, 0.11 against 0.09)
            q = q.reshape(B, c.n_kv_heads, n_rep * T, c.head_dim)  # (B, Hkv, n_rep*T, D)
            if mask is None and B == T == 1:
                y = one_query(q, k, v)  # (1, Hkv, n_rep, D)
            elif T == 1 and c.attention == "causal" and kv_cache is not None:  # a batch's decode step
                y = query_rows(q, k, v, (positions[:, 0] + 1).tolist(), mask)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, Hkv, n_rep*T, D)
        return self.wo(y.reshape(B, c.n_heads, T, c.head_dim).transpose(1, 2).reshape(B, T, c.dim))


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.activation = config.activation
        self.w1 = Linear(config.dim, config.ffn_dim, bias=config.proj_bias)  # gate (SwiGLU) or up (GELU)
        self.w2 = Linear(config.ffn_dim, config.dim, bias=config.proj_bias)  # down
        self.w3 = Linear(config.dim, config.ffn_dim, bias=False) if config.activation == "swiglu" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "swiglu":
            # core.quant fuses gate and up into w1 (w3 None): one product, halves split after
            gate, up = self.w1(x).chunk(2, dim=-1) if self.w3 is None else (self.w1(x), self.w3(x))
            return self.w2(F.silu(gate) * up)
        approximate = "tanh" if self.activation == "gelu_tanh" else "none"
        return self.w2(F.gelu(self.w1(x), approximate=approximate))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.attn_norm = make_norm(config)
        self.attn = Attention(config, layer)
        self.ffn_norm = make_norm(config)
        self.ffn = FeedForward(config)

    def forward(self, x, positions, rope, mask, kv_cache, cache_len, attentions=None):
        x = x + self.attn(self.attn_norm(x), positions, rope, mask, kv_cache, cache_len, attentions)
        return x + self.ffn(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tok_embeddings = Embedding(config.vocab_size, config.dim)
        self.pos_embeddings = Embedding(config.max_seq_len, config.dim) if config.position == "learned" else None
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = make_norm(config)
        self.output = Linear(config.dim, config.vocab_size, bias=False)
        self.tie_weights()

    @property
    def dtype(self) -> torch.dtype:
        """What activations and the KV cache are in: the final norm's dtype (core.quant's int4 representation
        keeps its output table in int8 and computes in bfloat16)."""
        return self.norm.weight.dtype

    def tie_weights(self) -> None:
        """Share the output projection with the token embeddings when the checkpoint does (saves vocab x dim).
        core.quant's int4 representation shares them its own way (its embedding reads the int8 output table)."""
        if self.config.tie_embeddings and isinstance(self.output, nn.Linear):
            self.output.weight = self.tok_embeddings.weight

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, kv_cache: KVCache | None = None,
        logits_to_keep: int | None = None, return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (B, T, vocab) in float32 for tokens (B, T) at positions (B, T) or (T,).

        `logits_to_keep`: only the last so many positions get logits (a prefill needs one; the output
        projection over a long prompt would otherwise cost as much as a few layers).
        `return_attention`: (logits, one float32 tensor (B, H, T, S) per layer) with each query head's attention
        weights over the S keys (the cache's slots 0..max(position) with a KV cache, else the tokens), each row
        summing to one. They are computed explicitly, costing H x T x S floats per layer: for inspection
        (apps.explorer), never in generation, whose path stays SDPA's.
        """
        if positions.dim() == 1:
            positions = positions[None].expand_as(tokens)
        if tokens.shape != positions.shape:
            raise ValueError(f"tokens {tuple(tokens.shape)} and positions {tuple(positions.shape)} differ in shape")
        limit = kv_cache.max_len if kv_cache is not None else self.config.max_seq_len
        last = int(positions.max())
        if last >= limit or int(positions.min()) < 0:
            raise ValueError(f"positions must lie in [0, {limit}), got up to {last}")
        c = self.config
        one_step = kv_cache is not None and tokens.shape == (1, 1)  # its query is the last position: sees all keys
        if one_step and not return_attention and (tensors := decode_step.layer_tensors(self)) is not None:
            rope = tuple(t.to(self.dtype) for t in rope_tables(c, positions))
            return decode_step.decode_one(self, tensors, tokens, last, rope, kv_cache)
        x = self.tok_embeddings(tokens).to(self.dtype)  # (B, T, dim)
        if self.pos_embeddings is not None:
            x = x + self.pos_embeddings(positions)
        # Computed in float32 (as the reference does), then cast once for every layer to use.
        rope = tuple(t.to(x.dtype) for t in rope_tables(c, positions)) if c.position == "rope" else None
        if kv_cache is not None:
            k_pos = torch.arange(last + 1, device=tokens.device)[None].expand(tokens.shape[0], -1)  # (B, S)
        else:
            k_pos = positions
        T = tokens.shape[1]
        in_order = torch.arange(last + 1 - T, last + 1, device=tokens.device).expand_as(positions)
        from_start = last + 1 == T and torch.equal(positions, in_order)
        # One sequence's next T tokens after slots it filled before (a prefill chunk, a cached prefix): on CPU,
        # core.attention.causal computes it with a causal kernel.
        continues = (kv_cache is not None and tokens.shape[0] == 1 and tokens.device.type == "cpu"
                     and torch.equal(positions, in_order))
        if c.attention == "causal" and (from_start or one_step or continues) and not return_attention:
            mask = None  # plain causal attention, which SDPA computes with its own kernel
        else:
            allowed = attention_mask(c, positions, k_pos).repeat(1, 1, c.n_heads // c.n_kv_heads, 1)  # (B,1,n_rep*T,S)
            # Additive form, built once: SDPA would otherwise convert a boolean mask again in every layer.
            mask = torch.zeros(allowed.shape, dtype=x.dtype).masked_fill_(~allowed, -torch.inf)
        attentions = [] if return_attention else None
        for block in self.layers:
            x = block(x, positions, rope, mask, kv_cache, last + 1, attentions)
        if logits_to_keep is not None:
            x = x[:, -logits_to_keep:]
        logits = self.output(self.norm(x)).float()
        return (logits, attentions) if return_attention else logits
