"""Chat models behind one small interface: `complete(messages, json_schema, max_tokens) -> Completion`.

The agent knows nothing else about a model. Messages are {"role", "content"} dicts; the agent adds
role "tool" (with "name") for what a tool returned, and each backend spells that its own way: as a
user message for chat templates that have no tool role, as OpenAI tool messages for native tool calling.

- `LocalModel`: the in-process engine (`core.LLM`), with constrained decoding; the embedded SmolLM2
  by default, loaded on first use, once per process.
- `OpenAIModel`: any OpenAI-compatible endpoint (`llmkit serve`, vLLM, llama.cpp's server, Ollama),
  constrained through `response_format` json_schema, or (`native_tools=True`) through the server's own
  tool calling, for servers that have it and models trained on it. Plain HTTP (urllib): no client package.
- `ScriptedModel`: returns given outputs in order; for tests and for replaying traces.
- `agents.langchain.LangChainModel`: a LangChain chat model.

Does not: retry, stream tokens, or send images.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from agents.tools import FINAL_ANSWER


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # or "length": cut off by max_tokens


class ChatModel(Protocol):
    name: str

    def complete(self, messages: list[dict], json_schema: dict | None = None, max_tokens: int = 256) -> Completion:
        """The model's reply to `messages`; with `json_schema`, one that follows it where the backend can enforce it."""
        ...


class BackendError(RuntimeError):
    """The backend failed (a server error, a refused request): not the model's output, so the run stops."""


def plain_messages(messages: list[dict]) -> list[dict]:
    """Tool results as user messages, for chat templates with only system/user/assistant roles."""
    plain = []
    for message in messages:
        if message["role"] == "tool":  # with no name, it is the agent's word on a reply that did not parse
            name = message.get("name")
            plain.append({"role": "user", "content": f"Result of {name}: {message['content']}" if name
                          else message["content"]})
        else:
            plain.append({"role": message["role"], "content": message["content"]})
    return plain


class ScriptedModel:
    """Gives `outputs` in order, one per call: strings, dicts (sent as JSON) or Completions.

    It does not check outputs against the schema, so a test can script what an unconstrained model
    might say. `calls` keeps every (messages, json_schema, max_tokens) received. A str output counts
    one prompt token per word of the messages and one completion token per word of the output.
    """

    name = "scripted"

    def __init__(self, outputs: Iterable[str | dict | Completion]):
        self.outputs = [json.dumps(output) if isinstance(output, dict) else output for output in outputs]
        self.calls: list[tuple[list[dict], dict | None, int]] = []

    def complete(self, messages: list[dict], json_schema: dict | None = None, max_tokens: int = 256) -> Completion:
        if len(self.calls) == len(self.outputs):
            raise RuntimeError(f"ScriptedModel: the script has only {len(self.outputs)} outputs, and a "
                               f"call #{len(self.calls) + 1} came")
        self.calls.append((messages, json_schema, max_tokens))
        output = self.outputs[len(self.calls) - 1]
        if isinstance(output, Completion):
            return output
        prompt_words = sum(len(str(message["content"]).split()) for message in messages)
        return Completion(output, prompt_words, len(output.split()))


_EMBEDDED: dict[str, Any] = {}
_EMBEDDED_LOCK = threading.Lock()


def embedded_llm():
    """The embedded SmolLM2 as a `core.LLM`, loaded on the first call and shared by every LocalModel after."""
    with _EMBEDDED_LOCK:
        if "llm" not in _EMBEDDED:
            from core.llm import LLM  # torch and the weights: only when a local model is really used

            _EMBEDDED["llm"] = LLM.load()
        return _EMBEDDED["llm"]


class LocalModel:
    """A `core.LLM` in this process; greedy by default, so a run repeats exactly.

    `llm=None` is the embedded SmolLM2, loaded on the first `complete`. `sampling` goes to `LLM.stream`
    (temperature, top_p, seed, repetition_penalty, ...).
    """

    def __init__(self, llm=None, **sampling):
        self._llm = llm
        self.sampling = {"temperature": 0.0, **sampling}

    @property
    def llm(self):
        if self._llm is None:
            self._llm = embedded_llm()
        return self._llm

    @property
    def name(self) -> str:
        return "embedded" if self._llm is None else self._llm.name

    def complete(self, messages: list[dict], json_schema: dict | None = None, max_tokens: int = 256) -> Completion:
        stream = self.llm.stream(plain_messages(messages), json_schema=json_schema, max_new_tokens=max_tokens,
                                 **self.sampling)
        text = "".join(stream)
        return Completion(text, stream.prompt_tokens, stream.completion_tokens, stream.finish_reason)


class OpenAIModel:
    """A model behind an OpenAI-compatible /v1/chat/completions.

    `base_url` ends in /v1. `native_tools`: send the tools as OpenAI `tools` with tool_choice
    "required" (final_answer is one of them) instead of a response_format schema; the reply's tool
    call is turned back into the agent's JSON step. Our `llmkit serve` does response_format only.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, native_tools: bool = False,
                 temperature: float = 0.0, timeout: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.name = model
        self.api_key, self.native_tools, self.temperature, self.timeout = api_key, native_tools, temperature, timeout

    def complete(self, messages: list[dict], json_schema: dict | None = None, max_tokens: int = 256) -> Completion:
        body: dict[str, Any] = {"model": self.name, "max_tokens": max_tokens, "temperature": self.temperature}
        if self.native_tools and json_schema is not None:
            body["messages"] = native_messages(messages)
            body["tools"] = native_tools(json_schema)
            body["tool_choice"] = "required"
        else:
            body["messages"] = plain_messages(messages)
            if json_schema is not None:
                body["response_format"] = {"type": "json_schema",
                                           "json_schema": {"name": "step", "schema": json_schema, "strict": True}}
        reply = self._post("/chat/completions", body)
        try:
            choice, usage = reply["choices"][0], reply.get("usage") or {}
            text = _step_text(choice["message"]) if self.native_tools else choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as error:
            raise BackendError(f"{self.base_url}: unexpected reply shape ({error!r}): {str(reply)[:300]}") from error
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return Completion(text, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0), finish)

    def _post(self, path: str, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.base_url + path, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise BackendError(f"{self.base_url}{path} answered HTTP {error.code}: {detail}") from None
        except urllib.error.URLError as error:
            raise BackendError(f"cannot reach {self.base_url}{path}: {error.reason}") from None


def native_tools(json_schema: dict) -> list[dict]:
    """OpenAI `tools` from a step schema: one function per anyOf branch (see agents.steps.step_schema)."""
    return [{"type": "function",
             "function": {"name": branch["properties"]["tool"]["const"], "description": branch.get("description", ""),
                          "parameters": branch["properties"]["arguments"]}}
            for branch in json_schema["anyOf"]]


def native_messages(messages: list[dict]) -> list[dict]:
    """The agent's messages in OpenAI's tool-calling shape: a call becomes `tool_calls`, its result a tool message."""
    converted, call_id = [], None
    for number, message in enumerate(messages):
        if message["role"] == "assistant":
            call = _parsed_call(message["content"])
            if call is not None and call[0] != FINAL_ANSWER:
                call_id = f"call_{number}"
                converted.append({"role": "assistant", "content": None, "tool_calls": [
                    {"id": call_id, "type": "function",
                     "function": {"name": call[0], "arguments": json.dumps(call[1])}}]})
                continue
            call_id = None
        elif message["role"] == "tool" and call_id is not None:
            converted.append({"role": "tool", "tool_call_id": call_id, "content": message["content"]})
            call_id = None
            continue
        converted.extend(plain_messages([message]))
    return converted


def _parsed_call(text: str) -> tuple[str, Any] | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(value, dict) and isinstance(value.get("tool"), str):
        return value["tool"], value.get("arguments", {})
    return None


def _step_text(message: dict) -> str:
    """The agent's JSON step from an OpenAI reply message: its first tool call, else its text as the answer."""
    calls = message.get("tool_calls") or []
    if not calls:
        return json.dumps({"tool": FINAL_ANSWER, "arguments": {"answer": message.get("content") or ""}})
    function = calls[0]["function"]
    try:
        arguments = json.loads(function["arguments"] or "{}")
    except json.JSONDecodeError:  # the agent sees unparseable text and tells the model so
        return f'{{"tool": {json.dumps(function["name"])}, "arguments": {function["arguments"]}}}'
    return json.dumps({"tool": function["name"], "arguments": arguments})
