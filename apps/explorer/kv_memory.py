"""How much memory a KV cache takes: the bytes `core.kv_cache.KVCache.allocate` holds for a model's shape.

Our cache keeps every layer's keys and values for every slot of the context, 2 x layers x batch x KV heads x
context x head dim elements. Grouped-query attention shrinks it by sharing each KV head among n_heads / n_kv_heads
query heads. A sliding window does not shrink ours (it allocates the whole context and masks the rest); a rolling
cache, which overwrites the slot of the key that left the window, would need only the window's slots, shown as
such.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.config import ModelConfig, ModelConfigError
from core.kv_cache import kv_cache_bytes

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # what our cache holds
MAX_BATCH = 4096


class KVMemoryError(ValueError):
    """A calculator input out of bounds or inconsistent (heads that do not divide); the message says which."""


@dataclass(frozen=True)
class KVShape:
    """A model's attention shape and what is asked of its cache. `window`: a sliding window, or None."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    context: int
    batch: int = 1
    dtype: str = "float32"
    window: int | None = None

    def __post_init__(self):
        for name in ("n_layers", "n_heads", "n_kv_heads", "head_dim", "context", "batch", "window"):
            value = getattr(self, name)
            if (value is not None or name != "window") and (isinstance(value, bool) or not isinstance(value, int)
                                                           or value < 1):
                raise KVMemoryError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.batch > MAX_BATCH:
            raise KVMemoryError(f"batch must be at most {MAX_BATCH}, got {self.batch}")
        if self.dtype not in DTYPES:
            raise KVMemoryError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    def config(self) -> ModelConfig:
        """The ModelConfig of this shape (its feed-forward and vocabulary do not size the cache); KVMemoryError
        naming the field when ModelConfig refuses it (heads that do not divide, sizes past its limits)."""
        sliding = dict(attention="sliding", window=self.window) if self.window is not None else {}
        try:
            return ModelConfig(dim=self.n_heads * self.head_dim, n_layers=self.n_layers, n_heads=self.n_heads,
                               n_kv_heads=self.n_kv_heads, ffn_dim=1, vocab_size=1, max_seq_len=self.context,
                               **sliding)
        except ModelConfigError as error:
            message = str(error).removeprefix("ModelConfig.").replace("max_seq_len", "context")
            raise KVMemoryError(message.replace("dim ", "n_heads x head_dim ", 1) if error.field == "dim"
                                else message) from None


@dataclass(frozen=True)
class KVMemory:
    """Bytes of the cache for a KVShape: `allocated` is what our KVCache holds (k and v together); `mha` the same
    with one KV head per query head; `rolling` what a cache of the window's slots only would need (None without a
    window)."""

    shape: KVShape
    allocated: int
    per_token: int  # per sequence and token of context, all layers
    mha: int
    rolling: int | None


def kv_memory(shape: KVShape) -> KVMemory:
    config = shape.config()
    dtype = DTYPES[shape.dtype]
    allocated = kv_cache_bytes(config, shape.batch, shape.context, dtype)
    mha = kv_cache_bytes(ModelConfig(**{**config.to_dict(), "n_kv_heads": config.n_heads}), shape.batch,
                         shape.context, dtype)
    rolling = kv_cache_bytes(config, shape.batch, min(shape.window, shape.context), dtype) if shape.window else None
    return KVMemory(shape, allocated, kv_cache_bytes(config, 1, 1, dtype), mha, rolling)


def human_bytes(count: int) -> str:
    """1,234,567,890 -> '1.15 GiB' (binary units, as memory is counted)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:,.2f} {unit}"
    return f"{count} bytes"
