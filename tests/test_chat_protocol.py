"""The chat-model protocol (core.chat.ChatModel), checked alike on its three implementations: core.LLM (the embedded
SmolLM2), core.RemoteLLM against `llmkit serve` of that model on loopback, and ScriptedModel.

A test takes `chat`, which makes the model under test: `chat(*script)` gives the ScriptedModel of that script and
the real models as they are, so each test scripts what the fake says where a real model would say it. The fake
does not enforce constraints, so the constraint tests skip it.
"""

import json
import re
import socket
import threading

import jsonschema
import pytest

from core import (
    ChatModel,
    ChatStream,
    ContextLengthError,
    ModelRequestError,
    ModelUnavailableError,
    RemoteLLM,
    ScriptedModel,
    ScriptedReply,
)

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9,"  # a model goes on counting for as long as it may
CITY = {"type": "object", "required": ["city", "population"],
        "properties": {"city": {"type": "string", "maxLength": 16},
                       "population": {"type": "integer", "minimum": 0, "maximum": 10**8}}}
PROSE = ("The engine admits waiting requests into free rows of the cache, prefills each one, and then decodes a "
         "token for every active row at once, so many readers share one step.")


# The real-model kinds are fetched by name inside `chat`, where conftest's marking hook cannot see them.
@pytest.fixture(params=[pytest.param("llm", marks=pytest.mark.slow), pytest.param("remote", marks=pytest.mark.slow),
                        "scripted"])
def kind(request):
    return request.param


@pytest.fixture
def chat(kind, request):
    if kind == "scripted":
        return lambda *script: ScriptedModel(script, context_length=4096)
    llm = request.getfixturevalue("llm")
    if kind == "llm":
        return lambda *script: llm
    remote = RemoteLLM(request.getfixturevalue("served_url"), context_length=llm.context_length, timeout=60)
    return lambda *script: remote


def test_each_is_a_chat_model_and_gives_chat_streams(chat):
    model = chat("Paris.")
    assert isinstance(model, ChatModel) and model.name and model.context_length > 0
    stream = model.stream(QUESTION, max_new_tokens=2)
    assert isinstance(stream, ChatStream) and stream.finish_reason is None  # nothing read yet
    assert "".join(stream) and stream.finish_reason in ("stop", "length")


def test_count_tokens_is_the_prompt_count_the_model_reports(chat, kind):
    """Exact for LLM and the fake; for RemoteLLM an estimate at least the server's count, for prose."""
    model = chat("a", "b")
    user = {"role": "user", "content": PROSE}
    for short, longer in [(PROSE, PROSE * 3), ([user], [{"role": "system", "content": PROSE}, user])]:
        counted = model.count_tokens(short)
        assert 0 < counted < model.count_tokens(longer)
        stream = model.stream(short, max_new_tokens=1)
        "".join(stream)
        if kind == "remote":
            assert stream.prompt_tokens <= counted <= 2 * stream.prompt_tokens
        else:
            assert stream.prompt_tokens == counted


def test_stream_deltas_join_to_the_text_generate_gives(chat):
    model = chat("Paris is the capital of France.", "Paris is the capital of France.")
    deltas = list(model.stream(QUESTION, max_new_tokens=12))
    assert len(deltas) > 1 and "".join(deltas) == model.generate(QUESTION, max_new_tokens=12)


def test_finish_reasons_and_token_counts(chat, kind):
    model = chat(ScriptedReply("10, 11, 12, 13,", finish_reason="length"), "Hello! How can I help?")
    stream = model.stream(COUNTING, max_new_tokens=4)
    "".join(stream)
    assert (stream.finish_reason, stream.completion_tokens) == ("length", 4)
    assert stream.prompt_tokens > 0
    stream = model.stream([{"role": "user", "content": "Say hello."}], max_new_tokens=100)
    assert "".join(stream).strip() and stream.finish_reason == "stop" and 0 < stream.completion_tokens < 100


def test_generate_batch_gives_one_reply_per_prompt_in_order(chat):
    model = chat("Blue.", "An apple.", "The Nile.", "Blue.", "An apple.", "The Nile.")
    prompts = [[{"role": "user", "content": f"Name a {thing}."}] for thing in ("color", "fruit", "river")]
    batch = model.generate_batch(prompts, max_new_tokens=8)
    assert batch == [model.generate(prompt, max_new_tokens=8) for prompt in prompts]
    assert len(set(batch)) > 1
    assert model.generate_batch([], max_new_tokens=8) == []


@pytest.mark.parametrize("constraint, obeys", [
    ({"json_schema": CITY}, lambda text: jsonschema.validate(json.loads(text), CITY) is None),
    ({"choices": ["yes", "no", "maybe"]}, lambda text: text in ("yes", "no", "maybe")),
    ({"regex": r"\d{3}-\d{4}"}, lambda text: re.fullmatch(r"\d{3}-\d{4}", text) is not None),
], ids=["json_schema", "choices", "regex"])
def test_constrained_output_obeys_the_constraint(chat, kind, constraint, obeys):
    if kind == "scripted":
        pytest.skip("ScriptedModel gives what it is scripted to, to test what an unconstrained model might say")
    model = chat()
    prompt = [{"role": "user", "content": "Describe Paris as JSON, then say whether it is big, and a phone number."}]
    stream = model.stream(prompt, max_new_tokens=40, **constraint)
    text = "".join(stream)
    assert obeys(text), text
    assert stream.finish_reason == "stop"  # a complete constrained output ends the reply


def test_a_prompt_over_the_context_is_a_context_length_error(chat):
    model = chat()
    with pytest.raises(ContextLengthError):
        model.generate("word " * (model.context_length + 10), max_new_tokens=1)
    half = [{"role": "user", "content": "word " * (model.context_length // 2)}]
    with pytest.raises(ContextLengthError):  # the prompt fits, but not with the output asked for
        model.generate(half, max_new_tokens=model.context_length // 2 + 50)
    with pytest.raises(ValueError):  # what callers of the old API caught
        model.generate(half, max_new_tokens=model.context_length // 2 + 50)


def test_an_invalid_option_is_a_model_request_error(chat, kind):
    model = chat()
    with pytest.raises(ModelRequestError, match="temperature"):
        model.stream(QUESTION, temperature=-1)
    with pytest.raises(ModelRequestError, match="max_new_tokens"):
        model.stream(QUESTION, max_new_tokens=-5)
    if kind != "scripted":  # the fake does not look at constraints
        with pytest.raises(ModelRequestError):
            model.stream(QUESTION, choices=["a"], regex="b")
        with pytest.raises(ModelRequestError):
            model.stream(QUESTION, regex="(")


def test_cancel_from_another_thread_ends_the_reply(chat):
    model = chat(" ".join(str(n) for n in range(10, 70)))
    stream = model.stream(COUNTING, max_new_tokens=60)
    deltas = iter(stream)
    assert next(deltas)
    canceller = threading.Thread(target=stream.cancel)
    canceller.start()
    canceller.join()
    rest = list(deltas)
    assert stream.finish_reason == "cancelled" and len(rest) < 59


def test_a_server_that_is_down_is_model_unavailable():
    with socket.socket() as sock:  # bound, not listening: connecting is refused
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        with pytest.raises(ModelUnavailableError, match="cannot reach"):
            RemoteLLM(url)
        with pytest.raises(ModelUnavailableError, match="cannot reach"):
            RemoteLLM(url, model="m").generate(QUESTION)
        with pytest.raises(ConnectionError):  # what callers of the old API caught
            RemoteLLM(url, model="m").generate_batch([QUESTION, QUESTION])
