"""TokenConstraint: whatever SmolLM2 samples under a constraint obeys its choices, regex or JSON schema."""

from __future__ import annotations

import json
import re
from typing import Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

from core import LLM
from core.constrain import TokenConstraint


def generate(llm: LLM, question: str, seeds: list[int | None], temperature: float = 0.8, **spec) -> list[str]:
    """One constrained answer per seed through the public API, all submitted at once so the engine batches them.

    A seed of None is a greedy row; an int seeds that row's sampler at `temperature`.
    """
    messages = [{"role": "user", "content": question}]
    streams = [llm.stream(messages, max_new_tokens=200, temperature=0.0 if seed is None else temperature,
                          seed=seed, **spec) for seed in seeds]
    texts = ["".join(stream) for stream in streams]
    assert all(stream.finish_reason == "stop" for stream in streams), f"ran past 200 tokens: {texts}"
    return texts


def test_choices_output_is_always_one_of_them(llm):
    choices = ["positive", "negative", "neutral"]
    for question in ("Sentiment of: 'I love this movie!'", "Sentiment of: 'The food was cold and late.'",
                     "Is the weather nice today? One word."):
        for text in generate(llm, question, seeds=[None, 1, 2, 3], temperature=1.0, choices=choices):
            assert text in choices


def test_choices_may_contain_quotes_backslashes_and_unicode(llm):
    choices = ['say "hi"', "back\\slash", "naïve ✓"]
    for text in generate(llm, "Pick one.", seeds=[None, 1, 2, 3, 4], temperature=1.0, choices=choices):
        assert text in choices


@pytest.mark.parametrize(("pattern", "question"), [
    (r"\d{4}-\d{2}-\d{2}", "When did the Second World War end? Answer with a date."),
    (r"\(\d{3}\) \d{3}-\d{4}", "Give me a US phone number."),
    (r"[A-Z][a-z]{2,12}( [A-Z][a-z]{2,12})?", "Name a famous scientist."),
])
def test_regex_output_fully_matches(llm, pattern, question):
    for text in generate(llm, question, seeds=[None, 1, 2], temperature=1.0, regex=pattern):
        assert re.fullmatch(pattern, text, re.ASCII), text


def test_regex_digit_class_is_ascii(llm):
    """Rust's Unicode \\d would also admit digits like '🯸', which SmolLM2 picks for a bare date regex."""
    state = TokenConstraint.compile(llm.tokenizer, regex=r"\d").start()
    allowed = state.allowed(llm.tokenizer.vocab_size).nonzero().flatten().tolist()
    assert sorted(llm.tokenizer.decode([i]) for i in allowed) == list("0123456789")


USER = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "role", "active"],
}

# maxLength counts characters, and an emoji is one token per byte: a pattern keeps sampled rows short.
WORDS = "^[A-Za-z][A-Za-z ]*$"
SHOPPING_LIST = {
    "type": "object",
    "properties": {
        "store": {"type": "string", "maxLength": 16, "pattern": WORDS},
        "items": {
            "type": "array",
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 12, "pattern": WORDS},
                               "qty": {"type": "integer", "minimum": 1, "maximum": 20}},
                "required": ["name", "qty"],
            },
        },
    },
    "required": ["store", "items"],
}


class Book(BaseModel):
    title: str = Field(max_length=24)
    year: int = Field(ge=1500, le=2030)
    genres: list[Literal["fiction", "science", "history", "poetry"]] = Field(max_length=2)


@pytest.mark.slow
def test_fifty_json_generations_parse_and_validate(llm):
    cases = [
        (USER, "Describe a user named Alice as JSON."),
        (USER, "Make up a guest account for a teenager."),
        (SHOPPING_LIST, "Write a short shopping list for a picnic as JSON."),
        (Book, "Describe a classic novel as JSON."),
        (Book, "Recommend a book about the history of science."),
    ]
    count = 0
    for case, (schema, question) in enumerate(cases):
        reference = schema.model_json_schema() if isinstance(schema, type) else schema
        seeds = [None] + [100 * case + i for i in range(9)]
        texts = generate(llm, question, seeds=seeds, temperature=0.9, json_schema=schema)
        for text in texts:
            jsonschema.validate(json.loads(text), reference)
            count += 1
        assert len(set(texts)) > 1, f"sampling gave {len(texts)} copies of {texts[0]}"
    assert count == 50


def test_json_is_compact_and_closed(llm):
    """No free whitespace and no keys beyond `properties`: a small model could otherwise run on forever."""
    tokenizer = llm.tokenizer
    state = TokenConstraint.compile(tokenizer, json_schema={"type": "object", "properties": {"a": {"type": "integer"}}}
                                    ).start()
    for token in tokenizer.encode('{"a": 1', add_special_tokens=False):
        state.advance(token)
    allowed = {tokenizer.decode([i]) for i in state.allowed(tokenizer.vocab_size).nonzero().flatten().tolist()}
    assert "}" in allowed and "0" in allowed
    assert not {",", " ", "\n", " }"} & allowed


def test_pydantic_model_gives_the_same_constraint_as_its_schema(llm):
    text = '{"title": "Dune", "year": 1965, "genres": ["fiction"]}'
    for spec in (Book, Book.model_json_schema()):
        state = TokenConstraint.compile(llm.tokenizer, json_schema=spec).start()
        for token in llm.tokenizer.encode(text, add_special_tokens=False):
            state.advance(token)
        assert state.done


@pytest.mark.parametrize(("spec", "message"), [
    ({"json_schema": {"type": "nonsense"}}, "nonsense"),
    ({"json_schema": "not a schema"}, "dict or a Pydantic model"),
    ({"regex": "(unclosed"}, "unclosed group"),
    ({"choices": []}, "non-empty list"),
    ({"choices": "yes"}, "non-empty list"),
    ({"choices": ["yes", ""]}, "non-empty string"),
    ({"choices": ["yes"], "regex": "no"}, "exactly one"),
    ({}, "exactly one"),
])
def test_invalid_specs_raise_value_error(llm, spec, message):
    with pytest.raises(ValueError, match=message):
        TokenConstraint.compile(llm.tokenizer, **spec)


def _eos_allowed(state, vocab_size, stop_ids) -> bool:
    mask = state.allowed(vocab_size)
    return all(mask[i] for i in stop_ids)


def test_eos_allowed_exactly_when_the_output_is_complete(llm):
    tokenizer = llm.tokenizer
    stop_ids = tokenizer.stop_ids
    vocab_size = tokenizer.vocab_size + 64  # a model may pad its vocabulary past the tokenizer's
    # \d+ may grow after any digit: EOS is allowed once there is one, and consuming it makes the state done.
    state = TokenConstraint.compile(tokenizer, regex=r"\d+").start()
    assert not _eos_allowed(state, vocab_size, stop_ids) and not state.done
    for token in tokenizer.encode("2024", add_special_tokens=False):
        assert state.allowed(vocab_size)[token]
        state.advance(token)
        assert _eos_allowed(state, vocab_size, stop_ids) and not state.done
    assert not state.allowed(vocab_size)[tokenizer.vocab_size:].any()
    state.advance(stop_ids[0])
    assert state.done
    # A complete object cannot grow: done without sampling, and only a stop id is still admitted.
    state = TokenConstraint.compile(tokenizer, json_schema=USER).start()
    tokens = tokenizer.encode('{"name": "Bo", "age": 7, "role": "guest", "active": false}', add_special_tokens=False)
    for token in tokens:
        assert not _eos_allowed(state, vocab_size, stop_ids) and not state.done
        state.advance(token)
    assert state.done
    assert state.allowed(vocab_size).nonzero().flatten().tolist() == sorted(stop_ids)
    state.advance(stop_ids[0])
    assert state.done


def test_advance_rejects_a_disallowed_token_and_keeps_the_state(llm):
    tokenizer = llm.tokenizer
    state = TokenConstraint.compile(tokenizer, choices=["yes", "no"]).start()
    for bad in (tokenizer.encode("maybe", add_special_tokens=False)[0], tokenizer.stop_ids[0], tokenizer.vocab_size):
        with pytest.raises(ValueError, match="not allowed"):
            state.advance(bad)
    for token in tokenizer.encode("yes", add_special_tokens=False):
        state.advance(token)
    assert state.done


def test_states_from_one_constraint_are_independent(llm):
    tokenizer = llm.tokenizer
    constraint = TokenConstraint.compile(tokenizer, choices=["yes", "no"])
    first, second = constraint.start(), constraint.start()
    for token in tokenizer.encode("yes", add_special_tokens=False):
        first.advance(token)
    assert first.done and not second.done
    assert second.allowed(tokenizer.vocab_size).equal(constraint.start().allowed(tokenizer.vocab_size))
