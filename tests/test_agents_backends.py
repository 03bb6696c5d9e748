"""Backends without a model: message conversion, and the OpenAI-compatible client against a stand-in server."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agents import Agent, BackendError, OpenAIModel, ScriptedModel, tool
from agents.backends import native_messages, native_tools, plain_messages


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
    native = native_messages(MESSAGES)
    call = native[2]
    assert call["content"] is None and call["tool_calls"][0]["function"] == {"name": "add",
                                                                            "arguments": '{"a": 2, "b": 3}'}
    assert native[3] == {"role": "tool", "tool_call_id": call["tool_calls"][0]["id"], "content": "5"}
    assert native[4] == {"role": "assistant", "content": "garbage"}
    assert native[5]["role"] == "user"  # an error about unparseable text answers no call
    assert native[6]["content"].startswith('{"tool": "final_answer"')


def test_native_tools_come_from_the_step_schema():
    tools = native_tools(Agent(ScriptedModel([]), [add]).schema)
    assert [t["function"]["name"] for t in tools] == ["add", "final_answer"]
    assert tools[0]["function"]["description"] == "Add two integers."
    assert tools[0]["function"]["parameters"]["required"] == ["a", "b"]


class StandIn(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions from `replies` in order and keeps each request body."""

    replies: list = []
    bodies: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append((self.path, self.headers.get("Authorization"), body))
        status, reply = type(self).replies.pop(0)
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
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


def reply(message, finish="stop"):
    return 200, {"choices": [{"index": 0, "message": message, "finish_reason": finish}],
                 "usage": {"prompt_tokens": 11, "completion_tokens": 7}}


def test_native_tool_calling_round_trip(stand_in):
    StandIn.replies = [
        reply({"role": "assistant", "content": None, "tool_calls": [
            {"id": "x", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]},
              "tool_calls"),
        reply({"role": "assistant", "content": "It is 5."}),
    ]
    model = OpenAIModel(stand_in, "big-model", api_key="k", native_tools=True)
    result = Agent(model, [add]).run("2 + 3?")
    assert result.answer == "It is 5." and result.steps[0].observation == "5"
    assert (result.steps[0].prompt_tokens, result.steps[0].completion_tokens) == (11, 7)
    path, auth, first = StandIn.bodies[0]
    assert path == "/v1/chat/completions" and auth == "Bearer k"
    assert first["tool_choice"] == "required" and "response_format" not in first
    assert [t["function"]["name"] for t in first["tools"]] == ["add", "final_answer"]
    second = StandIn.bodies[1][2]["messages"]
    assert second[-1]["role"] == "tool" and second[-1]["content"] == "5"
    assert second[-2]["tool_calls"][0]["function"]["name"] == "add"


def test_response_format_mode_sends_the_schema(stand_in):
    content = '{"tool": "final_answer", "arguments": {"answer": "hi"}}'
    StandIn.replies = [reply({"role": "assistant", "content": content})]
    agent = Agent(OpenAIModel(stand_in, "m"), [add])
    assert agent.run("hi").answer == "hi"
    body = StandIn.bodies[0][2]
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "step", "schema": agent.schema, "strict": True}}
    assert body["temperature"] == 0 and body["max_tokens"] == agent.step_tokens and "tools" not in body


def test_server_errors_propagate_as_backend_errors(stand_in):
    StandIn.replies = [(400, {"error": {"message": "tools is not supported"}})]
    with pytest.raises(BackendError, match="HTTP 400: .*tools is not supported"):
        Agent(OpenAIModel(stand_in, "m"), [add]).run("hi")
    with pytest.raises(BackendError, match="cannot reach"):
        OpenAIModel("http://127.0.0.1:9/v1", "m", timeout=2).complete([{"role": "user", "content": "x"}])
