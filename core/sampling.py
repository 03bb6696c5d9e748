"""Choosing the next token: logit processing (penalties, bias, top-k, top-p, min-p) and the draw.

Each step is a pure function of the logits, checked in tests against a brute-force reference. The
engine applies them per sequence, each sequence with its own parameters and its own seeded
torch.Generator, so a seed reproduces a sequence whatever else is in the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from core.errors import ModelRequestError

# (ids generated so far, logits (vocab,)) -> logits: a user hook run before the built-in processing.
LogitsProcessor = Callable[[list[int], torch.Tensor], torch.Tensor]

# Below this a temperature samples greedily, its limit: logits / temperature must stay finite in float32, and
# a draw at 0.01 is already all but always the argmax.
MIN_TEMPERATURE = 1e-2
# Stop strings are matched against every token of a request: bounded, so one request cannot hold many.
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256


@dataclass
class SamplingParams:
    """How to choose tokens, per request; a bad value raises ModelRequestError (a ValueError) naming it."""

    max_new_tokens: int | None = 256  # None: until the end of turn or of the context
    temperature: float = 0.0  # 0 is greedy (argmax), and so is anything under MIN_TEMPERATURE
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    min_p: float = 0.0  # 0: off
    repetition_penalty: float = 1.0  # 1: off; >1 discourages tokens already in prompt or output
    logit_bias: dict[int, float] = field(default_factory=dict)
    stop: Sequence[str] = ()  # at most MAX_STOP_STRINGS, of at most MAX_STOP_CHARS characters each
    seed: int | None = None
    logits_processor: LogitsProcessor | None = None

    def __post_init__(self):
        _check_number("temperature", self.temperature, low=0.0)
        _check_number("top_p", self.top_p, low=0.0, high=1.0, low_open=True)
        _check_number("min_p", self.min_p, low=0.0, high=1.0)
        _check_number("repetition_penalty", self.repetition_penalty, low=0.0, low_open=True)
        for name in ("max_new_tokens", "top_k"):
            value = getattr(self, name)
            if name == "max_new_tokens" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ModelRequestError(f"{name} must be an integer >= 0, got {value!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not -(2**63) <= self.seed < 2**64):
            raise ModelRequestError(f"seed must be an integer in [-2**63, 2**64), got {self.seed!r}")
        self.stop = _checked_stop(self.stop)
        self.logit_bias = _checked_logit_bias(self.logit_bias)


def _checked_stop(stop) -> tuple[str, ...]:
    stop = (stop,) if isinstance(stop, str) else stop
    if not isinstance(stop, list | tuple) or any(not isinstance(s, str) or not s for s in stop):
        raise ModelRequestError(f"stop must be a string or a list of non-empty strings, got {stop!r:.200}")
    if len(stop) > MAX_STOP_STRINGS or any(len(s) > MAX_STOP_CHARS for s in stop):
        longest = max(len(s) for s in stop)
        raise ModelRequestError(f"stop takes at most {MAX_STOP_STRINGS} strings of at most {MAX_STOP_CHARS} "
                                f"characters each, got {len(stop)} strings, the longest of {longest} characters")
    return tuple(stop)


def _checked_logit_bias(bias) -> dict[int, float]:
    """Token ids as integers and biases as numbers; the engine checks the ids against its vocabulary."""
    if not isinstance(bias, dict):
        raise ModelRequestError(f"logit_bias must be a dict of token id to bias, got {type(bias).__name__}")
    for token_id, value in bias.items():
        if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
            raise ModelRequestError(f"logit_bias keys must be token ids (integers >= 0), got {token_id!r}")
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ModelRequestError(f"logit_bias values must be numbers (-inf bans a token), got {value!r} "
                                    f"for token {token_id}")
    return bias


def _check_number(name, value, low, high=math.inf, low_open=False):
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value > high or value < low or (low_open and value == low):
        bounds = f"{'(' if low_open else '['}{low}, {high}]"
        raise ModelRequestError(f"{name} must be a finite number in {bounds}, got {value!r}")


def apply_repetition_penalty(logits: torch.Tensor, seen_ids: list[int], penalty: float) -> torch.Tensor:
    """CTRL-style (Keskar et al. 2019), as transformers does it: divide positive logits, multiply negative ones."""
    if penalty == 1.0 or not seen_ids:
        return logits
    ids = torch.tensor(sorted(set(seen_ids)), dtype=torch.long)
    picked = logits[ids]
    logits = logits.clone()
    logits[ids] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits


def top_k_mask(logits: torch.Tensor, k: int) -> torch.Tensor:
    """True for the k largest logits (ties at the k-th value kept)."""
    if k <= 0 or k >= logits.shape[-1]:
        return torch.ones_like(logits, dtype=torch.bool)
    return logits >= torch.topk(logits, k).values[-1]


def top_p_mask(probs: torch.Tensor, p: float) -> torch.Tensor:
    """True for the smallest set of most likely tokens whose probability sums to at least p (nucleus)."""
    if p >= 1.0:
        return torch.ones_like(probs, dtype=torch.bool)
    sorted_probs, order = torch.sort(probs, descending=True)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of strictly more likely tokens
    keep_sorted = mass_before < p
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def min_p_mask(probs: torch.Tensor, min_p: float) -> torch.Tensor:
    """True for tokens at least min_p times as likely as the most likely one."""
    return probs >= min_p * probs.max()


def next_token(logits: torch.Tensor, params: SamplingParams, prompt_ids: list[int], generated_ids: list[int],
               allowed: torch.Tensor | None = None, generator: torch.Generator | None = None) -> int:
    """One sequence's next token from its logits (vocab,), after every processing step.

    Prompt and output feed the repetition penalty; `allowed` is a constraint's mask. A NaN logit (from
    a logits_processor, say) is never chosen and +inf ones share the draw; when no token has a logit
    above -inf, ModelRequestError.
    """
    if params.logits_processor is not None:
        logits = params.logits_processor(generated_ids, logits)
    if params.repetition_penalty != 1.0:  # joining prompt and output costs O(length) per token: only when used
        logits = apply_repetition_penalty(logits, prompt_ids + generated_ids, params.repetition_penalty)
    # Each op here passes over the whole vocabulary, once per token: a few, chosen for speed on CPU (torch's
    # argmax over 49,152 logits takes 42 us, numpy's 4; max 5 us, against 38 for comparing and any()).
    logits = logits.float()
    if params.logit_bias:
        logits = logits.index_add(0, torch.tensor(list(params.logit_bias)),
                                  torch.tensor(list(params.logit_bias.values()), dtype=torch.float32))
    logits = torch.nan_to_num(logits, nan=-math.inf, posinf=math.inf, neginf=-math.inf)  # a copy: NaN never chosen
    if allowed is not None:
        logits.masked_fill_(~allowed, -math.inf)
    if not bool(logits.max() > -math.inf):
        raise ModelRequestError("no token can be chosen: every logit is -inf or NaN after the logits_processor, "
                                "logit_bias and constraint")
    if params.temperature < MIN_TEMPERATURE:
        return int(logits.detach().cpu().numpy().argmax())  # the first of equal maxima, as torch.argmax
    logits = logits / params.temperature
    if bool(torch.isposinf(logits).any()):  # infinitely more likely than the rest: they alone share the draw
        logits = torch.where(torch.isposinf(logits), 0.0, -math.inf)
    keep = top_k_mask(logits, params.top_k)
    probs = torch.softmax(logits.masked_fill(~keep, -math.inf), dim=-1)
    keep &= top_p_mask(probs, params.top_p) & min_p_mask(probs, params.min_p)
    probs = torch.softmax(logits.masked_fill(~keep, -math.inf), dim=-1)
    return int(torch.multinomial(probs, num_samples=1, generator=generator))
