"""RemoteLLM against `llmkit serve` run in this process on a loopback port, over the embedded SmolLM2: the local
LLM's text, streamed; finish reasons and usage; options mapped or refused; choices without guided decoding; model
discovery; errors; cancelling. (tests/test_chat_protocol.py checks what every chat model shares.)"""

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import jsonschema
import pytest

from core import ContextLengthError, ModelRequestError, ModelUnavailableError, RemoteLLM

from conftest import SERVED_MODEL, local_http_server, wait_until_engine_idle

QUESTION = [{"role": "user", "content": "Tell me about Paris."}]  # longer than 16 tokens to answer
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9,"  # goes on for as long as it is allowed to
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def remote(served_url, llm):
    return RemoteLLM(served_url, context_length=llm.context_length, timeout=60)


@pytest.fixture
def closed_url():
    """A loopback port bound but not listening: connecting is refused, and no other process can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"



class CannedEvents(BaseHTTPRequestHandler):
    """Answers any POST with `server.body`, over HTTP/1.0 (no chunking; the end of the stream closes it)."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *args):
        pass


def event(delta: dict, finish_reason=None) -> bytes:
    chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
    return f"data: {json.dumps(chunk)}\r\n\r\n".encode()


# Shapes other servers use: CRLF line ends, a comment line, a role-only first chunk, and no usage report.
OTHER_SERVER = [b": ping\r\n\r\n", event({"role": "assistant"}), event({"content": "Hel"}), event({"content": "lo"}),
                event({}, "stop"), b"data: [DONE]\r\n\r\n"]


def test_a_stream_without_usage_is_read_with_estimated_counts():
    with local_http_server(CannedEvents, body=b"".join(OTHER_SERVER)) as url:
        remote = RemoteLLM(url, model="any")
        stream = remote.stream(QUESTION)
        assert list(stream) == ["Hel", "lo"] and stream.finish_reason == "stop"
        assert (stream.prompt_tokens, stream.completion_tokens) == (remote.count_tokens(QUESTION), 2)


@pytest.mark.parametrize("events, words", [
    (OTHER_SERVER[:3], "ended before the server gave a finish reason"),
    ([*OTHER_SERVER[:3], b'data: {"error": {"message": "out of memory"}}\n\n'], "failed mid-stream: out of memory"),
    ([*OTHER_SERVER[:3], b"data: {not json\n\n"], "not JSON"),
], ids=["truncated", "error event", "garbage"])
def test_a_broken_stream_raises_model_unavailable_after_the_text_so_far(events, words):
    with local_http_server(CannedEvents, body=b"".join(events)) as url:
        stream = RemoteLLM(url, model="any").stream(QUESTION)
        deltas = []
        with pytest.raises(ModelUnavailableError, match=words):
            deltas.extend(stream)
        assert deltas == ["Hel"] and stream.finish_reason == "error"


def test_model_name_is_discovered_from_the_server(remote):
    assert remote.name == SERVED_MODEL


def test_stream_gives_the_local_greedy_text_in_deltas_with_usage(remote, llm):
    local = llm.stream(QUESTION, max_new_tokens=16, temperature=0)
    expected = "".join(local)
    stream = remote.stream(QUESTION, max_new_tokens=16, temperature=0)
    deltas = list(stream)
    assert len(deltas) > 1 and "".join(deltas) == expected
    assert stream.finish_reason == local.finish_reason == "length"  # 16 tokens cannot finish the answer
    assert (stream.prompt_tokens, stream.completion_tokens) == (local.prompt_tokens, 16)


@pytest.mark.parametrize("prompt", [QUESTION, "The capital of France is"], ids=["chat", "text"])
def test_generate_equals_local_greedy_generate(remote, llm, prompt):
    """Messages go through /chat/completions, a string through /completions; both give what the local LLM does."""
    assert remote.generate(prompt, max_new_tokens=16, temperature=0) == llm.generate(prompt, max_new_tokens=16)


def test_sampling_options_reach_the_server(remote, llm):
    """A seed reproduces the local sampled text; a stop string ends the reply before it."""
    options = dict(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    assert remote.generate(QUESTION, **options) == llm.generate(QUESTION, **options)
    stream = remote.stream([{"role": "user", "content": "Count from 1 to 10, comma separated."}], max_new_tokens=32,
                           stop=["5"])
    assert "5" not in "".join(stream) and stream.finish_reason == "stop"


def test_reply_that_ends_its_turn_finishes_with_stop(remote):
    stream = remote.stream([{"role": "user", "content": "Say hello."}], max_new_tokens=200)
    assert "".join(stream).strip() and stream.finish_reason == "stop" and stream.completion_tokens < 200


def test_json_schema_output_parses_and_follows_the_schema(remote):
    schema = {"type": "object", "required": ["city", "population"],
              "properties": {"city": {"type": "string", "maxLength": 16},
                             "population": {"type": "integer", "minimum": 0, "maximum": 10**8}}}
    text = remote.generate([{"role": "user", "content": "Describe Paris as JSON."}], json_schema=schema,
                           max_new_tokens=32)
    jsonschema.validate(json.loads(text), schema)


def test_unreachable_server_raises_model_unavailable_naming_the_url(closed_url):
    with pytest.raises(ModelUnavailableError, match=re.escape(f"cannot reach {closed_url}/models")):
        RemoteLLM(closed_url)
    with pytest.raises(ModelUnavailableError, match=re.escape(f"cannot reach {closed_url}/chat/completions")):
        RemoteLLM(closed_url, model="any").stream(QUESTION)


def test_server_refusal_is_a_model_request_error_with_the_servers_message(served_url, remote):
    with pytest.raises(ModelRequestError, match=f"HTTP 404: .*{SERVED_MODEL}"):
        RemoteLLM(served_url, model="gpt-4o").generate(QUESTION)
    with pytest.raises(ContextLengthError, match="HTTP 400: .*context"):  # over the prompt-character limit
        remote.generate([{"role": "user", "content": "word " * 5000}])


@pytest.mark.parametrize("options, words", [
    ({"top_k": 5}, "top_k"),
    ({"min_p": 0.1}, "min_p"),
    ({"logit_bias": {1: 2.0}}, "logit_bias"),
    ({"logits_processor": lambda ids, logits: logits}, "logits_processor"),
    ({"choices": ["yes", "no"], "regex": "[a-z]+"}, "at most one of"),
    ({"choices": []}, "non-empty list"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools are for chat prompts"),
    ({"temperature": -1}, "temperature"),  # checked as LLM.stream checks it
])
def test_options_the_api_cannot_carry_are_refused_before_sending(closed_url, options, words):
    """A ModelRequestError, not the ModelUnavailableError that sending to a closed port would give."""
    prompt = "text" if "tools" in options else QUESTION
    with pytest.raises(ModelRequestError, match=words):
        RemoteLLM(closed_url, model="any").stream(prompt, **options)
    with pytest.raises(ModelRequestError, match="regex needs a server with guided decoding"):
        RemoteLLM(closed_url, model="any", guided_decoding=False).stream(QUESTION, regex="[a-z]+")


def test_token_id_prompts_are_refused(closed_url):
    with pytest.raises(ModelRequestError, match="token ids cannot be sent"):
        RemoteLLM(closed_url, model="any").stream([1, 2, 3])


def test_choices_without_guided_decoding_go_as_a_json_schema_and_come_back_as_the_choice(served_url, llm):
    """For servers without guided_choice: a response_format object whose one key takes a choice; the text is it."""
    plain = RemoteLLM(served_url, context_length=llm.context_length, guided_decoding=False)
    prompt = [{"role": "user", "content": "Is the sky blue? Answer yes or no."}]
    stream = plain.stream(prompt, choices=["yes", "no"])
    assert "".join(stream) in ("yes", "no") and stream.finish_reason == "stop"


def test_count_tokens_estimate_is_at_least_the_true_count_and_not_far_above(remote, llm):
    """An estimate for prompt budgeting (rag.answer.fit_prompt): a prompt that fits by it fits the server."""
    readme = (ROOT / "README.md").read_text()[:6000]
    code = (ROOT / "core" / "engine.py").read_text()[:6000]
    for prompt in [QUESTION, [{"role": "system", "content": "Answer from the sources."}, {"role": "user", "content":
                   readme}], [{"role": "user", "content": code}], readme]:
        true_count = llm.count_tokens(prompt)
        assert true_count <= remote.count_tokens(prompt) <= 2 * true_count


def test_cancel_from_another_thread_ends_the_read_and_the_generation(remote, llm):
    stream = remote.stream(COUNTING, max_new_tokens=2000)
    deltas, first = [], threading.Event()

    def read():
        for delta in stream:
            deltas.append(delta)
            first.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert first.wait(30)
    stream.cancel()
    reader.join(10)
    assert not reader.is_alive() and stream.finish_reason == "cancelled"
    assert wait_until_engine_idle(llm)


def test_a_reader_that_stops_reading_hangs_up(remote, llm):
    stream = remote.stream(COUNTING, max_new_tokens=2000)
    deltas = iter(stream)
    assert next(deltas)
    deltas.close()
    assert stream.finish_reason == "cancelled"
    assert wait_until_engine_idle(llm)
