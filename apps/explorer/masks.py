"""The attention patterns side by side, for one sequence length: which keys each query may attend.

Causal, sliding window and strided come from `core.attention.attention_mask`, the function the model runs, so the
picture is the model's own rule. The fixed sparse pattern of Child et al. (2019) is not one the model runs (no
`ModelConfig.attention` names it): it is computed here from the paper's definition, to compare with the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.attention import attention_mask
from core.config import ModelConfig

MAX_LENGTH = 128  # queries (and keys) of a mask view: a larger grid is unreadable on a screen


class MaskError(ValueError):
    """A mask setting out of bounds; the message names it and the bound."""


@dataclass(frozen=True)
class MaskSettings:
    """`window`: the sliding and strided patterns' recent keys; `stride`: the strided pattern's step, and the fixed
    pattern's block length; `summary`: the fixed pattern's summary keys at the end of each block."""

    length: int = 24
    window: int = 4
    stride: int = 6
    summary: int = 1

    def __post_init__(self):
        for name, high in (("length", MAX_LENGTH), ("window", MAX_LENGTH), ("stride", MAX_LENGTH),
                           ("summary", self.stride)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise MaskError(f"{name} must be a whole number from 1 to {high}, got {value!r}")


def fixed_sparse_mask(length: int, block: int, summary: int) -> torch.Tensor:
    """(length, length) bool, True where query i may attend key j <= i: j in i's own block (j // block == i // block),
    or j one of the last `summary` positions of a block (j % block >= block - summary), which carry each block's
    summary forward. Child et al. (2019), "Generating Long Sequences with Sparse Transformers", section 4.2."""
    i, j = torch.arange(length)[:, None], torch.arange(length)[None, :]
    return (j <= i) & ((j // block == i // block) | (j % block >= block - summary))


def mask_views(settings: MaskSettings) -> dict[str, torch.Tensor]:
    """Title -> (length, length) bool mask, True where the query (row) may attend the key (column)."""
    s = settings
    positions = torch.arange(s.length)[None]  # (1, T): a prefill from position 0
    base = dict(dim=8, n_layers=1, n_heads=1, n_kv_heads=1, ffn_dim=8, vocab_size=1, max_seq_len=s.length)
    configs = {"causal": ModelConfig(**base),
               f"sliding window (window {s.window})": ModelConfig(**base, attention="sliding", window=s.window),
               f"strided (window {s.window}, stride {s.stride})": ModelConfig(**base, attention="strided",
                                                                              window=s.window, stride=s.stride)}
    views = {title: attention_mask(config, positions, positions)[0, 0] for title, config in configs.items()}
    views[f"fixed sparse (block {s.stride}, summary {s.summary})"] = fixed_sparse_mask(s.length, s.stride, s.summary)
    return views
