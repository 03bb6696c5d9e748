"""Logit processing and sampling against brute-force references and transformers' processors."""

import math

import pytest
import torch

from core.errors import ModelRequestError
from core.sampling import (
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    MIN_TEMPERATURE,
    SamplingParams,
    apply_repetition_penalty,
    min_p_mask,
    next_token,
    top_k_mask,
    top_p_mask,
)

LOGITS = [torch.randn(50, generator=torch.Generator().manual_seed(s)) * 3 for s in range(20)]


def brute_top_k(logits, k):
    ranked = sorted(range(len(logits)), key=lambda i: -logits[i].item())
    kth = logits[ranked[k - 1]].item()
    return torch.tensor([x.item() >= kth for x in logits])


def brute_top_p(probs, p):
    ranked = sorted(range(len(probs)), key=lambda i: -probs[i].item())
    keep, mass = set(), 0.0
    for i in ranked:
        if mass >= p:
            break
        keep.add(i)
        mass += probs[i].item()
    return torch.tensor([i in keep for i in range(len(probs))])


@pytest.mark.parametrize("k", [1, 2, 5, 49])
def test_top_k_matches_brute_force(k):
    for logits in LOGITS:
        assert torch.equal(top_k_mask(logits, k), brute_top_k(logits, k))


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.999])
def test_top_p_matches_brute_force(p):
    for logits in LOGITS:
        probs = torch.softmax(logits.double(), -1)
        assert torch.equal(top_p_mask(probs, p), brute_top_p(probs, p))


@pytest.mark.parametrize("min_p", [0.0, 0.05, 0.5, 1.0])
def test_min_p_matches_brute_force(min_p):
    for logits in LOGITS:
        probs = torch.softmax(logits, -1)
        top = max(probs.tolist())
        assert torch.equal(min_p_mask(probs, min_p), torch.tensor([q >= min_p * top for q in probs.tolist()]))


def test_repetition_penalty_matches_transformers():
    from transformers import RepetitionPenaltyLogitsProcessor

    seen = [3, 7, 7, 12, 40]
    for logits in LOGITS:
        expected = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([seen]), logits[None].clone())[0]
        assert torch.allclose(apply_repetition_penalty(logits, seen, 1.3), expected)


def test_samples_stay_inside_the_combined_mask_and_follow_the_seed():
    logits = LOGITS[0] / 3  # flat enough that the nucleus holds several tokens
    params = SamplingParams(temperature=0.8, top_k=10, top_p=0.7, min_p=0.1)
    scaled = logits / 0.8
    keep = brute_top_k(scaled, 10)
    probs = torch.softmax(scaled.masked_fill(~keep, -math.inf), -1)
    keep &= brute_top_p(probs, 0.7) & torch.tensor([q >= 0.1 * probs.max().item() for q in probs.tolist()])
    draws = [next_token(logits, params, [], [], generator=torch.Generator().manual_seed(s)) for s in range(300)]
    assert set(draws) <= set(keep.nonzero().flatten().tolist())
    assert len(set(draws)) > 1 and keep.sum() < 10
    again = [next_token(logits, params, [], [], generator=torch.Generator().manual_seed(s)) for s in range(300)]
    assert draws == again


def test_greedy_constraint_and_bias():
    logits = LOGITS[1]
    best = int(logits.argmax())
    assert next_token(logits, SamplingParams(), [], []) == best
    assert next_token(logits, SamplingParams(top_k=1, temperature=5.0), [], []) == best
    assert next_token(logits, SamplingParams(logit_bias={4: 1e3}), [], []) == 4
    second = int(logits.topk(2).indices[1])
    penalised = SamplingParams(repetition_penalty=1e6)  # the best token, once in the prompt or the output, loses
    assert next_token(logits, penalised, [best], []) == next_token(logits, penalised, [], [best]) == second
    allowed = torch.zeros(50, dtype=torch.bool)
    allowed[[9, 11]] = True
    assert next_token(logits, SamplingParams(temperature=1.0, seed=0), [], [], allowed) in (9, 11)


@pytest.mark.parametrize("bad", [dict(temperature=-0.5), dict(temperature=float("nan")), dict(temperature="hot"),
                                 dict(top_p=0.0), dict(top_p=1.5), dict(min_p=-0.1), dict(top_k=-1),
                                 dict(max_new_tokens=-1), dict(max_new_tokens=2.5), dict(repetition_penalty=0),
                                 dict(stop=[""]), dict(stop=5), dict(stop=["x"] * (MAX_STOP_STRINGS + 1)),
                                 dict(stop=["x" * (MAX_STOP_CHARS + 1)]), dict(logit_bias=[1]),
                                 dict(logit_bias={-1: 1.0}), dict(logit_bias={1: float("nan")})])
def test_bad_parameters_are_rejected_with_their_name(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        SamplingParams(**bad)


def test_stop_strings_up_to_the_limits_are_accepted():
    assert SamplingParams(stop="end").stop == ("end",)
    assert len(SamplingParams(stop=["x" * MAX_STOP_CHARS] * MAX_STOP_STRINGS).stop) == MAX_STOP_STRINGS


@pytest.mark.parametrize("temperature", [6e-38, 1e-30, MIN_TEMPERATURE / 2])
def test_a_temperature_under_the_minimum_is_greedy(temperature):
    """logits / 6e-38 overflows float32: such a temperature samples as its limit, the argmax, does."""
    for logits in LOGITS:
        big = logits * 10  # logits past 20 overflow at 6e-38
        assert next_token(big, SamplingParams(temperature=temperature, seed=0), [], []) == int(big.argmax())


def test_nan_logits_are_never_chosen_and_infinite_ones_share_the_draw():
    logits = LOGITS[3].clone()
    best, second = logits.topk(2).indices.tolist()
    logits[best] = math.nan
    assert next_token(logits, SamplingParams(), [], []) == second
    draws = {next_token(logits, SamplingParams(temperature=1.0, seed=s), [], []) for s in range(200)}
    assert best not in draws and len(draws) > 1
    logits[[5, 9]] = math.inf
    assert {next_token(logits, SamplingParams(temperature=1.0, seed=s), [], []) for s in range(100)} == {5, 9}
    huge = LOGITS[4].clone()
    huge[7] = 1e37  # finite, but infinite once divided by the temperature
    assert next_token(huge, SamplingParams(temperature=MIN_TEMPERATURE, seed=0), [], []) == 7
    with pytest.raises(ModelRequestError, match="no token can be chosen"):
        next_token(torch.full((50,), math.nan), SamplingParams(temperature=1.0), [], [])
    with pytest.raises(ModelRequestError, match="no token can be chosen"):
        next_token(torch.full((50,), math.nan), SamplingParams(), [], [])
