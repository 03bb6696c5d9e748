"""Attention masks from explicit positions: full causal, sliding window, strided sparse.

Masks are computed from the positions of queries and keys rather than from their indices, so the
same function serves a full forward pass and a KV-cached decode step. It does not handle padding;
the generation engine marks padded slots itself.
"""

from __future__ import annotations

import torch

from core.config import ModelConfig


def attention_mask(config: ModelConfig, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """Boolean mask (B, 1, Tq, Tk), True where the query at q_pos (B, Tq) may attend the key at k_pos (B, Tk).

    - causal: every earlier key and itself.
    - sliding: the last `window` positions, itself included (Mistral: q - k < window).
    - strided: the last `window` positions plus every `stride`-th earlier one ((q - k) % stride == 0),
      the fixed pattern of Child et al. (2019), "Generating Long Sequences with Sparse Transformers".
    """
    distance = q_pos[:, :, None] - k_pos[:, None, :]  # (B, Tq, Tk)
    allowed = distance >= 0
    if config.attention == "sliding":
        allowed &= distance < config.window
    elif config.attention == "strided":
        allowed &= (distance < config.window) | (distance % config.stride == 0)
    return allowed[:, None]  # (B, 1, Tq, Tk), broadcast over heads
