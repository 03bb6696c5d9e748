"""Constrained output under a token budget: it always matches when max_new_tokens can hold any match.

A tiny random model writes garbage without end, so every free-text string and array it opens would run past
the budget: the constraint has to close them in time. A budget that cannot hold the shortest match is
refused before a token is generated, with both numbers in the message.
"""

import json
import re

import httpx
import jsonschema
import pytest
import torch

from core import LLM, EngineConfig, SamplingParams
from core.constrain import TokenConstraint
from core.errors import ModelRequestError
from core.loading import load_model
from core.server import create_app

from conftest import save_tiny_checkpoint, serving

NOTE = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "parts": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "n": {"type": "integer"}},
            "required": ["name", "n"],
        }},
    },
    "required": ["title", "tags", "parts"],
}
SHORTEST_NOTE = '{"title": "", "tags": [], "parts": [{"name": "", "n": 0}]}'


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    """A tiny random Llama (its own tokenizer of ~300 tokens, so about a token per character)."""
    directory = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_checkpoint("llama", directory)
    return LLM(*load_model(str(directory))[:2], engine=EngineConfig(max_seq_len=256))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """A tiny model's steps are too short for torch's threads to pay; on a busy machine they cost 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shortest(llm: LLM, text: str) -> int:
    return len(llm.tokenizer.encode(text, add_special_tokens=False))


def sampled(llm: LLM, count: int, prompt="The quick brown fox", **options) -> list[tuple[str, object]]:
    """(text, stream) of `count` generations at temperature 1 with different seeds, submitted together."""
    streams = [llm.stream(prompt, temperature=1.0, seed=seed, **options) for seed in range(count)]
    return [("".join(stream), stream) for stream in streams]


def test_budgeted_json_always_parses_and_validates(tiny_llm):
    least = shortest(tiny_llm, SHORTEST_NOTE)
    for budget in (least, least + 3, least + 10, least + 30):
        results = sampled(tiny_llm, 50, json_schema=NOTE, max_new_tokens=budget)
        for text, stream in results:
            jsonschema.validate(json.loads(text), NOTE)
            assert stream.finish_reason == "stop" and stream.completion_tokens <= budget, text
        # The random model never closes on its own: the budget closed them, and only as late as it had to.
        assert sum(stream.closed_early for _, stream in results) >= 45
        assert max(stream.completion_tokens for _, stream in results) >= budget - 2
    assert any(json.loads(text)["title"] for text, _ in results), "no free text at the largest budget"


def test_an_impossible_budget_is_refused_before_generating(tiny_llm):
    least = shortest(tiny_llm, SHORTEST_NOTE)
    with pytest.raises(ModelRequestError, match=f"budget of {least - 1} tokens .* shortest takes {least} tokens"):
        tiny_llm.stream("The quick brown fox", json_schema=NOTE, max_new_tokens=least - 1)
    with pytest.raises(ModelRequestError, match="budget of 0 tokens"):
        tiny_llm.stream("The quick brown fox", regex=r"[a-z]+", max_new_tokens=0)
    assert not tiny_llm.engine._waiting and not any(tiny_llm.engine.rows), "a refused request was queued"
    # A regex that admits the empty string fits a budget of none.
    assert tiny_llm.generate("The quick brown fox", regex=r"[a-z]*", max_new_tokens=0) == ""


def test_regex_under_a_tight_budget_fully_matches(tiny_llm):
    pattern = r"[a-z]+@[a-z]+\.(com|org)"
    least = shortest(tiny_llm, "a@a.com")
    for text, stream in sampled(tiny_llm, 20, regex=pattern, max_new_tokens=least + 2):
        assert re.fullmatch(pattern, text) and stream.finish_reason == "stop", text


def test_a_regex_that_could_go_on_ends_at_the_budget_complete(tiny_llm):
    """`length`: the budget ran out, yet what was written matches (it could only have grown)."""
    for text, stream in sampled(tiny_llm, 10, regex=r"[a-z]+", max_new_tokens=6, logit_bias={2: -1e4}):
        assert re.fullmatch(r"[a-z]+", text) and stream.finish_reason == "length" and stream.completion_tokens == 6


def test_choices_take_the_one_that_fits(tiny_llm):
    """Only the short choice fits: every sample is it, even where the model starts on the long one."""
    choices = ["cat", "hippopotamus"]
    results = sampled(tiny_llm, 20, choices=choices, max_new_tokens=shortest(tiny_llm, "cat"))
    assert [text for text, _ in results] == ["cat"] * 20
    with pytest.raises(ModelRequestError, match="shortest takes"):
        tiny_llm.stream("x", choices=choices, max_new_tokens=shortest(tiny_llm, "cat") - 1)


def test_engine_and_batch_paths_keep_the_budget(tiny_llm):
    least = shortest(tiny_llm, SHORTEST_NOTE)
    texts = tiny_llm.generate_batch(["The quick", "brown fox", "def", "lazy dog. " * 5], json_schema=NOTE,
                               max_new_tokens=least + 8, temperature=1.0, seed=3)
    for text in texts:
        jsonschema.validate(json.loads(text), NOTE)
    constraint = TokenConstraint.compile(tiny_llm.tokenizer, json_schema=NOTE)
    prompt = tiny_llm.tokenizer.encode("The quick brown fox")
    stream = tiny_llm.engine.submit(prompt, SamplingParams(max_new_tokens=least + 3, temperature=1.0, seed=1),
                               constraint.start())
    jsonschema.validate(json.loads("".join(stream)), NOTE)
    with pytest.raises(ModelRequestError, match="shortest takes"):
        tiny_llm.engine.submit(prompt, SamplingParams(max_new_tokens=least - 1), constraint.start())


def test_a_token_that_leaves_no_room_is_refused_and_the_state_kept(tiny_llm):
    tokenizer = tiny_llm.tokenizer
    least = shortest(tiny_llm, '{"title": "", "tags": []}')
    schema = {"type": "object", "properties": {"title": {"type": "string"}, "tags": {"type": "array"}},
              "required": ["title", "tags"]}
    state = TokenConstraint.compile(tokenizer, json_schema=schema).start()
    state.limit(least + 1)  # room for one character of title
    opening = tokenizer.encode('{"title": "', add_special_tokens=False)
    for token in opening:
        assert state.advance(token)
    letter = tokenizer.encode("x", add_special_tokens=False)
    assert state.advance(letter[0])
    before = state.allowed(tokenizer.vocab_size)
    assert not state.advance(letter[0]), "a second letter leaves no room to close"
    assert state.allowed(tokenizer.vocab_size).equal(before)
    narrowed = state.within_budget(torch.zeros(tokenizer.vocab_size), before)
    assert narrowed.any() and not narrowed[letter[0]]
    assert tokenizer.decode(narrowed.nonzero().flatten().tolist()).startswith('"')
    for token in tokenizer.encode('", "tags": []}', add_special_tokens=False):
        assert state.advance(token)
    assert state.done


def test_server_response_format_keeps_the_budget(tiny_llm):
    least = shortest(tiny_llm, SHORTEST_NOTE)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "A note, please."}], "temperature": 1.0,
            "response_format": {"type": "json_schema", "json_schema": {"name": "note", "schema": NOTE}}}
    with serving(create_app(tiny_llm, "tiny")) as url:
        for seed in range(5):
            reply = httpx.post(url + "/chat/completions", json={**body, "max_tokens": least + 6, "seed": seed},
                               timeout=60)
            assert reply.status_code == 200, reply.text
            choice = reply.json()["choices"][0]
            jsonschema.validate(json.loads(choice["message"]["content"]), NOTE)
            assert choice["finish_reason"] == "stop"
        refused = httpx.post(url + "/chat/completions", json={**body, "max_tokens": least - 1}, timeout=60)
    assert refused.status_code == 400
    assert f"shortest takes {least} tokens" in refused.json()["error"]["message"]


ANSWER = {"type": "object", "properties": {"answer": {"type": "string"}, "sources": {"type": "array",
          "items": {"type": "string"}}}, "required": ["answer", "sources"]}


def test_smollm2_closes_a_long_answer_within_small_budgets(llm):
    """The real model wants to write an essay; budgets a few tokens past the shortest answer still validate."""
    messages = [{"role": "user", "content": "Write a long, detailed essay on the history of Rome, with sources."}]
    least = shortest(llm, '{"answer": "", "sources": []}')
    for budget in (least, least + 4, least + 10, least + 30):
        streams = [llm.stream(messages, json_schema=ANSWER, max_new_tokens=budget, temperature=1.0, seed=seed)
                   for seed in range(10)]
        for stream in streams:
            text = "".join(stream)
            jsonschema.validate(json.loads(text), ANSWER)
            assert stream.finish_reason == "stop" and stream.completion_tokens <= budget, text
    with pytest.raises(ModelRequestError, match=f"budget of {least - 1} tokens .* shortest takes {least} tokens"):
        llm.stream(messages, json_schema=ANSWER, max_new_tokens=least - 1)
