"""llmkit core: our own transformer, its loaders (GGUF, Hugging Face), tokenizer and generation API."""

from core.config import ModelConfig
from core.errors import ModelLoadError
from core.kv_cache import KVCache
from core.llm import LLM
from core.model import Transformer
from core.tokenizer import Tokenizer

__all__ = ["LLM", "KVCache", "ModelConfig", "ModelLoadError", "Tokenizer", "Transformer"]
