"""Tokenizer: text <-> token ids, special tokens and the chat template of one model.

Wraps a `tokenizers.Tokenizer`, built from a `tokenizer.json` or from GGUF metadata (core.gguf).
Whether a BOS token is prepended lives in the backend's post-processor, so `encode` behaves the
same for every source. Does not do incremental (streaming) decoding: core.generate does that.
"""

from __future__ import annotations

import json
from pathlib import Path

import tokenizers

from core.chat_template import render_chat

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


class Tokenizer:
    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        chat_template: str | None,
        special_tokens: dict[str, str | None],
        stop_ids: list[int],
    ):
        self.backend = backend
        self.chat_template = chat_template
        self.special_tokens = special_tokens  # bos_token, eos_token, unk_token, pad_token -> text or None
        self.stop_ids = stop_ids  # generation ends at any of these

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise ValueError("this model has no chat template; pass a raw prompt string instead of messages")
        return render_chat(self.chat_template, messages, add_generation_prompt, **self.special_tokens)

    def save(self, directory: Path) -> None:
        """Write tokenizer.json and tokenizer_config.json, the layout `from_dir` reads back."""
        self.backend.save(str(directory / TOKENIZER_FILE))
        config = {"chat_template": self.chat_template, "stop_ids": self.stop_ids, **self.special_tokens}
        (directory / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, ensure_ascii=False, indent=1))

    @classmethod
    def from_dir(cls, directory: Path) -> Tokenizer:
        """A Hugging Face checkpoint directory (tokenizer.json, tokenizer_config.json, generation_config.json)."""
        path = directory / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: llmkit needs a fast-tokenizer tokenizer.json beside the weights")
        backend = tokenizers.Tokenizer.from_file(str(path))
        config = _read_json(directory / TOKENIZER_CONFIG_FILE)
        special = {name: _token_text(config.get(name)) for name in ("bos_token", "eos_token", "unk_token", "pad_token")}
        template = config.get("chat_template")
        template_file = directory / "chat_template.jinja"
        if template is None and template_file.is_file():
            template = template_file.read_text(encoding="utf-8")
        if isinstance(template, list):  # several named templates: the default one is what chat uses
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        stop_ids = config.get("stop_ids")
        if stop_ids is None:
            eos = _read_json(directory / "generation_config.json").get("eos_token_id")
            stop_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
            if not stop_ids and special["eos_token"] is not None:
                stop_ids = [backend.token_to_id(special["eos_token"])]
        return cls(backend, template, special, [int(i) for i in stop_ids])


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _token_text(value) -> str | None:
    """tokenizer_config.json spells a special token as a string or as {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value
