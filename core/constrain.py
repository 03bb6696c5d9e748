"""Constrained decoding: a per-token mask that forces output into a set of strings, a regex or a JSON schema.

Built on llguidance, which turns each spec into a grammar and computes, from a token trie of the
vocabulary, which tokens may come next. The tokenizer side is converted once per `Tokenizer` and the
grammar once per `TokenConstraint.compile`; a sequence then pays only for its mask and its step.

Does not touch logits or sample: the engine applies `ConstraintState.allowed` itself. Does not bound
free text: a JSON string without `maxLength` (or a regex like `.*`) ends only where the engine's
`max_new_tokens` does.
"""

from __future__ import annotations

import json
import weakref
from typing import Any

import llguidance
import numpy as np
import torch

from core.json_schema import check_supported, map_schema
from core.tokenizer import Tokenizer

# Compact, one-line JSON: with flexible whitespace a small model can emit newlines forever. The
# separators match json.dumps, the spelling models have seen most. A schema's own "x-guidance" wins.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

_LL_TOKENIZERS: weakref.WeakKeyDictionary[Tokenizer, llguidance.LLTokenizer] = weakref.WeakKeyDictionary()


def _ll_tokenizer(tokenizer: Tokenizer) -> llguidance.LLTokenizer:
    """The llguidance view of `tokenizer` (token bytes, trie, EOS ids); ~0.25 s to build, so cached."""
    ll = _LL_TOKENIZERS.get(tokenizer)
    if ll is None:
        ll = llguidance.LLTokenizer(tokenizer.backend.to_str(), n_vocab=tokenizer.vocab_size,
                                    eos_token=list(tokenizer.stop_ids))
        _LL_TOKENIZERS[tokenizer] = ll
    return ll


class TokenConstraint:
    """A compiled spec, shared by every sequence that must follow it; `start` gives one matcher per sequence."""

    def __init__(self, tokenizer: Tokenizer, matcher: llguidance.LLMatcher, description: str):
        self.tokenizer = tokenizer
        self.description = description
        self._matcher = matcher  # never advanced: a template that `start` copies

    @classmethod
    def compile(cls, tokenizer: Tokenizer, *, json_schema: dict | type | None = None,
                choices: list[str] | None = None, regex: str | None = None) -> TokenConstraint:
        """Exactly one of the three. Raises ValueError with a clear message for an invalid schema/regex/empty choices.

        `json_schema` is a dict or a Pydantic model class; objects that do not say otherwise get
        `additionalProperties: false` so the model cannot add keys without end. `regex` uses Rust
        `regex` syntax with an ASCII `\\d`, and must match the whole output.
        """
        given = [name for name, value in (("json_schema", json_schema), ("choices", choices), ("regex", regex))
                 if value is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of json_schema, choices, regex; got {given or 'none'}")
        if json_schema is not None:
            schema = _schema_dict(json_schema)
            check_supported(schema)
            grammar = llguidance.LLMatcher.grammar_from_json_schema(map_schema(schema, _closed), defaults=JSON_OPTIONS)
            description = f"JSON schema {json.dumps(schema)[:200]}"
        elif choices is not None:
            grammar = llguidance.LLMatcher.grammar_from_lark(_choices_lark(choices))
            description = f"choices {choices!r}"
        else:
            if not isinstance(regex, str):
                raise ValueError(f"regex must be a string, got {type(regex).__name__}")
            # \d means [0-9]: in Rust's Unicode syntax it also admits digits like '🯸', and models use them.
            grammar = llguidance.LLMatcher.grammar_from_lark(f"start: /{llguidance.regex_to_lark(regex, 'd')}/")
            description = f"regex {regex!r}"
        # llguidance reports a bad grammar as an error state, not an exception; building it is the check.
        matcher = llguidance.LLMatcher(_ll_tokenizer(tokenizer), grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(f"invalid {description}: {matcher.get_error()}")
        return cls(tokenizer, matcher, description)

    def start(self) -> ConstraintState:
        """A fresh matcher for one sequence; copying the template shares the compiled grammar."""
        return ConstraintState(self._matcher.deep_copy(), self.tokenizer, self.description)


class ConstraintState:
    """Where one sequence stands in its constraint. Not thread-safe; one per sequence."""

    def __init__(self, matcher: llguidance.LLMatcher, tokenizer: Tokenizer, description: str):
        self._matcher = matcher
        self._n_tokens = tokenizer.vocab_size  # ids past the tokenizer's vocabulary are never allowed
        self._stop_ids = frozenset(tokenizer.stop_ids)
        self._description = description

    def allowed(self, vocab_size: int) -> torch.Tensor:
        """Bool (vocab_size,), True = allowed next; the stop ids are allowed exactly when the output is complete."""
        assert vocab_size >= self._n_tokens, f"model vocab {vocab_size} < tokenizer vocab {self._n_tokens}"
        words = self._matcher.compute_bitmask()  # one bit per token, little-endian within each byte
        if self._matcher.is_error():  # a parser resource limit, not a bad token: advance checks those
            raise RuntimeError(f"constraint {self._description} failed: {self._matcher.get_error()}")
        # numpy, not torch: these ops stay single-threaded, so a busy core cannot stall them (torch's can).
        mask = np.zeros(vocab_size, dtype=np.bool_)
        bits = np.unpackbits(np.frombuffer(words, dtype=np.uint8), bitorder="little")  # (32 * ceil(n / 32),)
        mask[:self._n_tokens] = bits[:self._n_tokens].view(np.bool_)
        return torch.from_numpy(mask)

    def advance(self, token_id: int) -> None:
        """Consume the sampled token; one the mask did not allow raises ValueError and leaves the state as it was."""
        if self._matcher.is_stopped():  # complete and cannot grow: llguidance admits only a stop id, as a no-op
            ok = token_id in self._stop_ids
        else:
            ok = 0 <= token_id < self._n_tokens and self._matcher.try_consume_tokens([token_id]) == 1
        if not ok:
            raise ValueError(f"token {token_id} is not allowed here by the constraint {self._description}")

    @property
    def done(self) -> bool:
        """True when nothing more may be generated: a stop id was consumed, or the output is complete and cannot grow.

        In the second case the engine stops without sampling; the only token `allowed` still admits is a stop id.
        """
        return self._matcher.is_stopped()


def _schema_dict(json_schema: Any) -> dict:
    if isinstance(json_schema, type) and hasattr(json_schema, "model_json_schema"):
        return json_schema.model_json_schema()
    if not isinstance(json_schema, dict):
        raise ValueError(f"json_schema must be a dict or a Pydantic model class, got {type(json_schema).__name__}")
    return json_schema


def _closed(node: dict) -> dict:
    """`node`, forbidding extra keys if it lists properties and says neither additionalProperties nor patternProperties.

    The result is stricter than the input, so whatever it admits still validates against the original.
    An `allOf` of partial objects would turn contradictory: such schemas should say additionalProperties.
    """
    if "properties" in node and "additionalProperties" not in node and "patternProperties" not in node:
        node["additionalProperties"] = False
    return node


def _choices_lark(choices: Any) -> str:
    """`start: "a" | "b"`: a JSON string literal is also a valid Lark one (quotes and backslashes escaped)."""
    if isinstance(choices, str) or not choices:
        raise ValueError(f"choices must be a non-empty list of strings, got {choices!r}")
    if not all(isinstance(choice, str) and choice for choice in choices):
        raise ValueError(f"every choice must be a non-empty string, got {choices!r}")
    return "start: " + " | ".join(json.dumps(choice, ensure_ascii=False) for choice in choices)
