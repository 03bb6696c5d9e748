"""LLM: the small public API the rest of llmkit and users call to load a model and generate text.

A string is a raw prompt; a list of {"role", "content"} messages goes through the chat template.
`generate` consumes `stream`. The engine issue adds batching, stop strings and constraints here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from core.generate import generate_tokens, stream_text
from core.loading import load_model
from core.model import Transformer
from core.sampling import check_temperature
from core.tokenizer import Tokenizer

Prompt = str | list[dict]


class LLM:
    def __init__(self, model: Transformer, tokenizer: Tokenizer, source: Path | str = "in-memory"):
        self.model = model
        self.tokenizer = tokenizer
        self.source = source

    @classmethod
    def load(cls, name: str | None = None) -> LLM:
        """The embedded SmolLM2 by default; else a .gguf path, a checkpoint directory or a HF model id."""
        model, tokenizer, path = load_model(name)
        return cls(model, tokenizer, path)

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt)
        return self.tokenizer.encode(self.tokenizer.apply_chat_template(prompt), add_special_tokens=False)

    def stream(self, prompt: Prompt, max_new_tokens: int = 256, temperature: float = 0.0,
               seed: int | None = None) -> Iterator[str]:
        """Text deltas of the continuation; greedy at temperature 0, reproducible for a given seed."""
        check_temperature(temperature)
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        ids = generate_tokens(self.model, self.prompt_ids(prompt), max_new_tokens, temperature,
                              tuple(self.tokenizer.stop_ids), generator)
        yield from stream_text(self.tokenizer, ids)

    def generate(self, prompt: Prompt, max_new_tokens: int = 256, temperature: float = 0.0,
                 seed: int | None = None) -> str:
        return "".join(self.stream(prompt, max_new_tokens, temperature, seed))
