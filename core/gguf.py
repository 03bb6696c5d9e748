"""Reading GGUF files (llama.cpp's format): metadata -> ModelConfig, tensors -> our state dict, tokenizer.

Supports the `llama` (Llama, Mistral, SmolLM2), `qwen2` and `gpt2` architectures with byte-level BPE
vocabularies, and the quantisation types in SUPPORTED_TYPES, dequantised to float32 with the `gguf`
package. Parsing a file takes seconds, so core.loading converts it once and caches the result.
Does not support SentencePiece (`tokenizer.ggml.model == "llama"`) vocabularies: use the model's
Hugging Face checkpoint for those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tokenizers
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import AddedToken, Regex, decoders, pre_tokenizers, processors
from tqdm import tqdm

from core.config import ModelConfig, ModelConfigError, check_shapes
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


@dataclass
class GGUFFile:
    """A GGUF file whose header is read and checked (metadata, vocabulary and tensor shapes agree); no weight read."""

    path: Path
    architecture: str
    config: ModelConfig
    tokenizer: Tokenizer
    tensors: dict  # name -> gguf ReaderTensor, memory-mapped


def open_gguf(path: Path) -> GGUFFile:
    """Read and check the header: every size the model is built from, against the tensors the file holds.

    Reads metadata and tensor descriptions only, so a hostile header (3 million layers in a 2 KB file) costs
    milliseconds; any malformed value is a ModelLoadError naming the file and the key."""
    try:
        reader = GGUFReader(path)
    except Exception as error:  # the gguf package raises ValueError, struct.error, IndexError... on bad bytes
        raise ModelLoadError(f"{path} is not a readable GGUF file ({type(error).__name__}: {error}). "
                             "The file may be truncated or corrupt: download it again.") from error
    metadata = {name: field.contents() for name, field in reader.fields.items()}
    tensors = {t.name: t for t in reader.tensors}
    try:
        config = gguf_config(metadata, tensors)
        tokenizer = gguf_tokenizer(metadata)
    except ModelLoadError as error:
        raise ModelLoadError(f"{path}: {error}") from error
    return GGUFFile(path, metadata["general.architecture"], config, tokenizer, tensors)


def read_gguf_weights(gguf: GGUFFile) -> dict[str, torch.Tensor]:
    """Our state dict (float32), dequantised from the file `open_gguf` checked."""
    state = {}
    # Shown on a terminal only (disable=None): this runs once per file, then core.loading's cache serves it.
    for name, tensor in tqdm(gguf.tensors.items(), desc=f"Converting {gguf.path.name} (first load only)",
                             unit="tensor", disable=None):
        state.update(_convert_tensor(gguf.config, gguf.architecture, name, _dequantize(gguf.path, tensor)))
    return state


def gguf_config(metadata: dict, tensors: dict) -> ModelConfig:
    """ModelConfig from GGUF metadata, checked against the tensors' names and shapes (nothing is read)."""
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
    eps = "attention.layer_norm_epsilon" if arch == "gpt2" else "attention.layer_norm_rms_epsilon"
    keys = {**{field: f"{arch}.{name}" for field, name in _CONFIG_KEYS.items()}, "norm_eps": f"{arch}.{eps}",
            "vocab_size": "tokenizer.ggml.tokens (its length)"}
    common = dict(
        dim=key("embedding_length"),
        n_layers=key("block_count"),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        ffn_dim=key("feed_forward_length"),
        vocab_size=len(_strings(metadata, "tokenizer.ggml.tokens")),
        max_seq_len=key("context_length"),
        norm_eps=key(eps),
        tie_embeddings="output.weight" not in tensors,
    )
    try:
        if arch == "gpt2":
            config = ModelConfig(**common, norm="layernorm", activation="gelu_tanh", position="learned",
                                 qkv_bias=True, proj_bias=True)
        else:
            config = ModelConfig(**common, rope_theta=key("rope.freq_base", 10000.0),
                                 qkv_bias="blk.0.attn_q.bias" in tensors)
        check_shapes(config, _tensor_shapes(config, arch, tensors))
    except ModelConfigError as error:
        raise ModelLoadError(f"bad {keys.get(error.field, 'metadata')}: {error}") from error
    except ValueError as error:
        raise ModelLoadError(f"the tensors do not fit the metadata: {error}") from error
    if arch != "gpt2" and key("rope.dimension_count", config.head_dim) != config.head_dim:
        raise ModelLoadError("GGUF files with partial rotary embeddings are not supported")
    return config


# ModelConfig field -> its GGUF key after the architecture prefix (vocab_size and norm_eps are set per file).
_CONFIG_KEYS = {"dim": "embedding_length", "n_layers": "block_count", "n_heads": "attention.head_count",
                "n_kv_heads": "attention.head_count_kv", "ffn_dim": "feed_forward_length",
                "max_seq_len": "context_length", "rope_theta": "rope.freq_base"}


def _tensor_shapes(config: ModelConfig, arch: str, tensors: dict) -> dict[str, tuple[int, ...]]:
    """Our parameter names -> shapes, converted on the meta device (the conversion's own checks, no data read);
    ModelLoadError for a quantisation type llmkit does not read."""
    shapes = {}
    for name, tensor in tensors.items():
        if tensor.tensor_type not in SUPPORTED_TYPES:
            names = ", ".join(t.name for t in SUPPORTED_TYPES)
            raise ModelLoadError(f"tensor {name} uses quantisation type {tensor.tensor_type.name}, which llmkit "
                                 f"does not read. Supported: {names}.")
        shape = tuple(int(n) for n in reversed(tensor.shape))  # ne0 (the innermost dimension) comes first in GGUF
        try:
            converted = _convert_tensor(config, arch, name, torch.empty(shape, device="meta"))
        except (RuntimeError, ValueError, OverflowError) as error:
            raise ModelLoadError(f"tensor {name} has shape {shape}, which does not fit the metadata "
                                 f"({type(error).__name__}: {error})") from error
        shapes |= {ours: tuple(value.shape) for ours, value in converted.items()}
    return shapes


def _strings(metadata: dict, key: str) -> list[str]:
    """A required list of strings from the metadata."""
    value = metadata.get(key)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ModelLoadError(f"GGUF key {key} must be a list of strings, got {type(value).__name__}")
    return value


def _dequantize(path: Path, tensor) -> torch.Tensor:
    # ne0 (the innermost dimension) comes first in GGUF; torch wants it last.
    try:
        return dequantize_blocks(tensor.data, tensor.tensor_type, tuple(int(n) for n in reversed(tensor.shape)))
    except ValueError as error:  # data that does not fill its shape's blocks
        raise ModelLoadError(f"{path}: tensor {tensor.name} cannot be dequantised ({error})") from error


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
    tokens = _strings(metadata, "tokenizer.ggml.tokens")
    token_types = metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if not (isinstance(token_types, list) and len(token_types) == len(tokens)
            and all(isinstance(t, int) for t in token_types)):
        raise ModelLoadError(f"GGUF key tokenizer.ggml.token_type must list one integer per token ({len(tokens)})")
    merges = [tuple(merge.split(" ")) for merge in _strings(metadata, "tokenizer.ggml.merges")]
    if bad := next((" ".join(m) for m in merges if len(m) != 2), None):
        raise ModelLoadError(f"GGUF key tokenizer.ggml.merges holds {bad!r}, not two tokens split by a space")
    pre, template = (_optional(metadata, f"tokenizer.{name}", str) for name in ("ggml.pre", "chat_template"))

    def token_id(name):
        value = _optional(metadata, f"tokenizer.ggml.{name}_token_id", int)
        if value is not None and not 0 <= value < len(tokens):
            raise ModelLoadError(f"GGUF key tokenizer.ggml.{name}_token_id is {value}, outside the {len(tokens)} "
                                 "tokens")
        return value

    ids = {name: token_id(name) for name in ("bos", "eos", "unknown", "padding", "eot")}
    special = {f"{ours}_token": tokens[ids[name]] if ids[name] is not None else None
               for ours, name in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding"))}
    try:
        backend = _bpe(tokens, token_types, merges, pre)
        if metadata.get("tokenizer.ggml.add_bos_token", False) and ids["bos"] is not None:
            bos = special["bos_token"]
            backend.post_processor = processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, ids["bos"])])
    except Exception as error:  # the tokenizers library raises plain Exception on a vocabulary it cannot build
        raise ModelLoadError(f"the GGUF vocabulary (tokenizer.ggml.*) cannot be built: {error}") from error
    stop_ids = sorted({ids[name] for name in ("eos", "eot") if ids[name] is not None})
    return Tokenizer(backend, template, special, stop_ids)


def _bpe(tokens: list[str], token_types: list[int], merges: list[tuple], pre: str | None) -> tokenizers.Tokenizer:
    spelling = _bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {}
    for index, token in enumerate(tokens):
        if not set(token) <= alphabet:
            token = "".join(spelling[b] for b in token.encode("utf-8"))
        vocab[token] = index
    backend = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, merges, fuse_unk=False))
    split = PRE_TOKENIZER_SPLITS.get(pre)
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
    return backend


def _optional(metadata: dict, key: str, kind: type):
    """A metadata value of `kind`, or None when absent."""
    value = metadata.get(key)
    if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)):
        raise ModelLoadError(f"GGUF key {key} must be of type {kind.__name__}, got {value!r:.80}")
    return value
