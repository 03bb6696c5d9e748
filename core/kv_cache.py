"""KVCache: preallocated keys and values for every layer, passed into `Transformer.forward`.

Slot i of a batch row holds the token at position i, so a step writes at its tokens' positions and
attends over slots 0..max(position). What to keep, evict or share between requests is the
generation engine's business, not this object's.
"""

from __future__ import annotations

import torch

from core.config import ModelConfig


class KVCache:
    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, dtype=torch.float32, device=None):
        shape = (config.n_layers, batch_size, config.n_kv_heads, max_len, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, Hkv, S, D)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len

    def update(self, layer: int, positions: torch.Tensor, length: int, k: torch.Tensor, v: torch.Tensor):
        """Write k, v (B, Hkv, T, D) at positions (B, T); return slots [0, length) of this layer (B, Hkv, S, D)."""
        rows = torch.arange(k.shape[0], device=k.device)[:, None].expand_as(positions)  # (B, T)
        self.k[layer][rows, :, positions] = k.transpose(1, 2)  # indexed view is (B, T, Hkv, D)
        self.v[layer][rows, :, positions] = v.transpose(1, 2)
        return self.k[layer, :, :, :length], self.v[layer, :, :, :length]
