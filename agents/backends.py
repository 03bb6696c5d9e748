"""What the agent adds to core's chat models: plain messages, the embedded model, and native tool calling.

An agent runs on any core.ChatModel (core.LLM, core.RemoteLLM, core.ScriptedModel,
agents.langchain.LangChainModel): each step it calls `model.stream(plain_messages(...), json_schema=<the
step schema>, max_new_tokens=...)` and reads finish_reason and token counts off the stream.

- `plain_messages`: the agent's tool results (role "tool") as user messages, for chat templates that have
  only system/user/assistant roles.
- `embedded_llm`: the embedded SmolLM2 as a core.LLM, loaded on first use, once per process; `Agent()`
  without a model runs on it.
- `NativeToolsLLM`: a core.RemoteLLM that sends the step schema as OpenAI `tools`, for servers with native
  tool calling and models trained on it.

Does not: retry, or send images.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from agents.tools import FINAL_ANSWER
from core.chat import ChatStream
from core.remote import RemoteLLM, RemoteStream


def plain_messages(messages: list[dict]) -> list[dict]:
    """Tool results as user messages ("Result of NAME: ..."), for chat templates with only system/user/assistant."""
    plain = []
    for message in messages:
        if message["role"] == "tool":  # with no name, it is the agent's word on a reply that did not parse
            name = message.get("name")
            plain.append({"role": "user", "content": f"Result of {name}: {message['content']}" if name
                          else message["content"]})
        else:
            plain.append({"role": message["role"], "content": message["content"]})
    return plain


_EMBEDDED: dict[str, Any] = {}
_EMBEDDED_LOCK = threading.Lock()


def embedded_llm():
    """The embedded SmolLM2 as a `core.LLM`, loaded on the first call and shared by every Agent after."""
    with _EMBEDDED_LOCK:
        if "llm" not in _EMBEDDED:
            from core.llm import LLM  # torch and the weights: only when the embedded model is really used

            _EMBEDDED["llm"] = LLM.load()
        return _EMBEDDED["llm"]


class NativeToolsLLM(RemoteLLM):
    """A RemoteLLM whose server calls tools natively (vLLM with a tool parser, llama.cpp, Ollama, OpenAI; not
    `llmkit serve`): an agent's step schema goes as OpenAI `tools`, one per tool and final_answer, with
    tool_choice "required", instead of a response_format schema; the reply's tool call comes back as the
    agent's JSON step. Other requests (no step schema, a string prompt) go as RemoteLLM sends them.
    """

    def stream(self, prompt, *, json_schema=None, **options) -> ChatStream:
        if not isinstance(prompt, list) or not is_step_schema(json_schema):
            return super().stream(prompt, json_schema=json_schema, **options)
        return StepStream(super().stream(native_messages(prompt), tools=native_tools(json_schema),
                                         tool_choice="required", **options))


class StepStream:
    """A native tool-calling reply read as the agent's JSON step: one delta, once the reply is complete.

    finish_reason "tool_calls" reads as "stop"; the rest (counts, cancel) is the reply's.
    """

    def __init__(self, reply: RemoteStream):
        self.reply = reply

    @property
    def finish_reason(self) -> str | None:
        return "stop" if self.reply.finish_reason == "tool_calls" else self.reply.finish_reason

    @property
    def prompt_tokens(self) -> int:
        return self.reply.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.reply.completion_tokens

    def __iter__(self):
        text = "".join(self.reply)
        if not self.reply.cancelled:
            yield step_text(self.reply.tool_calls, text)

    def cancel(self) -> None:
        self.reply.cancel()


def is_step_schema(schema: Any) -> bool:
    """Whether `schema` is an agent's step schema (agents.steps.step_schema): anyOf one object per tool."""
    branches = schema.get("anyOf") if isinstance(schema, dict) else None
    return isinstance(branches, list) and bool(branches) and all(
        isinstance(branch, dict) and "const" in branch.get("properties", {}).get("tool", {}) for branch in branches)


def native_tools(json_schema: dict) -> list[dict]:
    """OpenAI `tools` from a step schema: one function per anyOf branch (see agents.steps.step_schema)."""
    return [{"type": "function",
             "function": {"name": branch["properties"]["tool"]["const"], "description": branch.get("description", ""),
                          "parameters": branch["properties"]["arguments"]}}
            for branch in json_schema["anyOf"]]


def native_messages(messages: list[dict]) -> list[dict]:
    """Plain messages (see `plain_messages`) in OpenAI's tool-calling shape: an assistant's call becomes
    `tool_calls`, and the user message after it that gives its result ("Result of NAME: ...") a tool message."""
    converted: list[dict] = []
    pending: tuple[str, str] | None = None  # (id, name) of the call whose result comes next
    for number, message in enumerate(messages):
        role, content = message["role"], message["content"]
        prefix = f"Result of {pending[1]}: " if pending else None
        if prefix and role == "user" and content.startswith(prefix):
            converted.append({"role": "tool", "tool_call_id": pending[0], "content": content[len(prefix):]})
            pending = None
            continue
        pending = None
        call = _parsed_call(content) if role == "assistant" else None
        if call is not None and call[0] != FINAL_ANSWER:
            pending = (f"call_{number}", call[0])
            converted.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": pending[0], "type": "function",
                 "function": {"name": call[0], "arguments": json.dumps(call[1])}}]})
            continue
        converted.append({"role": role, "content": content})
    return converted


def _parsed_call(text: str) -> tuple[str, Any] | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(value, dict) and isinstance(value.get("tool"), str):
        return value["tool"], value.get("arguments", {})
    return None


def step_text(tool_calls: list[dict], content: str) -> str:
    """The agent's JSON step from a reply's tool calls (OpenAI's shape): the first call, else its text as the answer."""
    if not tool_calls:
        return json.dumps({"tool": FINAL_ANSWER, "arguments": {"answer": content}})
    function = tool_calls[0]["function"]
    try:
        arguments = json.loads(function["arguments"] or "{}")
    except json.JSONDecodeError:  # the agent sees unparseable text and tells the model so
        return f'{{"tool": {json.dumps(function["name"])}, "arguments": {function["arguments"]}}}'
    return json.dumps({"tool": function["name"], "arguments": arguments})
