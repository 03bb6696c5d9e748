"""LangChain chat model over an llmkit LLM: `ChatLLMKit(llm=LLM.load())` goes wherever a LangChain chat model does.

It imports langchain_core, which llmkit does not depend on, so only code that uses LangChain imports
this module (`import core` does not). `invoke` consumes the same generator that `stream` yields from,
so both give the same text. Does not do: tool calling, images, or `with_structured_output` (use
`LLM.stream(json_schema=...)` directly for constrained output).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel, generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ChatMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import ConfigDict

from core.llm import LLM

_ROLES = {SystemMessage: "system", HumanMessage: "user", AIMessage: "assistant"}


def to_chat_messages(messages: list[BaseMessage]) -> list[dict]:
    """LangChain messages as llmkit's {"role", "content"} dicts; tool messages and non-text content raise ValueError."""
    converted = []
    for message in messages:
        if isinstance(message, ChatMessage):
            role = message.role
        else:  # isinstance, not a lookup by type: the *Chunk classes subclass these
            role = next((name for cls, name in _ROLES.items() if isinstance(message, cls)), None)
        if role is None:
            raise ValueError(f"{type(message).__name__} is not supported: ChatLLMKit takes system, human, AI "
                             "and chat messages (no tool calling)")
        converted.append({"role": role, "content": _text(message)})
    return converted


def _text(message: BaseMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    parts = []
    for block in message.content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(block["text"])
        else:
            raise ValueError(f"only text content is supported, got a {type(block).__name__} block: {block!r:.100}")
    return "".join(parts)


class ChatLLMKit(BaseChatModel):
    """A chat model that generates with a local `LLM`; per-call keyword arguments override the fields.

    `max_tokens` is LLM's `max_new_tokens`; any other keyword (top_k, min_p, repetition_penalty, ...)
    goes to `LLM.stream` as it is, which raises TypeError for an unknown one.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llm: LLM
    temperature: float = 0.0  # llmkit's default: greedy, so a chain gives the same answer every run
    max_tokens: int = 256
    top_p: float = 1.0
    seed: int | None = None

    @property
    def _llm_type(self) -> str:
        return "llmkit"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.llm.name, "temperature": self.temperature, "max_tokens": self.max_tokens,
                "top_p": self.top_p, "seed": self.seed}

    def _options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        options = {"max_new_tokens": kwargs.pop("max_tokens", self.max_tokens), "temperature": self.temperature,
                   "top_p": self.top_p, "seed": self.seed, **kwargs}
        if stop:
            options["stop"] = stop
        return options

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        stream = self.llm.stream(to_chat_messages(messages), **self._options(stop, kwargs))
        for delta in stream:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=delta))
            if run_manager is not None:
                run_manager.on_llm_new_token(delta, chunk=chunk)
            yield chunk
        usage = {"input_tokens": stream.prompt_tokens, "output_tokens": stream.completion_tokens,
                 "total_tokens": stream.prompt_tokens + stream.completion_tokens}
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", usage_metadata=usage, chunk_position="last",
                                   response_metadata={"finish_reason": stream.finish_reason,
                                                      "model_name": self.llm.name}),
            generation_info={"finish_reason": stream.finish_reason})

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
