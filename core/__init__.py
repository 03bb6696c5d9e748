"""llmkit core: our own transformer, its loaders (GGUF, Hugging Face), tokenizer and generation engine; the chat-model
protocol (core.chat) that LLM, RemoteLLM (models behind an OpenAI-compatible server) and ScriptedModel implement;
`load(spec)` gives LLM or RemoteLLM for a --model spec.

The names below are imported on first use (core.lazy), not with the package: most of them import torch (2 s), and
`llmkit search` or `from core import settings` needs none of it."""

from core.lazy import lazy_exports

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

__all__, __getattr__, __dir__ = lazy_exports("core", _HOMES, globals())
