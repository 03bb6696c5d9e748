"""What agents add to chat models, without a model: message conversion, and native tool calling (NativeToolsLLM)
against a stand-in server that streams tool calls as vLLM and OpenAI do, with core's errors for its failures."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agents import Agent, NativeToolsLLM, ScriptedModel, tool
from agents.backends import is_step_schema, native_messages, native_tools, plain_messages
from core import ContextLengthError, ModelRequestError, ModelUnavailableError, RemoteLLM


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


MESSAGES = [
    {"role": "system", "content": "sys"},
    {"role": "user", "content": "2 + 3?"},
    {"role": "assistant", "content": '{"tool": "add", "arguments": {"a": 2, "b": 3}}'},
    {"role": "tool", "name": "add", "content": "5"},
    {"role": "assistant", "content": "garbage"},
    {"role": "tool", "name": None, "content": "Error: the reply is not a JSON object"},
    {"role": "assistant", "content": '{"tool": "final_answer", "arguments": {"answer": "5"}}'},
]


def test_plain_messages_turn_tool_results_into_user_turns():
    plain = plain_messages(MESSAGES)
    assert [m["role"] for m in plain] == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert plain[3]["content"] == "Result of add: 5"
    assert plain[5]["content"] == "Error: the reply is not a JSON object"
    assert all(set(m) == {"role", "content"} for m in plain)


def test_native_messages_pair_each_call_with_its_result():
    """From the plain messages the agent sends every model, as plain_messages wrote them."""
    native = native_messages(plain_messages(MESSAGES))
    call = native[2]
    assert call["content"] is None and call["tool_calls"][0]["function"] == {"name": "add",
                                                                            "arguments": '{"a": 2, "b": 3}'}
    assert native[3] == {"role": "tool", "tool_call_id": call["tool_calls"][0]["id"], "content": "5"}
    assert native[4] == {"role": "assistant", "content": "garbage"}
    assert native[5] == {"role": "user", "content": "Error: the reply is not a JSON object"}  # answers no call
    assert native[6]["content"].startswith('{"tool": "final_answer"')


def test_native_tools_come_from_the_step_schema():
    schema = Agent(ScriptedModel([]), [add]).schema
    tools = native_tools(schema)
    assert [t["function"]["name"] for t in tools] == ["add", "final_answer"]
    assert tools[0]["function"]["description"] == "Add two integers."
    assert tools[0]["function"]["parameters"]["required"] == ["a", "b"]
    assert is_step_schema(schema) and not is_step_schema({"type": "object"}) and not is_step_schema(None)


class StandIn(BaseHTTPRequestHandler):
    """Answers each POST with the next of `replies`: (200, [chunks]) as server-sent events, (status, body) as JSON;
    keeps each request's path, Authorization header and body."""

    replies: list = []
    bodies: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append((self.path, self.headers.get("Authorization"), body))
        status, reply = type(self).replies.pop(0)
        data = (b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in reply) + b"data: [DONE]\n\n"
                if status == 200 else json.dumps(reply).encode())
        self.send_response(status)
        self.send_header("Content-Type", "text/event-stream" if status == 200 else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    StandIn.replies, StandIn.bodies = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def chunk(delta, finish=None):
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7}}


def test_native_tool_calling_round_trip(stand_in):
    """The call streams in pieces (id and name, then the arguments in two parts); the agent sees its JSON step."""
    StandIn.replies = [
        (200, [chunk({"role": "assistant", "tool_calls": [
                   {"index": 0, "id": "x", "type": "function", "function": {"name": "add", "arguments": ""}}]}),
               chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 2, '}}]}),
               chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"b": 3}'}}]}),
               chunk({}, "tool_calls"), USAGE]),
        (200, [chunk({"role": "assistant", "content": "It is "}), chunk({"content": "5."}), chunk({}, "stop")]),
    ]
    model = NativeToolsLLM(stand_in, "big-model", api_key="k")
    result = Agent(model, [add]).run("2 + 3?")
    assert result.answer == "It is 5." and result.steps[0].observation == "5"
    first = result.steps[0]
    assert (first.prompt_tokens, first.completion_tokens, first.finish_reason) == (11, 7, "stop")
    path, auth, body = StandIn.bodies[0]
    assert path == "/v1/chat/completions" and auth == "Bearer k"
    assert body["tool_choice"] == "required" and "response_format" not in body and body["temperature"] == 0
    assert [t["function"]["name"] for t in body["tools"]] == ["add", "final_answer"]
    second = StandIn.bodies[1][2]["messages"]
    assert second[-1] == {"role": "tool", "tool_call_id": "call_2", "content": "5"}
    assert second[-2]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}


def test_requests_without_a_step_schema_go_as_remote_llm_sends_them(stand_in):
    StandIn.replies = [(200, [chunk({"content": '{"x": 1}'}, "stop")])]
    model = NativeToolsLLM(stand_in, "m")
    assert model.generate([{"role": "user", "content": "hi"}], json_schema={"type": "object"}) == '{"x": 1}'
    body = StandIn.bodies[0][2]
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"} and "tools" not in body


@pytest.mark.parametrize("kind", [RemoteLLM, NativeToolsLLM])
@pytest.mark.parametrize("status, error, raised", [
    (400, {"error": {"message": "tools is not supported"}}, ModelRequestError),
    (400, {"error": {"message": "This model's maximum context length is 4096 tokens. However, you requested 5000"}},
     ContextLengthError),
    (400, {"error": {"message": "too long", "type": "exceed_context_size_error"}}, ContextLengthError),
    (503, {"error": {"message": "overloaded"}}, ModelUnavailableError),
], ids=["refused", "vllm context", "llama.cpp context", "server error"])
def test_a_failure_raises_the_same_error_from_any_client_and_stops_the_agent(stand_in, kind, status, error, raised):
    StandIn.replies = [(status, error)]
    with pytest.raises(raised, match=f"HTTP {status}: {error['error']['message'][:20]}"):
        Agent(kind(stand_in, "m"), [add]).run("hi")


def test_an_unreachable_server_stops_the_agent():
    with pytest.raises(ModelUnavailableError, match="cannot reach"):
        Agent(NativeToolsLLM("http://127.0.0.1:9/v1", "m", timeout=2), [add]).run("hi")
