"""Loading a model and its tokenizer from what core.resolve found, with a converted cache for GGUF.

Nothing is allocated for a model before its file is checked: the loaders (core.gguf, core.hf) check every
size in the header or config.json against the tensors the file holds, and `check_memory` checks what the
model will take against the memory budget (`core.settings.memory_budget`). A malformed file is a
ModelLoadError naming the file and the field.

Reading and dequantising a GGUF takes seconds; the converted form (float32 safetensors in our
parameter names + tokenizer.json) loads in a fraction of that. It lives in the "converted" cache
(`core.settings.cache_dir`: versioned, under the user's cache dir or LLMKIT_CACHE), keyed by the GGUF
file's SHA-256 (remembered under the file's stat, so an unchanged file is not hashed again), written and checked
by core.disk_cache: a truncated or altered entry is rebuilt. The int4
representation (core.quant) has a cache of its own, "int4", built from the converted form and keyed also
by torch's version (the packed layout is torch's): loading it reads 180 MB for SmolLM2, not 540, and never
holds a float32 copy of the weights.

dtype "auto" (the default) is the fastest representation that keeps the model's own weights: int4 for a
GGUF whose linear layers are 4-bit (Q4_0, Q4_1) on a CPU with bfloat16 instructions, else float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from core import disk_cache, quant, settings
from core.config import ModelConfig, parameter_count
from core.engine import EngineConfig
from core.errors import ModelLoadError
from core.hf import read_hf_config, read_hf_weights
from core.kv_cache import kv_cache_bytes
from core.model import Transformer
from core.resolve import resolve_model
from core.tokenizer import Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
REPRESENTATIONS = ("auto", "int4", *DTYPES)  # what `load_model(dtype=...)` takes
CACHE, INT4_CACHE = "converted", "int4"  # the settings.cache_dir kinds
_CONFIG_FILE, _WEIGHTS_FILE = "model_config.json", "weights.safetensors"
DIGESTS_FILE, MAX_DIGESTS = "gguf-digests-v1.json", 256  # beside the caches: see _file_digest
_SHA256 = re.compile("[0-9a-f]{64}")
MiB = 2**20


def load_model(name: str | None = None, dtype: str = "auto") -> tuple[Transformer, Tokenizer, Path]:
    """(model in eval mode, tokenizer, resolved path) for a model name (see core.resolve).

    `dtype`: "float32", "bfloat16" or "float16" computes weights and activations in that type (norms and
    softmax upcast, logits come out in float32); "int4" is core.quant's representation (4-bit linear
    layers, bfloat16 activations), lossless for a Q4_0 / Q4_1 GGUF and a rounding of anything else;
    "auto" picks int4 where it is lossless and the CPU runs it fast, else float32.
    """
    if dtype not in REPRESENTATIONS:
        raise ValueError(f"dtype must be one of {', '.join(REPRESENTATIONS)}, got {dtype!r}")
    path = resolve_model(name)
    if path.is_dir():
        model_type, config = read_hf_config(path)
        check_memory(path, config, DTYPES.get(dtype, torch.float32))
        try:
            tokenizer = Tokenizer.from_dir(path)
        except FileNotFoundError as error:
            raise ModelLoadError(str(error)) from error
        except Exception as error:  # the tokenizers library raises plain Exception on a file it cannot parse
            raise ModelLoadError(f"{path}: the tokenizer files cannot be read "
                                 f"({type(error).__name__}: {error})") from error
        model = build_model(config, read_hf_weights(path, model_type, config), DTYPES.get(dtype, torch.float32))
        if dtype == "int4":  # a checkpoint's weights are rarely 4-bit, so "auto" keeps them in float32
            quant.to_int4(model)
        return model, tokenizer, path
    digest = _file_digest(path)
    converted = disk_cache.ensure(settings.cache_dir(CACHE) / digest, lambda staging: _convert(path, staging))
    config = ModelConfig.from_dict(json.loads((converted / _CONFIG_FILE).read_text()))
    if dtype == "int4" or (dtype == "auto" and quant.bfloat16_kernels()):
        check_memory(path, config, torch.float16)  # a bound: 4-bit layers, int8 output table, its bfloat16 copy
        packed = disk_cache.ensure(settings.cache_dir(INT4_CACHE) / f"{digest}-torch-{torch.__version__}",
                                   lambda staging: _pack(converted, staging))
        with safe_open(packed / _WEIGHTS_FILE, "pt") as file:
            if dtype == "int4" or file.metadata()["exact"] == "true":
                names = file.keys()  # a safetensors file: no dict to iterate
                state = {name: file.get_tensor(name) for name in names}
                return _assign(quant.int4_skeleton(Transformer(config)), state), Tokenizer.from_dir(converted), path
        dtype = "float32"  # its layers are not 4-bit: int4 would round them
    dtype = "float32" if dtype == "auto" else dtype
    check_memory(path, config, torch.float32)  # the cache holds float32, read whole before the cast to `dtype`
    weights = load_file(converted / _WEIGHTS_FILE)
    return build_model(config, weights, DTYPES[dtype]), Tokenizer.from_dir(converted), path


def check_memory(path: Path, config: ModelConfig, dtype: torch.dtype) -> None:
    """ModelLoadError when the model's weights in `dtype` plus a KV cache for one sequence at the engine's default
    context exceed the memory budget; checked before anything is allocated."""
    budget = settings.memory_budget()
    context = min(config.max_seq_len, EngineConfig().max_seq_len)
    parameters = parameter_count(config)
    needed = parameters * torch.empty((), dtype=dtype).element_size() + kv_cache_bytes(config, 1, context, dtype)
    if budget is not None and needed > budget:
        raise ModelLoadError(
            f"{path}: loading this model takes about {needed / MiB:,.0f} MiB ({parameters:,} parameters in "
            f"{str(dtype).removeprefix('torch.')} and a KV cache for {context} tokens), over the memory budget of "
            f"{budget / MiB:,.0f} MiB. Use a smaller model, or set {settings.MEMORY_BUDGET} (default: 3/4 of "
            "the physical memory) if the machine can hold it.")


def build_model(config: ModelConfig, state: dict[str, torch.Tensor], dtype=torch.float32) -> Transformer:
    """A Transformer holding `state` in `dtype`: no random init, and tensors already in `dtype` are not copied."""
    state = {name: value.to(dtype) for name, value in state.items()}
    return _assign(Transformer(config), state)  # uninitialised; its tensors are replaced, not written


def _assign(model: Transformer, state: dict[str, torch.Tensor]) -> Transformer:
    """`model` (eval mode) holding `state`'s tensors, no copy; it must take every one. A tied checkpoint's output
    table is its embedding table (some save the tied copy too; ours is re-tied)."""
    if model.config.tie_embeddings and "tok_embeddings.weight" in state:  # the int4 form ties its own way
        state = {**state, "output.weight": state["tok_embeddings.weight"]}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise ModelLoadError(f"the weights do not fit the model configuration: {error}") from error
    model.tie_weights()
    return model.eval()


def _file_digest(path: Path) -> str:
    """The file's SHA-256, remembered under its identity and stat (DIGESTS_FILE): hashing SmolLM2's 100 MB GGUF
    took 0.07 s of every start. Any write to the file, or a file renamed over it, changes its ctime (which no
    user can set back) or its inode, and so hashes it again."""
    stat = path.stat()
    identity = [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]
    memo_path = settings.cache_dir(CACHE).parent / DIGESTS_FILE
    key = str(path.resolve())
    try:
        memo = json.loads(memo_path.read_text())
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):  # none yet, or unreadable: it only saves time
        memo = {}
    known = memo.get(key)
    if isinstance(known, list) and known[:-1] == identity and _SHA256.fullmatch(str(known[-1])):
        return known[-1]  # a folder name below: only ever 64 hex digits
    with path.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    memo.pop(key, None)
    memo[key] = [*identity, digest]
    memo = dict(list(memo.items())[-MAX_DIGESTS:])  # the most recently hashed files
    staging = memo_path.with_name(f"{DIGESTS_FILE}.{os.getpid()}.{threading.get_ident()}")
    try:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        staging.write_text(json.dumps(memo))
        os.replace(staging, memo_path)  # whole or not at all, whoever writes last
    except OSError:  # a read-only cache: hash at every start
        with contextlib.suppress(OSError):
            staging.unlink()
    return digest


def _convert(gguf_path: Path, staging: Path) -> None:
    """Write the converted form of a GGUF file into `staging` (core.disk_cache publishes it)."""
    from core.gguf import open_gguf, read_gguf_weights  # gguf-py (0.1 s of imports): only when a file is new

    gguf = open_gguf(gguf_path)
    check_memory(gguf_path, gguf.config, torch.float32)  # dequantising makes every weight float32
    state = read_gguf_weights(gguf)
    if gguf.config.tie_embeddings:
        state.pop("output.weight", None)
    (staging / _CONFIG_FILE).write_text(json.dumps(gguf.config.to_dict(), indent=1))
    gguf.tokenizer.save(staging)
    save_file({k: v.contiguous() for k, v in state.items()}, staging / _WEIGHTS_FILE,
              metadata={"source": str(gguf_path), "llmkit_cache_version": str(settings.CACHE_VERSIONS[CACHE])})


def _pack(converted: Path, staging: Path) -> None:
    """Write the int4 form of a converted entry into `staging`: the state dict of core.quant's representation
    (a tied table saved once, as the output projection's), and whether it is lossless."""
    config = ModelConfig.from_dict(json.loads((converted / _CONFIG_FILE).read_text()))
    model = build_model(config, load_file(converted / _WEIGHTS_FILE))
    exact = quant.to_int4(model)
    state = model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, staging / _WEIGHTS_FILE,
              metadata={"exact": str(exact).lower(), "torch": torch.__version__,
                        "llmkit_cache_version": str(settings.CACHE_VERSIONS[INT4_CACHE])})
