"""llmkit core: our own transformer, its loaders (GGUF, Hugging Face), tokenizer and generation engine; the chat-model
protocol (core.chat) that LLM, RemoteLLM (models behind an OpenAI-compatible server) and ScriptedModel implement;
`load(spec)` gives LLM or RemoteLLM for a --model spec."""

from core.chat import ChatModel, ChatStream, ScriptedModel, ScriptedReply
from core.config import ModelConfig
from core.engine import Engine, EngineConfig, GenerationStream
from core.errors import ContextLengthError, ModelLoadError, ModelRequestError, ModelUnavailableError
from core.kv_cache import KVCache
from core.llm import LLM
from core.model import Transformer
from core.remote import RemoteLLM, RemoteStream
from core.resolve import load
from core.sampling import SamplingParams
from core.tokenizer import Tokenizer

__all__ = ["LLM", "ChatModel", "ChatStream", "ContextLengthError", "Engine", "EngineConfig", "GenerationStream",
           "KVCache", "ModelConfig", "ModelLoadError", "ModelRequestError", "ModelUnavailableError", "RemoteLLM",
           "RemoteStream", "SamplingParams", "ScriptedModel", "ScriptedReply", "Tokenizer", "Transformer", "load"]
