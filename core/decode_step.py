"""One decode step of one sequence, the int4 Llama's hot path, without nn.Module's machinery.

At batch 1 a step of SmolLM2 (30 thin layers) is some 120 int4 products and the output product, 7-8 ms, plus
about 800 small torch ops and the Python around them. Through the modules (Transformer, Block, Attention,
Int4Linear, each called through nn.Module and reading its tensors through nn.Module's attribute lookup) that
Python cost 2 ms a step. Here each layer's tensors are collected once (`layer_tensors`) and `decode_one` runs
the modules' math on them, with the same kernels and the same roundings, on one row: 11.9 -> 9.1 ms a step.
Transformer.forward sends a (1, 1) step with a KV cache here when the model is of this form; anything else
(batches, other representations, GPT-2) takes the modules. tests/test_decode_step.py holds it to them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core import cpu_kernels
from core.attention import one_query
from core.kv_cache import KVCache

INT4_MM = torch.ops.aten._weight_int4pack_mm_for_cpu


def layer_tensors(model) -> list[tuple] | None:
    """Per layer (attn_norm, qkv packed, scales, bias, wo packed, scales, bias, ffn_norm, gate-up packed, scales,
    bias, down packed, scales, bias), or None when `model` is not an int4 Llama (core.quant's fused layers, RMSNorm,
    SwiGLU, RoPE, causal attention). Collected at the model's first one-token step and kept: weights changed in
    place are seen, weights reassigned after that step are not."""
    from core.quant import Int4Linear

    cached = model.__dict__.get("_decode_tensors", False)
    if cached is not False:
        return cached
    c = model.config
    plain = (c.norm, c.activation, c.position, c.attention) == ("rmsnorm", "swiglu", "rope", "causal")
    linears = [(b.attn.wq, b.attn.wo, b.ffn.w1, b.ffn.w2) for b in model.layers]
    if not plain or not all(isinstance(layer, Int4Linear) for four in linears for layer in four):
        tensors = None
    else:
        tensors = [(b.attn_norm.weight, *_int4(b.attn.wq), *_int4(b.attn.wo), b.ffn_norm.weight, *_int4(b.ffn.w1),
                    *_int4(b.ffn.w2)) for b in model.layers]
    model.__dict__["_decode_tensors"] = tensors
    return tensors


def _int4(layer) -> tuple:
    return layer.packed, layer.scales_and_zeros, layer.bias


def _linear(x, packed, scales_and_zeros, bias):
    group = x.shape[-1] // scales_and_zeros.shape[0]  # core.quant.GROUP, read off the scales
    y = INT4_MM(x, packed, group, scales_and_zeros)
    return y + bias if bias is not None else y


def decode_one(model, tensors: list[tuple], token: torch.Tensor, position: int, rope, kv_cache: KVCache):
    """Logits (1, 1, vocab) in float32 for token (1, 1) at `position`, its K and V written to slot `position` of
    row 0; `rope` the (cos, signed sin) tables at that position in the model's dtype (core.model.rope_tables)."""
    glue = cpu_kernels.decode_glue()
    step = _glued if glue is not None and model.config.head_dim <= cpu_kernels.MAX_DIM else _with_torch
    return step(model, tensors, token, position, rope, kv_cache, glue)


def _with_torch(model, tensors, token, position, rope, kv_cache, glue=None):
    from core.model import apply_rope, rms_norm

    c = model.config
    H, Hkv, D = c.n_heads, c.n_kv_heads, c.head_dim
    eps, length = c.norm_eps, position + 1
    cos, sin = (t.view(D) for t in rope)
    x = model.tok_embeddings(token.view(1)).to(model.dtype)  # (1, dim)
    # Views of the cache made once per step, not per layer: the new slot (L, Hkv, D), the slots so far (L, 1, Hkv, S, D)
    new_keys, new_values = kv_cache.k[:, 0, :, position], kv_cache.v[:, 0, :, position]
    keys, values = kv_cache.k[:, :1, :, :length], kv_cache.v[:, :1, :, :length]
    for layer, (attn_norm, qkv, qkv_s, qkv_b, wo, wo_s, wo_b, ffn_norm, w13, w13_s, w13_b, w2, w2_s, w2_b) in (
            enumerate(tensors)):
        heads = _linear(rms_norm(x, attn_norm, eps), qkv, qkv_s, qkv_b).view(H + 2 * Hkv, D)
        qk = apply_rope(heads[: H + Hkv], cos, sin)
        new_keys[layer] = qk[H:]
        new_values[layer] = heads[H + Hkv:]
        y = one_query(qk[:H].view(1, Hkv, H // Hkv, D), keys[layer], values[layer])  # (1, Hkv, n_rep, D)
        x = x + _linear(y.view(1, H * D), wo, wo_s, wo_b)
        gate, up = _linear(rms_norm(x, ffn_norm, eps), w13, w13_s, w13_b).chunk(2, -1)
        x = x + _linear(F.silu(gate) * up, w2, w2_s, w2_b)
    return model.output(model.norm(x)).float().view(1, 1, -1)


def _glued(model, tensors, token, position, rope, kv_cache, glue):
    """_with_torch's step with its small steps in core.cpu_kernels (one call for the residual sum and the norm,
    one for RoPE and the KV cache's writes, one for SiLU times up): 1.3 -> 0.3 ms a step. The same roundings, and
    the same norm kernel as core.model.rms_norm's: the same bits (tests/test_decode_step.py)."""
    c = model.config
    H, Hkv, D = c.n_heads, c.n_kv_heads, c.head_dim
    eps, length = c.norm_eps, position + 1
    cos, sin = (t.contiguous().data_ptr() for t in rope)
    x = torch.empty(1, c.dim, dtype=torch.bfloat16)
    x.copy_(model.tok_embeddings(token.view(1)))  # written in place below: never the embedding table itself
    normed = torch.empty_like(x)
    x_at, normed_at = x.data_ptr(), normed.data_ptr()
    new_keys, new_values = kv_cache.k[:, 0, :, position], kv_cache.v[:, 0, :, position]  # (L, Hkv, D)
    head_stride = new_keys.stride(1)
    keys, values = kv_cache.k[:, :1, :, :length], kv_cache.v[:, :1, :, :length]
    y = None
    for layer, (attn_norm, qkv, qkv_s, qkv_b, wo, wo_s, wo_b, ffn_norm, w13, w13_s, w13_b, w2, w2_s, w2_b) in (
            enumerate(tensors)):
        glue.residual_rms_norm(x_at, y.data_ptr() if y is not None else None, attn_norm.data_ptr(), c.dim, eps,
                               normed_at)
        heads = _linear(normed, qkv, qkv_s, qkv_b).contiguous()  # (1, (H + 2 Hkv) D)
        glue.rope_into_cache(heads.data_ptr(), cos, sin, H, Hkv, D, new_keys[layer].data_ptr(),
                             new_values[layer].data_ptr(), head_stride)
        attended = one_query(heads[0, : H * D].view(1, Hkv, H // Hkv, D), keys[layer], values[layer])
        y = _linear(attended.view(1, H * D), wo, wo_s, wo_b).contiguous()
        glue.residual_rms_norm(x_at, y.data_ptr(), ffn_norm.data_ptr(), c.dim, eps, normed_at)
        gate_up = _linear(normed, w13, w13_s, w13_b).contiguous()
        ffn = gate_up.shape[1] // 2
        activated = torch.empty(1, ffn, dtype=torch.bfloat16)
        glue.silu_mul(gate_up.data_ptr(), ffn, activated.data_ptr())
        y = _linear(activated, w2, w2_s, w2_b).contiguous()
    glue.residual_rms_norm(x_at, y.data_ptr(), model.norm.weight.data_ptr(), c.dim, eps, normed_at)
    return model.output(normed).float().view(1, 1, -1)
