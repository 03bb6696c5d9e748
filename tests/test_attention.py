"""The attention patterns equal a brute-force reference mask, for plain and offset (KV-cached) positions; causal
attention after a cached prefix, merged from two kernel calls, equals SDPA with that mask; so does a decode
step's."""

import pytest
import torch
import torch.nn.functional as F

from core import cpu_kernels
from core.attention import attention_mask, causal, causal_after_prefix, one_query, query_rows
from core.config import ModelConfig
from core.quant import cpuinfo_flags


def reference_allowed(pattern: str, q: int, k: int, window: int | None, stride: int | None) -> bool:
    if k > q:
        return False
    if pattern == "causal":
        return True
    recent = q - k < window
    if pattern == "sliding":
        return recent
    return recent or (q - k) % stride == 0


@pytest.mark.parametrize("pattern,window,stride", [("causal", None, None), ("sliding", 4, None),
                                                   ("sliding", 1, None), ("strided", 3, 4), ("strided", 2, 5)])
@pytest.mark.parametrize("q_start", [0, 7])
def test_mask_matches_brute_force(pattern, window, stride, q_start):
    config = ModelConfig(dim=8, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=8, vocab_size=10,
                         attention=pattern, window=window, stride=stride)
    k_pos = torch.arange(24)[None]  # (1, 24): keys in a cache
    q_pos = torch.arange(q_start, 24)[None]  # a prefill (q_start=0) or a chunk after a cached prefix
    mask = attention_mask(config, q_pos, k_pos)
    assert mask.shape == (1, 1, q_pos.shape[1], 24)
    expected = torch.tensor([[reference_allowed(pattern, q, k, window, stride) for k in range(24)]
                             for q in range(q_start, 24)])
    assert torch.equal(mask[0, 0], expected)


def test_strided_pattern_sees_far_tokens_that_sliding_does_not():
    base = dict(dim=8, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=8, vocab_size=10, window=3)
    pos = torch.arange(20)[None]
    sliding = attention_mask(ModelConfig(**base, attention="sliding"), pos, pos)
    strided = attention_mask(ModelConfig(**base, attention="strided", stride=4), pos, pos)
    assert not sliding[0, 0, 19, 3] and strided[0, 0, 19, 3]  # 19 - 3 = 16, a multiple of 4


@pytest.mark.parametrize("bad", [dict(attention="sliding"), dict(attention="strided", window=4),
                                 dict(n_kv_heads=3), dict(norm="batchnorm"), dict(dim=9), dict(dim=10)])
def test_config_rejects_inconsistent_values(bad):
    values = dict(dim=8, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=8, vocab_size=10) | bad
    with pytest.raises(ValueError, match="ModelConfig|divisible|multiple|window|stride|even head_dim"):
        ModelConfig(**values)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("prefix", [1, 40])
def test_causal_attention_after_a_prefix_equals_the_masked_one(dtype, tolerance, prefix):
    """T queries at the last T of S positions, 6 heads over 2 KV heads: what SDPA computes with the explicit
    causal mask, from two flash-kernel parts merged by their log-sum-exps."""
    generator = torch.Generator().manual_seed(prefix)
    T, S = 17, prefix + 17
    q = torch.randn(1, 6, T, 16, generator=generator).to(dtype)
    k, v = (torch.randn(1, 2, S, 16, generator=generator).to(dtype) for _ in range(2))
    allowed = torch.arange(S)[None, :] <= torch.arange(prefix, S)[:, None]  # (T, S)
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=allowed, enable_gqa=True)
    got = causal_after_prefix(q, k, v)
    assert got.dtype == dtype and got.shape == (1, 6, T, 16)
    assert (got.float() - expected).abs().max().item() < tolerance


def cache_slice(kv_heads: int, length: int, dim: int, generator) -> torch.Tensor:
    """Keys or values (1, Hkv, length, D) as a KV cache holds them: the first `length` of 1,400 slots per head."""
    slots = torch.randn(1, kv_heads, 1400, dim, generator=generator).to(torch.bfloat16)
    return slots[:, :, :length]


@pytest.mark.parametrize("length", [1, 7, 256, 257, 1200])
@pytest.mark.parametrize("kv_heads,n_rep,dim", [(3, 3, 64), (2, 4, 128), (4, 1, 32)])
def test_one_query_equals_sdpa(length, kv_heads, n_rep, dim):
    """A decode step's attention (core.cpu_kernels where it runs): SDPA's result in float32, to bfloat16 rounding.
    Lengths on both sides of the kernel's split into parts of 256 keys."""
    generator = torch.Generator().manual_seed(length + dim)
    q = (torch.randn(1, kv_heads, n_rep, dim, generator=generator) * 2).to(torch.bfloat16)  # peaked softmaxes too
    k, v = cache_slice(kv_heads, length, dim, generator), cache_slice(kv_heads, length, dim, generator)
    got = one_query(q, k, v)
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert got.shape == q.shape and got.dtype == torch.bfloat16
    assert (got.float() - expected).abs().max().item() <= 2**-7 * expected.abs().max().item()


def test_one_query_is_our_kernel_here():
    """The test machine runs the kernel (AVX512-BF16, a C compiler); float32 takes SDPA."""
    if not cpuinfo_flags() >= cpu_kernels.NEEDED_CPU_FLAGS:
        pytest.skip("this CPU lacks the kernel's instructions")
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 3, 64, generator=generator).to(torch.bfloat16)
    k, v = cache_slice(2, 9, 64, generator), cache_slice(2, 9, 64, generator)
    assert cpu_kernels.attend_one(q, k, v) is not None
    assert cpu_kernels.attend_one(q.float(), k.float(), v.float()) is None


def fused_heads(kv_heads: int, n_rep: int, length: int, dim: int, seed: int) -> tuple[torch.Tensor, ...]:
    """q, k, v (1, heads, length, D) as views of one (1, length, heads + 2 kv heads, D) tensor, the layout of the
    int4 model's fused q/k/v projection (rows strided, each row's D values contiguous)."""
    heads = kv_heads * n_rep
    generator = torch.Generator().manual_seed(seed)
    fused = (torch.randn(1, length, heads + 2 * kv_heads, dim, generator=generator) * 1.5).to(torch.bfloat16)
    q, k, v = fused.transpose(1, 2).split([heads, kv_heads, kv_heads], dim=1)
    return q, k, v


@pytest.mark.parametrize("queries,length", [(2, 2), (5, 5), (64, 64), (65, 65), (300, 300), (7, 300), (250, 1000)])
@pytest.mark.parametrize("kv_heads,n_rep,dim", [(3, 3, 64), (2, 4, 128), (4, 1, 32)])
def test_causal_equals_sdpa_with_the_mask(queries, length, kv_heads, n_rep, dim):
    """A prefill's attention (core.cpu_kernels' flash kernel where it runs): from the start, and after cached
    slots; lengths on both sides of its blocks of 64 keys and queries."""
    q, k, v = fused_heads(kv_heads, n_rep, length, dim, seed=queries + length + dim)
    q = q[:, :, length - queries:]
    got = causal(q, k, v)
    allowed = torch.ones(queries, length, dtype=torch.bool).tril(length - queries)
    expected = F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(n_rep, 1),
                                              v.float().repeat_interleave(n_rep, 1), attn_mask=allowed)
    assert got.shape == q.shape and got.dtype == torch.bfloat16
    assert (got.float() - expected).abs().max().item() <= 2**-7 * expected.abs().max().item()


def test_causal_is_our_kernel_here():
    if not cpuinfo_flags() >= cpu_kernels.NEEDED_CPU_FLAGS:
        pytest.skip("this CPU lacks the kernel's instructions")
    q, k, v = fused_heads(2, 3, 40, 64, seed=0)
    assert cpu_kernels.attend_causal(q, k, v) is not None
    assert cpu_kernels.attend_causal(q.float(), k.float(), v.float()) is None


def test_a_batch_decode_step_attends_each_row_as_alone():
    """query_rows: row b sees its own first lengths[b] slots, to the bit what one_query gives that row alone (a
    sequence decodes the same in a batch), and what SDPA gives with the mask to bfloat16 rounding."""
    generator = torch.Generator().manual_seed(1)
    q = torch.randn(3, 3, 3, 64, generator=generator).to(torch.bfloat16)
    k, v = (torch.randn(3, 3, 300, 64, generator=generator).to(torch.bfloat16) for _ in range(2))
    lengths = [300, 17, 120]
    allowed = torch.arange(300)[None, :] < torch.tensor(lengths)[:, None]  # (B, S)
    mask = torch.zeros(3, 1, 1, 300, dtype=torch.bfloat16).masked_fill_(~allowed[:, None, None], -torch.inf)
    got = query_rows(q, k, v, lengths, mask)
    for b, n in enumerate(lengths):
        assert torch.equal(got[b: b + 1], one_query(q[b: b + 1], k[b: b + 1, :, :n], v[b: b + 1, :, :n]))
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask.float())
    assert (got.float() - expected).abs().max().item() <= 2**-7 * expected.abs().max().item()


def test_float32_never_asks_for_the_kernels(monkeypatch):
    """On a machine without core.cpu_kernels (here: no compiler), a float32 model's attention and norms take torch
    without building anything or warning that the kernels are missing: they would not apply to it anyway."""
    import warnings

    from core.model import rms_norm

    monkeypatch.setenv("CC", "/nonexistent/cc")
    cpu_kernels._library.cache_clear()
    try:
        q, k, v = (t.float() for t in fused_heads(2, 3, 40, 64, seed=0))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            one_query(q[:, :, -1:].reshape(1, 2, 3, 64).contiguous(), k, v)
            causal(q, k, v)
            rms_norm(q, torch.ones(64), 1e-5)
        assert cpu_kernels._library.cache_info().misses == 0
    finally:
        cpu_kernels._library.cache_clear()
