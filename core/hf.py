"""Reading Hugging Face checkpoints: config.json -> ModelConfig, safetensors -> our state dict.

Supports LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM and GPT2LMHeadModel without RoPE
scaling. Does not read pickled `.bin` weights (unsafe to load): convert them to safetensors first.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from core.config import ModelConfig
from core.errors import ModelLoadError

LLAMA_FAMILY = ("llama", "mistral", "qwen2")
SUPPORTED_MODEL_TYPES = (*LLAMA_FAMILY, "gpt2")
_GELU = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


def read_hf_config(directory: Path) -> tuple[str, ModelConfig]:
    """(model_type, ModelConfig) from a checkpoint's config.json."""
    hf = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(f"{directory}: model_type {model_type!r} is not supported; "
                             f"supported: {SUPPORTED_MODEL_TYPES}")
    if model_type == "gpt2":
        activation = _GELU.get(hf.get("activation_function", "gelu_new"))
        if activation is None:
            raise ModelLoadError(f"GPT-2 activation {hf['activation_function']!r} is not supported")
        return model_type, ModelConfig(
            dim=hf["n_embd"], n_layers=hf["n_layer"], n_heads=hf["n_head"], n_kv_heads=hf["n_head"],
            ffn_dim=hf.get("n_inner") or 4 * hf["n_embd"], vocab_size=hf["vocab_size"],
            max_seq_len=hf["n_positions"], norm="layernorm", norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            activation=activation, position="learned", qkv_bias=True, proj_bias=True,
            tie_embeddings=hf.get("tie_word_embeddings", True))

    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ModelLoadError(f"{directory}: RoPE scaling {rope!r} is not supported")
    if hf.get("hidden_act", "silu") != "silu" or hf.get("mlp_bias") or hf.get("attention_bias"):
        raise ModelLoadError(f"{directory}: only SwiGLU MLPs without biases and bias-free attention projections "
                             "(Qwen2's q/k/v biases aside) are supported")
    n_heads = hf["num_attention_heads"]
    if hf.get("head_dim", hf["hidden_size"] // n_heads) != hf["hidden_size"] // n_heads:
        raise ModelLoadError(f"{directory}: head_dim != hidden_size / num_attention_heads is not supported")
    window = hf.get("sliding_window") if model_type == "mistral" else None
    if model_type == "qwen2" and hf.get("use_sliding_window"):
        raise ModelLoadError(f"{directory}: Qwen2 with use_sliding_window=true is not supported")
    return model_type, ModelConfig(
        dim=hf["hidden_size"], n_layers=hf["num_hidden_layers"], n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads, ffn_dim=hf["intermediate_size"],
        vocab_size=hf["vocab_size"], max_seq_len=hf.get("max_position_embeddings", 2048),
        norm_eps=hf.get("rms_norm_eps", 1e-6), rope_theta=rope.get("rope_theta", hf.get("rope_theta", 10000.0)),
        qkv_bias=model_type == "qwen2", tie_embeddings=hf.get("tie_word_embeddings", False),
        attention="sliding" if window else "causal", window=window)


def read_hf_weights(directory: Path, model_type: str, config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict from model.safetensors or the shards a model.safetensors.index.json lists."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = [p.name for p in directory.glob("*.safetensors")]
    if not files:
        raise ModelLoadError(f"{directory} has no *.safetensors weights (pickled .bin files are not read)")
    state = {}
    rename = _rename_gpt2 if model_type == "gpt2" else _rename_llama
    for file in files:
        for name, value in load_file(directory / file).items():
            state.update(rename(config, name, value))
    return state


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
