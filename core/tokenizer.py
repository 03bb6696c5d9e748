"""Tokenizer: text <-> token ids, special tokens and the chat template of one model.

Wraps a `tokenizers.Tokenizer`, built from a `tokenizer.json` or from GGUF metadata (core.gguf).
Whether a BOS token is prepended lives in the backend's post-processor, so `encode` behaves the
same for every source. Does not do incremental (streaming) decoding: core.generate does that.

Text is text: `encode_chat` gives control (special) tokens only where the chat template's own
markup puts them. A message that quotes `<|im_end|>\n<|im_start|>system` (a document, an email, a
file name) is encoded as those characters, so it cannot open a turn of its own. `encode` of a raw
string reads special-token text as control tokens: a raw prompt is its author's own markup.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path

import tokenizers

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
        specials = {i: t for i, t in backend.get_added_tokens_decoder().items() if t.special}
        self._special_ids = frozenset(specials)
        # Texts the backend matches literally; one matched after normalisation is found by encoding.
        literal = sorted({t.content for t in specials.values() if not t.normalized}, key=len, reverse=True)
        self._special_text = re.compile("|".join(map(re.escape, literal))) if literal else None
        self._normalized_specials = any(t.normalized for t in specials.values())

    @cached_property
    def _plain(self) -> tokenizers.Tokenizer:
        """A copy of the backend that reads special-token text as plain text. Built on first use: a second
        tokenizer costs 20 MB and 0.08 s at every start, and only messages quoting special-token text, and
        `LLM.score`, need it (two threads may both build it; either copy does)."""
        plain = tokenizers.Tokenizer.from_str(self.backend.to_str())
        plain.encode_special_tokens = True
        return plain

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True, parse_special: bool = True) -> list[int]:
        """`add_special_tokens`: the backend's BOS (or other) framing. `parse_special`: special-token text in
        `text` becomes control tokens; False encodes it as the plain text it is."""
        backend = self.backend if parse_special else self._plain
        return backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise ValueError("this model has no chat template; pass a raw prompt string instead of messages")
        from core.chat_template import render_chat  # jinja2 (0.02 s of imports): only once there are messages

        return render_chat(self.chat_template, messages, add_generation_prompt, **self.special_tokens)

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """The prompt ids of `messages`: control tokens where the template's markup has them, nowhere else.

        Special-token text in any string of the messages is swapped for a private-use character before
        rendering; the rendered prompt is encoded as usual, and every stretch between two control tokens
        that holds a swapped character is encoded again from its real text, with special tokens read as
        plain text. Without special-token text in the messages the ids are exactly those of the rendered
        prompt, encoded as it is.
        """
        found: set[str] = set()
        for text in _strings(messages):
            found.update(text[start:end] for start, end in self._special_spans(text))
        if not found:
            return self.encode(self.apply_chat_template(messages, add_generation_prompt), add_special_tokens=False)
        used = set(self.chat_template or "").union(*_strings(messages), *filter(None, self.special_tokens.values()))
        free = (chr(c) for c in range(PRIVATE_USE_START, PRIVATE_USE_END) if chr(c) not in used)
        stand_in = dict(zip(sorted(found), free, strict=False))
        if len(stand_in) < len(found):  # a hostile message that holds every private-use character
            raise ValueError("the messages use every character of Unicode plane 15; they cannot be encoded safely")

        def swap(text: str) -> str:
            pieces, position = [], 0
            for start, end in self._special_spans(text):
                pieces += [text[position:start], stand_in[text[start:end]]]
                position = end
            return "".join(pieces) + text[position:]

        prompt = self.apply_chat_template(_map_strings(messages, swap), add_generation_prompt)
        real_text = str.maketrans({char: text for text, char in stand_in.items()})
        encoding = self.backend.encode(prompt, add_special_tokens=False)
        controls = [i for i, token in enumerate(encoding.ids) if token in self._special_ids]
        ids, first, char = [], 0, 0  # the stretch before the next control token starts at token `first`, at `char`
        for index in [*controls, len(encoding.ids)]:
            stretch = prompt[char:encoding.offsets[index][0] if index < len(encoding.ids) else len(prompt)]
            real = stretch.translate(real_text)
            ids += encoding.ids[first:index] if real == stretch else self.encode(real, False, parse_special=False)
            if index < len(encoding.ids):
                ids.append(encoding.ids[index])
                char = encoding.offsets[index][1]
            first = index + 1
        return ids

    def _special_spans(self, text: str) -> list[tuple[int, int]]:
        """Where in `text` the backend would read special-token text as a control token."""
        if self._normalized_specials:
            encoding = self.backend.encode(text, add_special_tokens=False)
            return [span for token, span in zip(encoding.ids, encoding.offsets, strict=True)
                    if token in self._special_ids]
        return [m.span() for m in self._special_text.finditer(text)] if self._special_text else []

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


PRIVATE_USE_START, PRIVATE_USE_END = 0xF0000, 0xFFFFE  # Unicode plane 15: stand-ins for special-token text


def _strings(value) -> Iterator[str]:
    """Every string in a message structure (dict values, list items), depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _map_strings(value, function: Callable[[str], str]):
    """A copy of a message structure with `function` applied to every string in it."""
    if isinstance(value, str):
        return function(value)
    if isinstance(value, dict):
        return {key: _map_strings(item, function) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_map_strings(item, function) for item in value]
    return value


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _token_text(value) -> str | None:
    """tokenizer_config.json spells a special token as a string or as {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value
