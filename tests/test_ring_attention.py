"""Ring attention across processes (gloo on CPU) equals attention on one process: the attention itself against SDPA
for P = 1..4, causal and not, GQA, lengths P does not divide; the distributed prefill of tiny random models and of
SmolLM2 against a single-process forward; and a failing rank makes every rank raise instead of hanging.
Each spawn of P processes costs seconds, so one spawn per P checks every case."""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import core.ring_attention
from core.config import ModelConfig
from core.model import Transformer
from core.ring_attention import RanksFailed, Zigzag, ring_attention, ring_prefill, run_ranks

from conftest import randomize

LENGTHS = (1, 3, 7, 50, 131)  # below 2P, and never a multiple of 2P (P = 1..4): every layout pads
HEADS = ((6, 2), (6, 3), (4, 4))  # (query heads, key/value heads): two GQA groupings and plain multi-head
TINY = {  # a Llama with GQA and q/k/v biases; a GPT-2 (learned positions, LayerNorm, GELU, biases)
    "llama": ModelConfig(dim=48, n_layers=2, n_heads=6, n_kv_heads=2, ffn_dim=64, vocab_size=97, max_seq_len=128,
                         qkv_bias=True, rope_theta=500.0),
    "gpt2": ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=4, ffn_dim=64, vocab_size=97, max_seq_len=128,
                        norm="layernorm", activation="gelu", position="learned", proj_bias=True, qkv_bias=True),
}
PROMPT = (5, 60)  # the tiny models' prompt: positions 5..64, not from 0


def attention_errors() -> list[tuple[tuple, float]]:
    """On every rank: for each case, the largest difference between ring attention's rows for this rank's queries
    and SDPA's on the whole sequence."""
    core.ring_attention.QUERY_TILE = 16  # several query tiles per chunk even at these lengths
    rank, world = dist.get_rank(), dist.get_world_size()
    errors = []
    for T in LENGTHS:
        for H, Hkv in HEADS:
            for causal in (True, False):
                generator = torch.Generator().manual_seed(T * 100 + H * 10 + Hkv)
                q, k, v = (torch.randn(2, h, T, 16, generator=generator) for h in (H, Hkv, Hkv))
                reference = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=Hkv != H)
                layout = Zigzag(T, world)
                out = ring_attention(*(layout.shard(x, rank, dim=2) for x in (q, k, v)), layout, causal=causal)
                real = layout.indices(rank) < T
                difference = (out - layout.shard(reference, rank, dim=2))[:, :, real].abs()
                errors.append(((T, H, Hkv, causal), float(difference.max()) if real.any() else 0.0))
    return errors


def tiny_model(name: str) -> Transformer:
    return randomize(Transformer(TINY[name]), seed=len(name))


def prompt() -> tuple[torch.Tensor, torch.Tensor]:
    start, length = PROMPT
    return torch.randint(0, 97, (2, length), generator=torch.Generator().manual_seed(1)), torch.arange(length) + start


def rank_checks() -> dict:
    """One spawn's work: attention_errors, then each tiny model's distributed prefill (all logits and the last)."""
    torch.set_num_threads(1)  # tiny products: threads would only wait on each other, and on other tests' processes
    tokens, positions = prompt()
    logits = {name: (ring_prefill(tiny_model(name), tokens, positions),
                     ring_prefill(tiny_model(name), tokens, positions, logits_to_keep=1)) for name in TINY}
    return {"attention": attention_errors(), "logits": logits}


# Each spawn takes seconds: the fast suite keeps P = 2 (communication, padding, GQA, both masks), `slow` adds the rest.
@pytest.mark.parametrize("world", [pytest.param(1, marks=pytest.mark.slow), 2, pytest.param(3, marks=pytest.mark.slow),
                                   pytest.param(4, marks=pytest.mark.slow)])
def test_ring_equals_one_process(world):
    ranks = run_ranks(rank_checks, world)
    for rank, result in enumerate(ranks):
        worst = max(result["attention"], key=lambda case: case[1])
        assert worst[1] < 1e-5, f"rank {rank}: (T, H, Hkv, causal) = {worst[0]} differs by {worst[1]}"
        assert rank == 0 or all(all(part is None for part in pair) for pair in result["logits"].values())
    tokens, positions = prompt()
    for name in TINY:
        with torch.inference_mode():
            expected = tiny_model(name)(tokens, positions)
        every, last = ranks[0]["logits"][name]
        assert every.shape == expected.shape and last.shape == (2, 1, TINY[name].vocab_size)
        torch.testing.assert_close(every, expected, rtol=0, atol=1e-5, msg=name)
        torch.testing.assert_close(last, expected[:, -1:], rtol=0, atol=1e-5, msg=name)


def smollm2_prefill(path: str, ids: list[int]):
    from core.loading import load_model

    model = load_model(path, dtype="float32")[0]
    return ring_prefill(model, torch.tensor([ids]), torch.arange(len(ids)))


def test_smollm2_prefill_across_processes_equals_one_process(smollm2_path):
    from core.loading import load_model

    model, tokenizer, _ = load_model(str(smollm2_path), dtype="float32")
    ids = tokenizer.encode("Ring attention passes key and value blocks from process to process, " * 12)[:301]
    with torch.inference_mode():
        expected = model(torch.tensor([ids]), torch.arange(len(ids)))
    for world in (2, 3):
        logits = run_ranks(smollm2_prefill, world, str(smollm2_path), ids)[0]
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-3, msg=f"{world} processes")
        assert torch.equal(logits.argmax(-1), expected.argmax(-1))


def fail_on_some_ranks(stuck: bool, timeout_s: float):
    """Rank 0 runs ring attention, waiting for the last rank's block. If `stuck`, that rank stays silent past the
    timeout (then tries too); else rank 1 raises and rank 2 dies without a word."""
    rank, world = dist.get_rank(), dist.get_world_size()
    if stuck and rank == world - 1:
        time.sleep(2 * timeout_s)
    elif not stuck and rank == 1:
        raise ValueError("rank 1 gives up")
    elif not stuck and rank == 2:
        os._exit(3)
    layout = Zigzag(30, world)
    x = torch.zeros(1, 2, 2 * layout.chunk, 8)
    ring_attention(x, x, x, layout)


@pytest.mark.parametrize("stuck", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["raises-and-dies", "stuck"])
def test_a_failing_rank_makes_every_rank_raise(stuck):
    started = time.monotonic()
    with pytest.raises(RanksFailed) as failed:
        run_ranks(fail_on_some_ranks, 2 if stuck else 3, stuck, 2.0, timeout_s=2.0)
    errors = failed.value.errors
    assert time.monotonic() - started < 40
    if stuck:
        assert sorted(errors) == [0, 1] and "timed out" in errors[0].lower()
    else:
        assert sorted(errors) == [0, 1, 2] and "in ring_attention" in errors[0]
        assert "ValueError: rank 1 gives up" in errors[1] and "exited with code 3" in errors[2]
