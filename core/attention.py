"""Attention masks from explicit positions: full causal, sliding window, strided sparse.

Masks are computed from the positions of queries and keys rather than from their indices, so the
same function serves a full forward pass and a KV-cached decode step. It does not handle padding;
the generation engine marks padded slots itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core import cpu_kernels
from core.config import ModelConfig


def attention_mask(config: ModelConfig, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """Boolean mask (B, 1, Tq, Tk), True where the query at q_pos (B, Tq) may attend the key at k_pos (B, Tk).

    - causal: every earlier key and itself.
    - sliding: the last `window` positions, itself included (Mistral: q - k < window).
    - strided: the last `window` positions plus every `stride`-th earlier one ((q - k) % stride == 0),
      the fixed pattern of Child et al. (2019), "Generating Long Sequences with Sparse Transformers".
    """
    distance = q_pos[:, :, None] - k_pos[:, None, :]  # (B, Tq, Tk)
    allowed = distance >= 0
    if config.attention == "sliding":
        allowed &= distance < config.window
    elif config.attention == "strided":
        allowed &= (distance < config.window) | (distance % config.stride == 0)
    return allowed[:, None]  # (B, 1, Tq, Tk), broadcast over heads


def causal_after_prefix(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention (B, H, T, D) of T queries sitting at the last T of S key positions (a prefill that
    continues a cached prefix or an earlier chunk); q (B, H, T, D), k and v (B, Hkv, S, D), on CPU.

    SDPA with an explicit mask computes all T x S scores (SmolLM2, 992 tokens after 32 cached: 19 ms a layer,
    against 13 for 1,024 from the start). Here torch's CPU flash kernel computes the prefix's keys unmasked and
    the queries' own causally, skipping the masked half (16 ms), and the two are merged by the log-sum-exps it
    returns: softmax over all keys = each part's softmax weighted by exp(its lse - the total lse)."""
    T, S = q.shape[2], k.shape[2]
    n_rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(n_rep, 1), v.repeat_interleave(n_rep, 1)  # (B, H, S, D): the kernel has no GQA
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    before, lse_before = flash(q, k[:, :, : S - T], v[:, :, : S - T], 0.0, False)[:2]  # lse (B, H, T), float32
    own, lse_own = flash(q, k[:, :, S - T:], v[:, :, S - T:], 0.0, True)[:2]
    lse = torch.logaddexp(lse_before, lse_own)
    return (before * (lse_before - lse).exp()[..., None] + own * (lse_own - lse).exp()[..., None]).to(q.dtype)


def causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention (B, H, T, D) of T queries at the last T of S key positions: q (B, H, T, D), k and v
    (B, Hkv, S, D); a prefill from the start (S = T) or after cached slots. core.cpu_kernels' flash kernel for one
    sequence where it runs (SmolLM2, 1,024 tokens: 4.3 ms a layer against SDPA's 12.8), else SDPA's causal kernel,
    or causal_after_prefix after cached slots (on CPU)."""
    y = cpu_kernels.attend_causal(q, k, v)
    if y is not None:
        return y
    if k.shape[2] > q.shape[2]:
        return causal_after_prefix(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])


def one_query(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A decode step of one sequence: its query (1, Hkv, n_rep, D), each KV head's n_rep query heads together,
    sees every key of k and v (1, Hkv, S, D). core.cpu_kernels' kernel where it runs (bfloat16 on a CPU with
    AVX512-BF16), else SDPA. SDPA's CPU kernel is built for many queries: 35 us a layer for SmolLM2 at 100 keys,
    117 at 1,200, where reading the keys and values takes a few; the kernel scores and sums in float32."""
    y = cpu_kernels.attend_one(q, k, v)
    return y if y is not None else F.scaled_dot_product_attention(q, k, v)


def query_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: list[int], mask: torch.Tensor
               ) -> torch.Tensor:
    """A causal decode step of B sequences: row b's query (B, Hkv, n_rep, D) sees its first lengths[b] slots of
    k and v (B, Hkv, S, D), as `mask` says. Row by row through one_query's kernel where it runs, so a sequence
    decodes to the same bits in a batch as alone; else SDPA with the mask."""
    rows = [cpu_kernels.attend_one(q[b: b + 1], k[b: b + 1, :, :n], v[b: b + 1, :, :n]) for b, n in enumerate(lengths)]
    if any(row is None for row in rows):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return torch.cat(rows)
