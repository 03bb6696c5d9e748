"""LangChain interop: our tools as LangChain `StructuredTool`s and back, and a LangChain chat model as a backend.

llmkit does not depend on langchain_core (it is the `langchain` extra): it is imported inside the
functions here, so `import agents` never needs it.

- `to_langchain(tool)`: validation and timeout stay ours; a ToolError becomes LangChain's
  ToolException, so the tool's `handle_tool_error` setting applies.
- `from_langchain(structured_tool)`: the schema comes from its `tool_call_schema`; a Pydantic
  `args_schema` validates the arguments before the call, a dict one only checks names and required keys.
- `LangChainModel(chat_model, constrain=...)`: `constrain="json_schema"` passes the step schema as the
  `json_schema` keyword (core.langchain.ChatLLMKit), `"response_format"` as OpenAI's response_format
  (ChatOpenAI and compatible servers); None sends no constraint, and the agent records whatever
  does not parse.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ValidationError

from agents.backends import Completion, plain_messages
from agents.tools import Tool, ToolArgumentError, ToolError, describe_errors, tool_schema

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
                   timeout: float | None = None) -> Tool:
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
    """A LangChain chat model behind the agents' ChatModel interface (see the module docstring for `constrain`)."""

    def __init__(self, chat_model, constrain: str | None = None):
        if constrain not in CONSTRAINTS:
            raise ValueError(f"constrain must be one of {CONSTRAINTS}, got {constrain!r}")
        self.chat_model, self.constrain = chat_model, constrain
        self.name = getattr(chat_model, "model_name", None) or type(chat_model).__name__

    def complete(self, messages: list[dict], json_schema: dict | None = None, max_tokens: int = 256) -> Completion:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
        converted = [kinds[message["role"]](message["content"]) for message in plain_messages(messages)]
        options: dict[str, Any] = {"max_tokens": max_tokens}
        if json_schema is not None and self.constrain == "json_schema":
            options["json_schema"] = json_schema
        elif json_schema is not None and self.constrain == "response_format":
            options["response_format"] = {"type": "json_schema",
                                          "json_schema": {"name": "step", "schema": json_schema, "strict": True}}
        reply = self.chat_model.invoke(converted, **options)
        usage = reply.usage_metadata or {}
        finish = "length" if reply.response_metadata.get("finish_reason") == "length" else "stop"
        return Completion(reply.text, usage.get("input_tokens", 0), usage.get("output_tokens", 0), finish)
