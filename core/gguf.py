"""Reading GGUF files (llama.cpp's format): metadata -> ModelConfig, tensors -> our state dict, tokenizer.

Supports the `llama` (Llama, Mistral, SmolLM2), `qwen2` and `gpt2` architectures with byte-level BPE
vocabularies, and the quantisation types in SUPPORTED_TYPES, dequantised to float32 with the `gguf`
package. Parsing a file takes seconds, so core.loading converts it once and caches the result.
Does not support SentencePiece (`tokenizer.ggml.model == "llama"`) vocabularies: use the model's
Hugging Face checkpoint for those.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tokenizers
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import AddedToken, Regex, decoders, pre_tokenizers, processors
from tqdm import tqdm

from core.config import ModelConfig
from core.errors import ModelLoadError
from core.tokenizer import Tokenizer

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "gpt2")
SUPPORTED_TYPES = (
    Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K,
)
TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED = 3, 4

# Pre-tokenizer splits by `tokenizer.ggml.pre`; anything else uses GPT-2's (ByteLevel's own regex).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZER_SPLITS = {"llama3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT}


def read_gguf(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor], Tokenizer]:
    try:
        reader = GGUFReader(path)
    except Exception as error:  # the gguf package raises ValueError, struct.error, IndexError... on bad bytes
        raise ModelLoadError(f"{path} is not a readable GGUF file ({type(error).__name__}: {error}). "
                             "The file may be truncated or corrupt: download it again.") from error
    metadata = {name: field.contents() for name, field in reader.fields.items()}
    tensors = {t.name: t for t in reader.tensors}
    config = gguf_config(metadata, tensors)
    state = {}
    # Shown on a terminal only (disable=None): this runs once per file, then core.loading's cache serves it.
    for name, tensor in tqdm(tensors.items(), desc=f"Converting {path.name} (first load only)", unit="tensor",
                             disable=None):
        state.update(_convert_tensor(config, metadata["general.architecture"], name, _dequantize(path, tensor)))
    return config, state, gguf_tokenizer(metadata)


def gguf_config(metadata: dict, tensors: dict) -> ModelConfig:
    arch = metadata.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelLoadError(f"GGUF architecture {arch!r} is not supported; supported: {SUPPORTED_ARCHITECTURES}")

    def key(name, default=None):
        value = metadata.get(f"{arch}.{name}", default)
        if value is None:
            raise ModelLoadError(f"GGUF metadata lacks {arch}.{name}")
        return value

    n_heads = key("attention.head_count")
    n_kv_heads = key("attention.head_count_kv", n_heads)
    if isinstance(n_kv_heads, list):
        raise ModelLoadError("GGUF files with a per-layer number of KV heads are not supported")
    if metadata.get(f"{arch}.rope.scaling.type", "none") not in ("none", "linear") or "rope_freqs.weight" in tensors:
        raise ModelLoadError("GGUF files with RoPE scaling (e.g. Llama 3.1+ rope_freqs) are not supported")
    common = dict(
        dim=key("embedding_length"),
        n_layers=key("block_count"),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        ffn_dim=key("feed_forward_length"),
        vocab_size=len(metadata["tokenizer.ggml.tokens"]),
        max_seq_len=key("context_length"),
        tie_embeddings="output.weight" not in tensors,
    )
    if arch == "gpt2":
        return ModelConfig(**common, norm="layernorm", norm_eps=key("attention.layer_norm_epsilon"),
                           activation="gelu_tanh", position="learned", qkv_bias=True, proj_bias=True)
    config = ModelConfig(**common, norm_eps=key("attention.layer_norm_rms_epsilon"),
                         rope_theta=key("rope.freq_base", 10000.0), qkv_bias="blk.0.attn_q.bias" in tensors)
    if key("rope.dimension_count", config.head_dim) != config.head_dim:
        raise ModelLoadError("GGUF files with partial rotary embeddings are not supported")
    return config


def _dequantize(path: Path, tensor) -> torch.Tensor:
    if tensor.tensor_type not in SUPPORTED_TYPES:
        names = ", ".join(t.name for t in SUPPORTED_TYPES)
        raise ModelLoadError(f"{path}: tensor {tensor.name} uses quantisation type {tensor.tensor_type.name}, "
                             f"which llmkit does not read. Supported: {names}.")
    # ne0 (the innermost dimension) comes first in GGUF; torch wants it last.
    return dequantize_blocks(tensor.data, tensor.tensor_type, tuple(int(n) for n in reversed(tensor.shape)))


def dequantize_blocks(data: np.ndarray, qtype: Q, shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 tensor of `shape` from raw GGUF data (quantised blocks, or F32/F16/BF16 values)."""
    values = dequantize(data, qtype).reshape(shape)
    return torch.from_numpy(np.array(values, dtype=np.float32))


_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)$")
_GLOBAL = {
    "token_embd": "tok_embeddings", "position_embd": "pos_embeddings", "output_norm": "norm", "output": "output",
}
_LAYER = {
    "attn_norm": "attn_norm", "attn_q": "attn.wq", "attn_k": "attn.wk", "attn_v": "attn.wv",
    "attn_output": "attn.wo", "ffn_norm": "ffn_norm", "ffn_gate": "ffn.w1", "ffn_down": "ffn.w2",
}


def _convert_tensor(config: ModelConfig, arch: str, name: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """One GGUF tensor -> the entries of our state dict it becomes."""
    base, _, kind = name.rpartition(".")
    if base in _GLOBAL:
        return {f"{_GLOBAL[base]}.{kind}": value}
    match = _BLOCK.match(name)
    if not match:
        raise ModelLoadError(f"unexpected tensor {name!r} in a GGUF {arch} file")
    layer, part, kind = match.groups()
    prefix = f"layers.{layer}."
    if part == "attn_qkv":  # GPT-2 stores q, k, v fused along the output dimension
        kv_dim = config.n_kv_heads * config.head_dim
        q, k, v = value.split([config.dim, kv_dim, kv_dim], dim=0)
        return {f"{prefix}attn.wq.{kind}": q, f"{prefix}attn.wk.{kind}": k, f"{prefix}attn.wv.{kind}": v}
    if part == "ffn_up":
        return {f"{prefix}ffn.{'w3' if config.activation == 'swiglu' else 'w1'}.{kind}": value}
    if part not in _LAYER:
        raise ModelLoadError(f"unexpected tensor {name!r} in a GGUF {arch} file")
    if arch == "llama" and part in ("attn_q", "attn_k"):
        value = _unpermute(value, config.n_heads if part == "attn_q" else config.n_kv_heads)
    return {f"{prefix}{_LAYER[part]}.{kind}": value}


def _unpermute(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's conversion, which interleaves each head's rotary halves for its RoPE kernel.

    llama.cpp stores rows of a head as (D/2, 2) pairs; our RoPE (like Hugging Face's) wants (2, D/2).
    """
    rows = weight.shape[0]
    return weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, the alphabet byte-level BPE vocabularies use."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def gguf_tokenizer(metadata: dict) -> Tokenizer:
    """Byte-level BPE from the GGUF vocabulary and merges, built as `transformers` builds it for the same file."""
    kind = metadata.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ModelLoadError(f"GGUF tokenizer type {kind!r} is not supported (only byte-level BPE, 'gpt2'); "
                             "load the model's Hugging Face checkpoint directory instead")
    tokens = metadata["tokenizer.ggml.tokens"]
    token_types = metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    spelling = _bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {}
    for index, token in enumerate(tokens):
        if not set(token) <= alphabet:
            token = "".join(spelling[b] for b in token.encode("utf-8"))
        vocab[token] = index
    merges = [tuple(merge.split(" ")) for merge in metadata["tokenizer.ggml.merges"]]
    backend = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, merges, fuse_unk=False))
    split = PRE_TOKENIZER_SPLITS.get(metadata.get("tokenizer.ggml.pre"))
    if split is None:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(split), behavior="isolated"),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    # A control token spelled outside the byte alphabet is a llama.cpp mislabel; transformers skips those too.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, token_type in zip(tokens, token_types, strict=True)
                                if token_type == TOKEN_TYPE_CONTROL and set(t) <= alphabet])
    backend.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t, token_type in zip(tokens, token_types, strict=True)
                        if token_type == TOKEN_TYPE_USER_DEFINED])

    def token(name):
        token_id = metadata.get(f"tokenizer.ggml.{name}_token_id")
        return tokens[token_id] if token_id is not None else None

    special = {"bos_token": token("bos"), "eos_token": token("eos"), "unk_token": token("unknown"),
               "pad_token": token("padding")}
    bos = special["bos_token"]
    if metadata.get("tokenizer.ggml.add_bos_token", False) and bos is not None:
        bos_id = metadata["tokenizer.ggml.bos_token_id"]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    stop_ids = sorted({metadata[f"tokenizer.ggml.{name}_token_id"] for name in ("eos", "eot")
                       if f"tokenizer.ggml.{name}_token_id" in metadata})
    return Tokenizer(backend, metadata.get("tokenizer.chat_template"), special, stop_ids)
