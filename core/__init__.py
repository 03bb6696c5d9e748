"""llmkit core: our own transformer, its loaders (GGUF, Hugging Face), tokenizer and generation engine."""

from core.config import ModelConfig
from core.engine import Engine, EngineConfig, GenerationStream
from core.errors import ModelLoadError
from core.kv_cache import KVCache
from core.llm import LLM
from core.model import Transformer
from core.sampling import SamplingParams
from core.tokenizer import Tokenizer

__all__ = ["LLM", "Engine", "EngineConfig", "GenerationStream", "KVCache", "ModelConfig", "ModelLoadError",
           "SamplingParams", "Tokenizer", "Transformer"]
