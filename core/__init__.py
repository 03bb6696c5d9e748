"""llmkit core: our own transformer, its loaders (GGUF, Hugging Face), tokenizer and generation engine; RemoteLLM for
models behind an OpenAI-compatible server; `load(spec)` gives either for a --model spec."""

from core.config import ModelConfig
from core.engine import Engine, EngineConfig, GenerationStream
from core.errors import ModelLoadError
from core.kv_cache import KVCache
from core.llm import LLM
from core.model import Transformer
from core.remote import RemoteLLM, RemoteStream
from core.resolve import load
from core.sampling import SamplingParams
from core.tokenizer import Tokenizer

__all__ = ["LLM", "Engine", "EngineConfig", "GenerationStream", "KVCache", "ModelConfig", "ModelLoadError",
           "RemoteLLM", "RemoteStream", "SamplingParams", "Tokenizer", "Transformer", "load"]
