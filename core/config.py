"""ModelConfig: the one description of a transformer that the model, the loaders and the engine share.

Covers the Llama family (Llama, Mistral, Qwen2, SmolLM2) and GPT-2. Loaders translate their own
formats (GGUF metadata, Hugging Face config.json) into this; nothing else reads those formats.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal

Norm = Literal["rmsnorm", "layernorm"]
Activation = Literal["swiglu", "gelu", "gelu_tanh"]
Position = Literal["rope", "learned"]
AttentionPattern = Literal["causal", "sliding", "strided"]


@dataclass
class ModelConfig:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int
    max_seq_len: int = 2048
    norm: Norm = "rmsnorm"
    norm_eps: float = 1e-5
    activation: Activation = "swiglu"
    position: Position = "rope"
    rope_theta: float = 10000.0
    qkv_bias: bool = False  # Qwen2: biases on the q/k/v projections only
    proj_bias: bool = False  # GPT-2: biases on the attention output and both MLP projections too
    tie_embeddings: bool = False
    attention: AttentionPattern = "causal"
    window: int | None = None  # sliding / strided: the last `window` tokens are always visible
    stride: int | None = None  # strided: plus every `stride`-th earlier token

    def __post_init__(self):
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        _check_choice("norm", self.norm, Norm)
        _check_choice("activation", self.activation, Activation)
        _check_choice("position", self.position, Position)
        _check_choice("attention", self.attention, AttentionPattern)
        if self.attention in ("sliding", "strided") and not (self.window and self.window > 0):
            raise ValueError(f"attention={self.attention!r} needs a positive window, got {self.window}")
        if self.attention == "strided" and not (self.stride and self.stride > 0):
            raise ValueError(f"attention='strided' needs a positive stride, got {self.stride}")
        if self.position == "rope" and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**values)


def _check_choice(name: str, value: str, choices) -> None:
    allowed = choices.__args__
    if value not in allowed:
        raise ValueError(f"ModelConfig.{name} must be one of {allowed}, got {value!r}")
