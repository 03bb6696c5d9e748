"""Attention weights out of the model (`Transformer.forward(..., return_attention=True)`): the logits stay those of
the normal path, each row sums to one and respects the mask, and each query head's weights equal a reference
softmax(q k^T / sqrt(d)) computed from that layer's own q and k, for the float and the int4 (fused QKV)
representations, with GQA, a sliding window and a KV-cached decode step."""

import math

import pytest
import torch

from core.kv_cache import KVCache
from core.loading import load_model
from core.model import apply_rope

from conftest import save_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny random Llama (4 query heads over 2 KV heads) and Mistral (sliding window of 5) checkpoints."""
    paths = {}
    for arch in ("llama", "mistral"):
        paths[arch] = tmp_path_factory.mktemp(arch)
        save_tiny_checkpoint(arch, paths[arch])
    return paths


def layer_inputs(model) -> list[tuple]:
    """Hooks that keep each attention layer's (x, rope) as the model calls it."""
    seen = []
    for block in model.layers:
        block.attn.register_forward_pre_hook(lambda module, args: seen.append((args[0], args[2])))
    return seen


def reference_weights(attn, x, rope, allowed) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) per query head (B, H, T, T), head h reading KV head h // n_rep, from the layer's own
    projections (fused into wq or not) and RoPE; `allowed` (T, T) masks the scores."""
    c = attn.config
    B, T, _ = x.shape
    if attn.wk is None:
        q, k, _ = attn.wq(x).split([c.dim, c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim], dim=-1)
    else:
        q, k = attn.wq(x), attn.wk(x)
    q = apply_rope(q.view(B, T, c.n_heads, c.head_dim).transpose(1, 2), *rope).float()
    k = apply_rope(k.view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2), *rope).float()
    k = k.repeat_interleave(c.n_heads // c.n_kv_heads, dim=1)  # (B, H, T, D)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(c.head_dim)
    return torch.softmax(scores.masked_fill(~allowed, -math.inf), dim=-1)


# (weights, logits) tolerances. bfloat16 activations (int4): logits move by up to ~0.07 between SDPA's order of the
# sums and the explicit one, less than bfloat16's own distance from float32 on these random weights (~0.09).
TOLERANCES = {"float32": (1e-5, 1e-5), "int4": (2e-2, 0.15)}


@pytest.mark.parametrize("arch,dtype", [("llama", "float32"), ("mistral", "float32"), ("llama", "int4")])
def test_weights_are_each_heads_softmax_of_its_q_and_k(checkpoints, arch, dtype):
    tolerance, logits_tolerance = TOLERANCES[dtype]
    model, _, _ = load_model(str(checkpoints[arch]), dtype)
    c = model.config
    assert (model.layers[0].attn.wk is None) == (dtype == "int4")
    tokens = torch.randint(0, c.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(11)
    with torch.inference_mode():
        plain = model(tokens, positions)
        seen = layer_inputs(model)
        logits, attentions = model(tokens, positions, return_attention=True)
    assert torch.allclose(logits, plain, atol=logits_tolerance, rtol=0)  # the explicit softmax computes what SDPA does
    assert len(attentions) == c.n_layers == len(seen)
    distance = positions[:, None] - positions[None, :]
    allowed = (distance >= 0) & (distance < c.window if c.attention == "sliding" else True)
    for block, weights, (x, rope) in zip(model.layers, attentions, seen, strict=True):
        assert weights.shape == (2, c.n_heads, 11, 11) and weights.dtype == torch.float32
        assert torch.allclose(weights.sum(-1), torch.ones(2, c.n_heads, 11), atol=1e-6)
        assert not weights[..., ~allowed].any()  # nothing on masked keys (the future, or beyond the window)
        with torch.inference_mode():
            expected = reference_weights(block.attn, x, rope, allowed)
        assert (weights - expected).abs().max() < tolerance
    assert not torch.allclose(attentions[0][:, 0], attentions[0][:, 1])  # heads differ: each is its own


def test_a_cached_decode_step_attends_as_the_last_row_of_the_full_pass(checkpoints):
    model, _, _ = load_model(str(checkpoints["llama"]), "float32")
    tokens = torch.randint(0, model.config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(1))
    cache = KVCache.allocate(model.config, 1, 16)
    with torch.inference_mode():
        _, full = model(tokens, torch.arange(9), return_attention=True)
        model(tokens[:, :8], torch.arange(8), kv_cache=cache)
        logits, step = model(tokens[:, 8:], torch.tensor([8]), kv_cache=cache, return_attention=True)
        plain = model(tokens[:, 8:], torch.tensor([8]), kv_cache=cache)
    assert torch.allclose(logits, plain, atol=1e-5)
    for one, whole in zip(step, full, strict=True):
        assert one.shape == (1, model.config.n_heads, 1, 9)  # over the cache's slots 0..8
        assert torch.allclose(one[:, :, 0], whole[:, :, 8], atol=1e-5)
