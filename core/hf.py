"""Reading Hugging Face checkpoints: config.json -> ModelConfig, safetensors -> our state dict.

Supports LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM and GPT2LMHeadModel without RoPE
scaling. Does not read pickled `.bin` weights (unsafe to load): convert them to safetensors first.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from core.config import ModelConfig, ModelConfigError, check_shapes
from core.errors import ModelLoadError

LLAMA_FAMILY = ("llama", "mistral", "qwen2")
SUPPORTED_MODEL_TYPES = (*LLAMA_FAMILY, "gpt2")
_GELU = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


def read_hf_config(directory: Path) -> tuple[str, ModelConfig]:
    """(model_type, ModelConfig) from a checkpoint's config.json: every size checked (type, bounds, consistency).

    A missing, mistyped or out-of-range value is a ModelLoadError naming config.json and the key."""
    path = directory / "config.json"
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ModelLoadError(f"{path} cannot be read as JSON ({type(error).__name__}: {error})") from error
    if not isinstance(hf, dict):
        raise ModelLoadError(f"{path} must hold a JSON object, got {type(hf).__name__}")
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(f"{directory}: model_type {model_type!r} is not supported; "
                             f"supported: {SUPPORTED_MODEL_TYPES}")

    def key(name):
        if name not in hf:
            raise ModelLoadError(f"{path} lacks {name!r}, which a {model_type} model needs")
        return hf[name]

    try:
        config = _gpt2_config(path, hf, key) if model_type == "gpt2" else _llama_config(path, hf, key, model_type)
    except ModelConfigError as error:
        raise ModelLoadError(f"{path}: bad {_key(model_type, error)!r}: {error}") from error
    if model_type != "gpt2" and hf.get("head_dim", config.head_dim) != config.head_dim:
        raise ModelLoadError(f"{directory}: head_dim != hidden_size / num_attention_heads is not supported")
    return model_type, config


# ModelConfig field -> its config.json key
_LLAMA_KEYS = {"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
               "n_kv_heads": "num_key_value_heads", "ffn_dim": "intermediate_size", "vocab_size": "vocab_size",
               "max_seq_len": "max_position_embeddings", "norm_eps": "rms_norm_eps", "rope_theta": "rope_theta",
               "tie_embeddings": "tie_word_embeddings", "window": "sliding_window"}
_GPT2_KEYS = {"dim": "n_embd", "n_layers": "n_layer", "n_heads": "n_head", "n_kv_heads": "n_head", "ffn_dim": "n_inner",
              "vocab_size": "vocab_size", "max_seq_len": "n_positions", "norm_eps": "layer_norm_epsilon",
              "tie_embeddings": "tie_word_embeddings"}


def _key(model_type: str, error: ModelConfigError) -> str:
    """The config.json key behind the ModelConfig field `error` names."""
    return (_GPT2_KEYS if model_type == "gpt2" else _LLAMA_KEYS).get(error.field, error.field)


def _gpt2_config(path: Path, hf: dict, key) -> ModelConfig:
    name = hf.get("activation_function", "gelu_new")
    activation = _GELU.get(name) if isinstance(name, str) else None
    if activation is None:
        raise ModelLoadError(f"{path}: GPT-2 activation {name!r} is not supported; supported: {sorted(_GELU)}")
    dim = key("n_embd")
    return ModelConfig(
        dim=dim, n_layers=key("n_layer"), n_heads=key("n_head"), n_kv_heads=key("n_head"),
        ffn_dim=hf.get("n_inner") or (4 * dim if isinstance(dim, int) else dim), vocab_size=key("vocab_size"),
        max_seq_len=key("n_positions"), norm="layernorm", norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        activation=activation, position="learned", qkv_bias=True, proj_bias=True,
        tie_embeddings=hf.get("tie_word_embeddings", True))


def _llama_config(path: Path, hf: dict, key, model_type: str) -> ModelConfig:
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if not isinstance(rope, dict) or rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ModelLoadError(f"{path}: RoPE scaling {rope!r} is not supported")
    if hf.get("hidden_act", "silu") != "silu" or hf.get("mlp_bias") or hf.get("attention_bias"):
        raise ModelLoadError(f"{path}: only SwiGLU MLPs without biases and bias-free attention projections "
                             "(Qwen2's q/k/v biases aside) are supported")
    window = hf.get("sliding_window") if model_type == "mistral" else None
    if model_type == "qwen2" and hf.get("use_sliding_window"):
        raise ModelLoadError(f"{path}: Qwen2 with use_sliding_window=true is not supported")
    n_heads = key("num_attention_heads")
    return ModelConfig(
        dim=key("hidden_size"), n_layers=key("num_hidden_layers"), n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads, ffn_dim=key("intermediate_size"),
        vocab_size=key("vocab_size"), max_seq_len=hf.get("max_position_embeddings", 2048),
        norm_eps=hf.get("rms_norm_eps", 1e-6), rope_theta=rope.get("rope_theta", hf.get("rope_theta", 10000.0)),
        qkv_bias=model_type == "qwen2", tie_embeddings=hf.get("tie_word_embeddings", False),
        attention="sliding" if window else "causal", window=window)


def read_hf_weights(directory: Path, model_type: str, config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict from model.safetensors or the shards a model.safetensors.index.json lists.

    The tensors' names and shapes are checked against `config` from the files' headers before any is read."""
    files = _weight_files(directory)
    rename = _rename_gpt2 if model_type == "gpt2" else _rename_llama
    _check_weight_shapes(files, model_type, config)
    state = {}
    for file in files:
        try:
            tensors = load_file(file)
        except (OSError, SafetensorError) as error:
            raise ModelLoadError(f"{file} is not a readable safetensors file ({error})") from error
        for name, value in tensors.items():
            state.update(rename(config, name, value))
    return state


def _weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ModelLoadError(f"{index} is not a shard index with a weight_map ({error!r})") from error
        if not all(isinstance(name, str) and Path(name).name == name for name in names):
            raise ModelLoadError(f"{index}: every shard must be a file name in {directory}, got {names[:5]}")
        return [directory / name for name in names]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{directory} has no *.safetensors weights (pickled .bin files are not read)")
    return files


def _check_weight_shapes(files: list[Path], model_type: str, config: ModelConfig) -> None:
    """Rename every tensor as loading will, on the meta device from the headers' shapes, and check them all."""
    rename = _rename_gpt2 if model_type == "gpt2" else _rename_llama
    shapes = {}
    for file in files:
        try:
            with safe_open(file, "pt") as handle:
                found = {name: handle.get_slice(name).get_shape() for name in handle.keys()}  # noqa: SIM118 (no __iter__)
        except (OSError, SafetensorError) as error:
            raise ModelLoadError(f"{file} is not a readable safetensors file ({error})") from error
        for name, shape in found.items():
            try:
                renamed = rename(config, name, torch.empty(shape, device="meta"))
            except (RuntimeError, ValueError) as error:
                raise ModelLoadError(f"{file}: tensor {name} has shape {tuple(shape)}, which does not fit "
                                     f"config.json ({error})") from error
            shapes |= {ours: tuple(value.shape) for ours, value in renamed.items()}
    directory = files[0].parent
    try:
        check_shapes(config, shapes)
    except ModelConfigError as error:
        raise ModelLoadError(f"{directory}: the weights do not fit config.json's {_key(model_type, error)!r}: "
                             f"{error}") from error
    except ValueError as error:
        raise ModelLoadError(f"{directory}: the weights do not fit config.json: {error}") from error


_LLAMA_LAYER = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn.wq", "self_attn.k_proj": "attn.wk", "self_attn.v_proj": "attn.wv",
    "self_attn.o_proj": "attn.wo", "mlp.gate_proj": "ffn.w1", "mlp.up_proj": "ffn.w3", "mlp.down_proj": "ffn.w2",
}
_LLAMA_GLOBAL = {"model.embed_tokens": "tok_embeddings", "model.norm": "norm", "lm_head": "output"}
_LAYER_NAME = re.compile(r"(?:model\.layers|h)\.(\d+)\.(.+)\.(weight|bias)$")


def _rename_llama(config: ModelConfig, name: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    if name.endswith("rotary_emb.inv_freq"):
        return {}
    base, _, kind = name.rpartition(".")
    if base in _LLAMA_GLOBAL:
        return {f"{_LLAMA_GLOBAL[base]}.{kind}": value}
    match = _LAYER_NAME.match(name)
    if not match or match.group(2) not in _LLAMA_LAYER:
        raise ModelLoadError(f"unexpected tensor {name!r} in the checkpoint")
    layer, part, kind = match.groups()
    return {f"layers.{layer}.{_LLAMA_LAYER[part]}.{kind}": value}


_GPT2_GLOBAL = {"wte": "tok_embeddings", "wpe": "pos_embeddings", "ln_f": "norm", "lm_head": "output"}
# GPT-2's Conv1D layers store weights as (in, out); nn.Linear wants (out, in).
_GPT2_LAYER = {"ln_1": "attn_norm", "ln_2": "ffn_norm", "attn.c_proj": "attn.wo", "mlp.c_fc": "ffn.w1",
               "mlp.c_proj": "ffn.w2"}
_GPT2_CONV1D = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}


def _rename_gpt2(config: ModelConfig, name: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    name = name.removeprefix("transformer.")
    if name.endswith(("attn.bias", "attn.masked_bias")) and not name.endswith("c_attn.bias"):
        return {}  # old checkpoints saved the causal mask buffers
    base, _, kind = name.rpartition(".")
    if base in _GPT2_GLOBAL:
        return {f"{_GPT2_GLOBAL[base]}.{kind}": value}
    match = _LAYER_NAME.match(name)
    if not match:
        raise ModelLoadError(f"unexpected tensor {name!r} in the checkpoint")
    layer, part, kind = match.groups()
    if part in _GPT2_CONV1D and kind == "weight":
        value = value.t()
    prefix = f"layers.{layer}."
    if part == "attn.c_attn":
        q, k, v = value.split(config.dim, dim=0)
        return {f"{prefix}attn.wq.{kind}": q, f"{prefix}attn.wk.{kind}": k, f"{prefix}attn.wv.{kind}": v}
    if part not in _GPT2_LAYER:
        raise ModelLoadError(f"unexpected tensor {name!r} in the checkpoint")
    return {f"{prefix}{_GPT2_LAYER[part]}.{kind}": value}
