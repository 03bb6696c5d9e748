"""ModelConfig: the one description of a transformer that the model, the loaders and the engine share.

Covers the Llama family (Llama, Mistral, Qwen2, SmolLM2) and GPT-2. Loaders translate their own
formats (GGUF metadata, Hugging Face config.json) into this; nothing else reads those formats.
A ModelConfig is checked when it is made (types, bounds, consistency between fields) and
`check_shapes` checks a checkpoint's tensors against it, so a loader can refuse a file before it
allocates anything the file's numbers would size.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Literal

Norm = Literal["rmsnorm", "layernorm"]
Activation = Literal["swiglu", "gelu", "gelu_tanh"]
Position = Literal["rope", "learned"]
AttentionPattern = Literal["causal", "sliding", "strided"]

# Upper bounds on the sizes, a few times the largest open dense models (Llama 3.1 405B: 126 layers, dim 16384,
# ffn 53248, 128 heads; vocabularies up to ~262k; contexts up to ~10M). They stop a hostile header from sizing a
# model its file does not hold before the tensors are even compared.
LIMITS = {"dim": 1 << 16, "n_layers": 1024, "n_heads": 1024, "n_kv_heads": 1024, "ffn_dim": 1 << 20,
          "vocab_size": 1 << 22, "max_seq_len": 1 << 24}


class ModelConfigError(ValueError):
    """A ModelConfig value is of the wrong type, out of bounds, or contradicts another field or the weights.

    `field` is the ModelConfig field at fault, so a loader can name the key of its own format."""

    def __init__(self, field: str, message: str):
        super().__init__(f"ModelConfig.{field} {message}")
        self.field = field


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
        for name, limit in LIMITS.items():
            _check_size(name, getattr(self, name), limit)
        for name in ("norm_eps", "rope_theta"):
            value = getattr(self, name)
            if not _is_number(value) or not (math.isfinite(value) and value > 0):
                raise ModelConfigError(name, f"must be a positive finite number, got {value!r}")
        for name in ("qkv_bias", "proj_bias", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ModelConfigError(name, f"must be true or false, got {getattr(self, name)!r}")
        if self.dim % self.n_heads:
            raise ModelConfigError("n_heads", f"is {self.n_heads}, which does not divide dim {self.dim}")
        if self.n_heads % self.n_kv_heads:
            raise ModelConfigError("n_kv_heads", f"is {self.n_kv_heads}, which does not divide n_heads {self.n_heads}")
        _check_choice("norm", self.norm, Norm)
        _check_choice("activation", self.activation, Activation)
        _check_choice("position", self.position, Position)
        _check_choice("attention", self.attention, AttentionPattern)
        if self.attention in ("sliding", "strided"):
            _check_size("window", self.window, LIMITS["max_seq_len"], f"with attention={self.attention!r}")
        if self.attention == "strided":
            _check_size("stride", self.stride, LIMITS["max_seq_len"], "with attention='strided'")
        if self.position == "rope" and self.head_dim % 2:
            raise ModelConfigError("n_heads", f"is {self.n_heads}, giving an odd head_dim {self.head_dim} (RoPE needs "
                                              "an even one)")

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


def parameter_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter core.model.Transformer(config) holds, by name, with its shape; the tied output omitted.

    Computed, not read off a built model, so a checkpoint can be checked before anything is allocated
    (a test compares it with a built Transformer)."""
    sizes = {**{name: getattr(config, name) for name in LIMITS}, "kv_dim": config.n_kv_heads * config.head_dim}
    return {name: tuple(sizes[axis] for axis in axes) for name, axes in _parameter_axes(config).items()}


def parameter_count(config: ModelConfig) -> int:
    return sum(math.prod(shape) for shape in parameter_shapes(config).values())


def check_shapes(config: ModelConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """Check a checkpoint's tensors (our parameter names -> shapes) against `config`, before they are read.

    ModelConfigError naming the field the tensors contradict (layers, embedding width, heads, vocabulary...);
    ValueError for tensors missing or left over. A tied checkpoint may carry the output copy or not."""
    found = {int(m.group(1)) for name in shapes if (m := _LAYER.match(name))}
    if found != set(range(config.n_layers)):
        held = f"layers 0-{len(found) - 1}" if found == set(range(len(found))) else f"{len(found)} layer indices"
        raise ModelConfigError("n_layers", f"is {config.n_layers}, but the weights hold {held}")
    axes = _parameter_axes(config)
    expected = parameter_shapes(config)
    if config.tie_embeddings:
        shapes = {name: shape for name, shape in shapes.items() if name != "output.weight"}
    elif "output.weight" not in shapes:
        raise ModelConfigError("tie_embeddings", "is false, but the weights have no separate output projection")
    for name, shape in shapes.items():
        if name in expected and tuple(shape) != expected[name]:
            wrong = next((axes[name][i] for i, (a, b) in enumerate(zip(shape, expected[name], strict=False)) if a != b),
                         axes[name][0])  # a different number of dimensions: blame the first
            field = "n_kv_heads" if wrong == "kv_dim" else wrong
            raise ModelConfigError(field, f"is {getattr(config, field)}, but tensor {name} has shape {tuple(shape)}, "
                                          f"not {expected[name]}")
    missing, extra = sorted(expected.keys() - shapes.keys()), sorted(shapes.keys() - expected.keys())
    if missing or extra:
        raise ValueError("the weights do not fit the configuration: "
                         + "; ".join(f"{what} {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
                                     for what, names in (("missing", missing), ("unexpected", extra)) if names))


_LAYER = re.compile(r"layers\.(\d+)\.")


def _parameter_axes(config: ModelConfig) -> dict[str, tuple[str, ...]]:
    """Parameter name -> the size sizing each axis: a ModelConfig field, or "kv_dim" (n_kv_heads x head_dim)."""
    norm = ("weight", "bias") if config.norm == "layernorm" else ("weight",)
    axes = {"tok_embeddings.weight": ("vocab_size", "dim"), **{f"norm.{kind}": ("dim",) for kind in norm}}
    if config.position == "learned":
        axes["pos_embeddings.weight"] = ("max_seq_len", "dim")
    if not config.tie_embeddings:
        axes["output.weight"] = ("vocab_size", "dim")
    ffn = {"w1": ("ffn_dim", "dim"), "w2": ("dim", "ffn_dim")} | ({"w3": ("ffn_dim", "dim")}
                                                                   if config.activation == "swiglu" else {})
    for layer in range(config.n_layers):
        p = f"layers.{layer}."
        for part in ("attn_norm", "ffn_norm"):
            axes |= {f"{p}{part}.{kind}": ("dim",) for kind in norm}
        for part, out in (("wq", "dim"), ("wk", "kv_dim"), ("wv", "kv_dim"), ("wo", "dim")):
            axes[f"{p}attn.{part}.weight"] = (out, "dim")
            if config.proj_bias if part == "wo" else config.qkv_bias:
                axes[f"{p}attn.{part}.bias"] = (out,)
        for part, shape in ffn.items():
            axes[f"{p}ffn.{part}.weight"] = shape
            if config.proj_bias and part != "w3":
                axes[f"{p}ffn.{part}.bias"] = (shape[0],)
    return axes


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_size(name: str, value, limit: int, context: str = "") -> None:
    where = f" {context}" if context else ""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ModelConfigError(name, f"must be a whole number{where}, got {value!r}")
    if not 0 < value <= limit:
        raise ModelConfigError(name, f"must lie in 1..{limit}{where}, got {value}")


def _check_choice(name: str, value: str, choices) -> None:
    allowed = choices.__args__
    if value not in allowed:
        raise ModelConfigError(name, f"must be one of {allowed}, got {value!r}")
