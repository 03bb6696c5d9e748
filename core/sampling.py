"""Choosing the next token from logits: argmax at temperature 0, otherwise a seeded draw.

The generation engine issue extends this with top-k / top-p / min-p and penalties; each is a pure
function of the logits so it can be checked against a brute-force reference.
"""

from __future__ import annotations

import math

import torch


def check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")


def sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids (B,) from logits (B, vocab)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
