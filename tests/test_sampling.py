"""Logit processing and sampling against brute-force references and transformers' processors."""

import math

import pytest
import torch

from core.sampling import SamplingParams, apply_repetition_penalty, min_p_mask, next_token, top_k_mask, top_p_mask

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
                                 dict(stop=[""])])
def test_bad_parameters_are_rejected_with_their_name(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        SamplingParams(**bad)
