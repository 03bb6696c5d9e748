"""The OpenAI-compatible server as clients see it: the openai client, raw HTTP and LangChain's ChatOpenAI,
over a real socket, against the embedded SmolLM2."""

import json
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest

from conftest import SERVED_MODEL, serving, wait_until_engine_idle

TIMEOUT = 120  # seconds for any one request: a hung request fails its test rather than stalling the run
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(served_url):
    return openai.OpenAI(base_url=served_url, api_key="unused", timeout=TIMEOUT, max_retries=0)


def chat(client, messages=QUESTION, **options):
    return client.chat.completions.create(model=SERVED_MODEL, messages=messages, **{"max_tokens": 8, "temperature": 0,
                                                                              **options})


def post(served_url, path, body, timeout=TIMEOUT, **kwargs):
    return httpx.post(served_url + path, timeout=timeout, **({"json": body} if body is not None else {}), **kwargs)



def test_models_lists_the_served_name(client):
    assert [model.id for model in client.models.list().data] == [SERVED_MODEL]
    assert client.models.retrieve(SERVED_MODEL).id == SERVED_MODEL


def test_chat_completion_has_content_usage_and_finish_reason(client, llm):
    reply = chat(client, max_tokens=4)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == SERVED_MODEL
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason == "length"  # 4 tokens cannot finish the answer
    assert reply.usage.prompt_tokens == len(llm.prompt_ids(QUESTION))
    assert reply.usage.completion_tokens == 4
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 4


def test_chat_stream_joins_to_the_non_streamed_text(client):
    expected = chat(client)
    chunks = list(chat(client, stream=True, stream_options={"include_usage": True}))
    with_choices = [chunk for chunk in chunks if chunk.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in with_choices)
    assert text == expected.choices[0].message.content
    finish_reasons = [chunk.choices[0].finish_reason for chunk in with_choices]
    assert finish_reasons[-1] == expected.choices[0].finish_reason and not any(finish_reasons[:-1])
    assert not chunks[-1].choices and chunks[-1].usage == expected.usage


def test_chat_stops_at_a_stop_string(client):
    reply = chat(client, messages=[{"role": "user", "content": "Count from 1 to 10, comma separated."}],
                 max_tokens=32, stop=["5"])
    assert "5" not in reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"


def test_completions_stream_and_not(client):
    options = dict(model=SERVED_MODEL, prompt="The capital of France is", max_tokens=4, temperature=0)
    reply = client.completions.create(**options)
    assert reply.object == "text_completion" and "Paris" in reply.choices[0].text
    assert reply.usage.completion_tokens == 4
    streamed = "".join(chunk.choices[0].text for chunk in client.completions.create(**options, stream=True))
    assert streamed == reply.choices[0].text


def test_response_format_json_schema_is_followed(client):
    schema = {"type": "object", "required": ["city", "population"],
              "properties": {"city": {"type": "string", "maxLength": 16},
                             "population": {"type": "integer", "minimum": 0, "maximum": 10**8}}}
    reply = chat(client, messages=[{"role": "user", "content": "Describe Paris as JSON."}], max_tokens=32,
                 response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}})
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
    assert reply.choices[0].finish_reason == "stop"


def test_guided_choice_and_regex_are_followed(client):
    """vLLM's guided decoding parameters, sent as OpenAI clients send extra fields."""
    reply = chat(client, messages=[{"role": "user", "content": "Is Paris in France?"}],
                 extra_body={"guided_choice": ["yes", "no"]})
    assert reply.choices[0].message.content in ("yes", "no") and reply.choices[0].finish_reason == "stop"
    reply = chat(client, messages=[{"role": "user", "content": "Give me a phone number."}], max_tokens=16,
                 extra_body={"guided_regex": r"\d{3}-\d{4}"})
    assert re.fullmatch(r"\d{3}-\d{4}", reply.choices[0].message.content)


def test_a_prompt_over_the_context_says_so_in_openais_code(served_url):
    body = {"model": SERVED_MODEL, "messages": [{"role": "user", "content": "word " * 3000}], "max_tokens": 2000}
    error = post(served_url, "/chat/completions", body).json()["error"]  # fits alone, not with max_tokens
    assert error["code"] == "context_length_exceeded" and "lower max_new_tokens" in error["message"]


def test_response_format_json_object_gives_an_object(client):
    reply = chat(client, messages=[{"role": "user", "content": "Give me a JSON object with a name and an age."}],
                 max_tokens=32, response_format={"type": "json_object"})
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_langchain_chat_openai_invoke_and_stream(served_url):
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(base_url=served_url, api_key="unused", model=SERVED_MODEL, temperature=0, max_tokens=8,
                       timeout=TIMEOUT, max_retries=0)
    text = model.invoke("What is the capital of France?").content
    assert text.strip()
    assert "".join(chunk.content for chunk in model.stream("What is the capital of France?")) == text


def test_concurrent_requests_return_what_sequential_ones_do(smollm2_path):
    """Four requests batched together by the engine give the greedy texts they give one at a time: in float32,
    where a batch changes no logit beyond rounding (int4 and bfloat16 round differently in a batch; README, Speed)."""
    from core import LLM
    from core.server import create_app

    with serving(create_app(LLM.load(str(smollm2_path), dtype="float32"), SERVED_MODEL)) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", timeout=TIMEOUT, max_retries=0)
        questions = [[{"role": "user", "content": f"Name a {thing}."}] for thing in ("color", "fruit", "river", "bird")]
        sequential = [chat(client, messages).choices[0].message.content for messages in questions]
        with ThreadPoolExecutor(len(questions)) as pool:
            concurrent = list(pool.map(lambda messages: chat(client, messages).choices[0].message.content, questions))
    assert concurrent == sequential


@pytest.mark.parametrize("body, status, words", [
    ({"temperature": -1}, 400, "temperature"),
    ({"top_p": 0}, 400, "top_p"),
    ({"max_tokens": "many"}, 400, "max_tokens"),
    ({"messages": [{"role": "user", "content": "word " * 9000}]}, 400, "context"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, 400, "role"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "wibble"}}}},
     400, "wibble"),
    ({"response_format": {"type": "xml"}}, 400, "response_format"),
    ({"model": "gpt-4o"}, 404, SERVED_MODEL),
    ({"n": 2}, 400, "not supported"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "not supported"),
    ({"frequency_penalty": 0.5}, 400, "not supported"),
    ({"guided_choice": []}, 400, "choices must be a non-empty list"),
    ({"guided_regex": "("}, 400, "invalid regex"),
    ({"guided_choice": ["a"], "response_format": {"type": "json_object"}}, 400, "exactly one of"),
])
def test_bad_chat_requests_get_a_clear_openai_error(served_url, body, status, words):
    response = post(served_url, "/chat/completions",
                    {"model": SERVED_MODEL, "messages": QUESTION, "max_tokens": 4, **body})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and words in error["message"]


@pytest.mark.parametrize("raw, words", [
    (f'{{"model": "{SERVED_MODEL}", "prompt": "hi", "temperature": NaN}}', "temperature"),  # clients refuse to send NaN
    (f'{{"model": "{SERVED_MODEL}", "prompt": "hi", ', "JSON"),
    (f'{{"model": "{SERVED_MODEL}", "prompt": ["token", "lists"]}}', "prompt"),
])
def test_bad_completion_bodies_get_400(served_url, raw, words):
    response = post(served_url, "/completions", None, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]["message"]


def test_the_openai_client_raises_bad_request_with_the_message(client):
    with pytest.raises(openai.BadRequestError, match="temperature"):
        chat(client, temperature=-0.5)
    with pytest.raises(openai.NotFoundError, match=SERVED_MODEL):
        client.chat.completions.create(model="gpt-4o", messages=QUESTION)


def test_unsupported_route_is_an_openai_error(served_url):
    response = post(served_url, "/embeddings", {"model": SERVED_MODEL, "input": "hi"})
    assert response.status_code == 404 and "error" in response.json()


COUNTING = {"model": SERVED_MODEL, "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9,", "max_tokens": 2000, "temperature": 0}


def test_a_client_leaving_a_stream_ends_its_generation(served_url, llm):
    body = {**COUNTING, "stream": True}
    with httpx.stream("POST", served_url + "/completions", json=body, timeout=TIMEOUT) as response:
        assert next(line for line in response.iter_lines() if line.startswith("data: "))
    assert wait_until_engine_idle(llm)


def test_a_client_leaving_a_non_streamed_request_ends_its_generation(served_url, llm):
    with pytest.raises(httpx.ReadTimeout):
        post(served_url, "/completions", COUNTING, timeout=3)
    assert wait_until_engine_idle(llm)


@pytest.mark.slow  # a process that loads SmolLM2
def test_llmkit_serve_command_serves_until_stopped(tmp_path):
    """`llmkit serve` as a user runs it: a process that answers /v1/models under the chosen name."""
    with socket.socket() as probe:  # a free port; the tiny race with other processes is acceptable here
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(Path(sys.executable).parent / "llmkit"), "serve", "--port", str(port), "--model-name", "tiny"]
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert [model["id"] for model in response.json()["data"]] == ["tiny"]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "serving tiny" in log.read_text()
