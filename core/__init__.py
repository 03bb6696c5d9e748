"""llmkit core: our own transformer, its loaders (GGUF, Hugging Face), tokenizer and generation engine; the chat-model
protocol (core.chat) that LLM, RemoteLLM (models behind an OpenAI-compatible server) and ScriptedModel implement;
`load(spec)` gives LLM or RemoteLLM for a --model spec.

The names below are imported on first use (PEP 562), not with the package: most of them import torch (2 s), and
`llmkit search` or `from core import settings` needs none of it."""

import importlib

_HOMES = {
    "core.chat": ("ChatModel", "ChatStream", "ScriptedModel", "ScriptedReply"),
    "core.config": ("ModelConfig",),
    "core.engine": ("Engine", "EngineConfig", "GenerationStream"),
    "core.errors": ("ContextLengthError", "ModelLoadError", "ModelRequestError", "ModelUnavailableError"),
    "core.kv_cache": ("KVCache",),
    "core.llm": ("LLM",),
    "core.model": ("Transformer",),
    "core.remote": ("RemoteLLM", "RemoteStream"),
    "core.resolve": ("load",),
    "core.sampling": ("SamplingParams",),
    "core.tokenizer": ("Tokenizer",),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value  # once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
