"""LangChain interop: our tools as LangChain `StructuredTool`s and back, and a LangChain chat model as a backend.

llmkit does not depend on langchain_core (it is the `langchain` extra): it is imported inside the
functions here, so `import agents` never needs it.

- `to_langchain(tool)`: validation and timeout stay ours; a ToolError becomes LangChain's
  ToolException, so the tool's `handle_tool_error` setting applies.
- `from_langchain(structured_tool)`: the schema comes from its `tool_call_schema`; a Pydantic
  `args_schema` validates the arguments before the call, a dict one only checks names and required keys.
- `LangChainModel(chat_model, constrain=...)`: a LangChain chat model as a core.ChatModel, so an agent (or
  rag) runs on it. `constrain="json_schema"` passes `json_schema`, `choices` and `regex` as keywords
  (core.langchain.ChatLLMKit takes them), `"response_format"` passes a JSON schema as OpenAI's
  response_format (ChatOpenAI and compatible servers) and refuses the other two; None sends no
  constraint, and the agent records whatever does not parse.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ValidationError

from agents.tools import DEFAULT_TIMEOUT_S, Tool, ToolArgumentError, ToolError, describe_errors, tool_schema
from core.chat import Prompt, ReplyStream
from core.errors import ModelRequestError
from core.remote import estimate_tokens
from core.sampling import SamplingParams

CONSTRAINTS = (None, "json_schema", "response_format")


def to_langchain(tool: Tool):
    """A `langchain_core.tools.StructuredTool` that runs `tool` (validated, within its timeout)."""
    from langchain_core.tools import StructuredTool, ToolException

    def call(**arguments):
        try:
            return tool.run(arguments)
        except ToolError as error:
            raise ToolException(str(error)) from error

    async def acall(**arguments):
        return await asyncio.to_thread(call, **arguments)

    return StructuredTool(name=tool.name, description=tool.description, args_schema=tool.parameters, func=call,
                          coroutine=acall, metadata={"side_effects": tool.side_effects,
                                                     "requires_approval": tool.requires_approval})


def from_langchain(structured_tool, *, side_effects: bool = False, requires_approval: bool = False,
                   timeout: float | None = DEFAULT_TIMEOUT_S) -> Tool:
    """Our Tool calling a LangChain tool; `side_effects`, `requires_approval` and `timeout` are ours to set."""
    name = structured_tool.name
    call_schema = structured_tool.tool_call_schema
    is_model = isinstance(call_schema, type) and issubclass(call_schema, BaseModel)
    parameters = tool_schema(call_schema.model_json_schema() if is_model else call_schema, name)
    parameters.pop("description", None)  # LangChain repeats the tool's description here

    def validate(arguments: Any) -> dict:
        if not isinstance(arguments, dict):
            raise ToolArgumentError(f"the arguments of {name} must be a JSON object, got {type(arguments).__name__}")
        if is_model:
            try:
                call_schema.model_validate(arguments)
            except ValidationError as error:
                raise ToolArgumentError(f"invalid arguments for {name}: {describe_errors(error)}") from None
        else:
            unknown = set(arguments) - set(parameters.get("properties", {}))
            missing = set(parameters.get("required", ())) - set(arguments)
            if unknown or missing:
                raise ToolArgumentError(f"invalid arguments for {name}: unknown {sorted(unknown)}, "
                                        f"missing {sorted(missing)}")
        return arguments  # LangChain parses them itself, into its own types

    if structured_tool.func is not None:
        def function(**arguments):
            return structured_tool.invoke(arguments)
    else:
        async def function(**arguments):
            return await structured_tool.ainvoke(arguments)

    return Tool(name, structured_tool.description, parameters, function, validate, side_effects, requires_approval,
                timeout)


class LangChainModel:
    """A LangChain chat model behind the core.ChatModel protocol (see the module docstring for `constrain`).

    A string prompt goes as one human message. Sampling options go to the model's `invoke` as keywords,
    max_new_tokens as `max_tokens` (ChatOpenAI and ChatLLMKit take them; other models may ignore some).
    Token counts are the model's usage report, else estimates (core.remote.estimate_tokens), as is
    `count_tokens`. `context_length`: LangChain does not say it; give the model's. Errors of the model's
    own client propagate as they are. Does not stream: the reply comes as one delta, once it is complete;
    `generate_batch` runs LangChain's `batch`.
    """

    def __init__(self, chat_model, constrain: str | None = None, context_length: int = 8192):
        if constrain not in CONSTRAINTS:
            raise ValueError(f"constrain must be one of {CONSTRAINTS}, got {constrain!r}")
        self.chat_model, self.constrain, self.context_length = chat_model, constrain, context_length
        self.name = getattr(chat_model, "model_name", None) or type(chat_model).__name__

    def count_tokens(self, prompt: Prompt) -> int:
        return estimate_tokens(prompt)

    def stream(self, prompt: Prompt, *, json_schema=None, choices=None, regex=None, **sampling) -> ReplyStream:
        messages, options = self._request(prompt, json_schema, choices, regex, sampling)
        return self._reply(prompt, self.chat_model.invoke(messages, **options))

    def generate(self, prompt: Prompt, **options) -> str:
        return "".join(self.stream(prompt, **options))

    def generate_batch(self, prompts: list[Prompt], *, json_schema=None, choices=None, regex=None,
                       **sampling) -> list[str]:
        requests = [self._request(prompt, json_schema, choices, regex, sampling) for prompt in prompts]
        if not requests:
            return []
        replies = self.chat_model.batch([messages for messages, _ in requests], **requests[0][1])
        return ["".join(self._reply(prompt, reply)) for prompt, reply in zip(prompts, replies, strict=True)]

    def _request(self, prompt: Prompt, json_schema, choices, regex, sampling: dict) -> tuple[list, dict]:
        """(LangChain messages, keywords of `invoke`); what cannot be sent raises ModelRequestError."""
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        params = SamplingParams(**sampling)
        kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
        plain = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        unknown = [message.get("role") for message in plain if message.get("role") not in kinds]
        if unknown:
            raise ModelRequestError(f"a LangChain chat model takes system, user and assistant messages, got {unknown}")
        messages = [kinds[message["role"]](message["content"]) for message in plain]
        options: dict[str, Any] = {name: value for name, value in sampling.items() if name != "max_new_tokens"}
        options["max_tokens"] = params.max_new_tokens
        if self.constrain == "json_schema":
            constraints = {"json_schema": json_schema, "choices": choices, "regex": regex}
            options.update({name: value for name, value in constraints.items() if value is not None})
        elif self.constrain == "response_format":
            if choices is not None or regex is not None:
                raise ModelRequestError('constrain="response_format" sends a JSON schema only: give json_schema, '
                                        "not choices or regex")
            if json_schema is not None:
                options["response_format"] = {"type": "json_schema",
                                              "json_schema": {"name": "output", "schema": json_schema, "strict": True}}
        return messages, options

    def _reply(self, prompt: Prompt, reply) -> ReplyStream:
        """An AIMessage as a finished stream."""
        text = str(reply.text)  # a str subclass that is also callable, in langchain_core 1.x
        usage = reply.usage_metadata or {}
        finish = "length" if reply.response_metadata.get("finish_reason") == "length" else "stop"
        return ReplyStream([text] if text else [], finish, usage.get("input_tokens") or self.count_tokens(prompt),
                           usage.get("output_tokens") or estimate_tokens(text))
