"""KVCache: preallocated keys and values for every layer, passed into `Transformer.forward`.

Slot i of a batch row holds the token at position i, so a step writes at its tokens' positions and
attends over slots 0..max(position). Rows of one cache may sit at different positions: the causal
mask hides every slot past a row's own position, so stale slots from an earlier sequence are never
read. What to keep, evict or share between requests is the engine's business, not this object's.
"""

from __future__ import annotations

import torch

from core.config import ModelConfig


def kv_cache_bytes(config: ModelConfig, batch_size: int, max_len: int, dtype=torch.float32) -> int:
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * config.n_layers * batch_size * config.n_kv_heads * max_len * config.head_dim * element


class KVCache:
    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k = k  # (L, B, Hkv, S, D)
        self.v = v
        self.max_len = k.shape[3]

    @classmethod
    def allocate(cls, config: ModelConfig, batch_size: int, max_len: int, dtype=torch.float32, device=None,
                 written: bool = False):
        """Zeros, not empty: a masked slot still meets the softmax as 0 * value, and garbage could be NaN.
        `written`: the caller writes every slot before any is read, so the memory is left as it is (zeroing a
        batch of long prompts' caches cost a fifth of `LLM.score`)."""
        shape = (config.n_layers, batch_size, config.n_kv_heads, max_len, config.head_dim)
        make = torch.empty if written else torch.zeros
        return cls(make(shape, dtype=dtype, device=device), make(shape, dtype=dtype, device=device))

    def rows(self, start: int, stop: int) -> KVCache:
        """A view of rows [start, stop): writes through it land in this cache."""
        return KVCache(self.k[:, start:stop], self.v[:, start:stop])

    def update(self, layer: int, positions: torch.Tensor, length: int, k: torch.Tensor, v: torch.Tensor):
        """Write k, v (B, Hkv, T, D) at positions (B, T), the last of which is length - 1; return slots [0, length)
        of this layer (B, Hkv, S, D)."""
        if positions.shape[0] == 1:  # one sequence: its slots along one dimension, in one op each
            self.k[layer].index_copy_(2, positions[0], k)
            self.v[layer].index_copy_(2, positions[0], v)
        else:
            rows = torch.arange(k.shape[0], device=k.device)[:, None].expand_as(positions)  # (B, T)
            self.k[layer][rows, :, positions] = k.transpose(1, 2)  # indexed view is (B, T, Hkv, D)
            self.v[layer][rows, :, positions] = v.transpose(1, 2)
        return self.k[layer, :, :, :length], self.v[layer, :, :, :length]
