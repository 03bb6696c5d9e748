"""The next-token distribution as the engine filters it: which tokens survive temperature, top-k, top-p and min-p,
and the renormalised probabilities the draw then uses.

The masks are core.sampling's own functions, applied in the order `core.sampling.next_token` applies them (top-k on
the tempered logits; top-p and min-p both on the probabilities left after top-k), so the table shows what
generation does; a test draws with `next_token` and finds only the survivors. Penalties, logit bias and
constraints are left out: they depend on a request's history, not on the distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from core.sampling import MIN_TEMPERATURE, SamplingParams, min_p_mask, top_k_mask, top_p_mask


@dataclass(frozen=True)
class Filtered:
    """Per vocabulary entry (vocab,): `probs` the softmax of the tempered logits (temperature 1 when greedy), then
    which tokens each filter keeps (all True where it is off, or when greedy: no filter runs), and `final`, the
    probabilities of the draw over the survivors."""

    probs: torch.Tensor
    top_k: torch.Tensor
    top_p: torch.Tensor
    min_p: torch.Tensor
    final: torch.Tensor
    greedy: bool

    @property
    def survivors(self) -> int:
        return int((self.final > 0).sum())


def filter_steps(logits: torch.Tensor, params: SamplingParams) -> Filtered:
    """The filters of `params` (its temperature, top_k, top_p, min_p) on finite logits (vocab,), step by step."""
    assert logits.dim() == 1 and bool(torch.isfinite(logits).all())
    logits = logits.float()
    everything = torch.ones_like(logits, dtype=torch.bool)
    if params.temperature < MIN_TEMPERATURE:  # greedy: the argmax, whatever the filters say
        final = torch.zeros_like(logits)
        final[logits.argmax()] = 1.0
        return Filtered(torch.softmax(logits, -1), everything, everything, everything, final, greedy=True)
    logits = logits / params.temperature
    top_k = top_k_mask(logits, params.top_k)
    after_k = torch.softmax(logits.masked_fill(~top_k, -math.inf), dim=-1)
    top_p, min_p = top_p_mask(after_k, params.top_p), min_p_mask(after_k, params.min_p)
    final = torch.softmax(logits.masked_fill(~(top_k & top_p & min_p), -math.inf), dim=-1)
    return Filtered(torch.softmax(logits, -1), top_k, top_p, min_p, final, greedy=False)
