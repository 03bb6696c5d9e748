"""Loading a model and its tokenizer from what core.resolve found, with a converted cache for GGUF.

Reading and dequantising a GGUF takes seconds; the converted form (float32 safetensors in our
parameter names + tokenizer.json) loads in a fraction of that. It lives in the "converted" cache
(`core.settings.cache_dir`: versioned, under the user's cache dir or LLMKIT_CACHE), keyed by the GGUF
file's SHA-256, and is written atomically, so a crash mid-write leaves no half cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from core import settings
from core.config import ModelConfig
from core.errors import ModelLoadError
from core.hf import read_hf_config, read_hf_weights
from core.model import Transformer
from core.resolve import resolve_model
from core.tokenizer import Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CACHE = "converted"  # the settings.cache_dir kind
_CONFIG_FILE, _WEIGHTS_FILE = "model_config.json", "weights.safetensors"


def load_model(name: str | None = None, dtype: str = "float32") -> tuple[Transformer, Tokenizer, Path]:
    """(model in eval mode, tokenizer, resolved path) for a model name (see core.resolve).

    `dtype` is what weights and activations are computed in ("float32", "bfloat16", "float16"); norms
    and softmax upcast internally and logits come out in float32 whatever it is.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    path = resolve_model(name)
    if path.is_dir():
        model_type, config = read_hf_config(path)
        try:
            tokenizer = Tokenizer.from_dir(path)
        except FileNotFoundError as error:
            raise ModelLoadError(str(error)) from error
        return build_model(config, read_hf_weights(path, model_type, config), DTYPES[dtype]), tokenizer, path
    converted = settings.cache_dir(CACHE) / _file_digest(path)
    if not (converted / _WEIGHTS_FILE).is_file():
        _convert(path, converted)
    config = ModelConfig.from_dict(json.loads((converted / _CONFIG_FILE).read_text()))
    weights = load_file(converted / _WEIGHTS_FILE)
    return build_model(config, weights, DTYPES[dtype]), Tokenizer.from_dir(converted), path


def build_model(config: ModelConfig, state: dict[str, torch.Tensor], dtype=torch.float32) -> Transformer:
    """A Transformer holding `state` in `dtype`: no random init, and tensors already in `dtype` are not copied."""
    state = {name: value.to(dtype) for name, value in state.items()}
    model = Transformer(config)  # uninitialised; its tensors are replaced, not written, below
    if config.tie_embeddings:
        state.pop("output.weight", None)  # some checkpoints save the tied copy; ours is re-tied below
        state = {**state, "output.weight": state.get("tok_embeddings.weight")}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise ModelLoadError(f"the weights do not fit the model configuration: {error}") from error
    model.tie_weights()
    return model.eval()


def _file_digest(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _convert(gguf_path: Path, target: Path) -> None:
    from core.gguf import read_gguf  # gguf-py (0.1 s of imports) is needed only the first time a file is seen

    config, state, tokenizer = read_gguf(gguf_path)
    if config.tie_embeddings:
        state.pop("output.weight", None)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-"))
    try:
        (staging / _CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=1))
        tokenizer.save(staging)
        save_file({k: v.contiguous() for k, v in state.items()}, staging / _WEIGHTS_FILE,
                  metadata={"source": str(gguf_path), "llmkit_cache_version": str(settings.CACHE_VERSIONS[CACHE])})
        os.replace(staging, target)  # atomic: readers see all of it or none
    except OSError:
        if target.is_dir():  # another process converted the same file first
            shutil.rmtree(staging, ignore_errors=True)
            return
        raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
