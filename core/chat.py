"""The chat-model protocol that rag, agents and apps depend on, and ScriptedModel, the fake that fits it in tests.

A prompt is a string (raw text, continued as it is) or a list of {"role", "content"} messages (rendered
by the model's chat template). Sampling options are the fields of core.sampling.SamplingParams
(max_new_tokens, temperature, top_p, stop, seed, ...; greedy and 256 tokens by default); at most one
of `json_schema`, `choices`, `regex` constrains the output. Implementations: core.LLM (the engine in
this process), core.RemoteLLM (an OpenAI-compatible server), ScriptedModel, and in agents
`NativeToolsLLM` and `agents.langchain.LangChainModel`.

Every implementation raises the errors of core.errors: ModelRequestError for a request it refuses (a
bad option or constraint), ContextLengthError (a ModelRequestError) when the prompt plus max_new_tokens
exceed `context_length`, ModelUnavailableError when a server cannot be reached or fails.

Does not: define tool calling (agents build it on `json_schema`), or token ids (core.LLM's own).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from core.errors import ContextLengthError
from core.sampling import SamplingParams

Prompt = str | list[dict]


@runtime_checkable
class ChatStream(Protocol):
    """One request's reply: iterate for text deltas; afterwards `finish_reason` and the token counts.

    finish_reason: "stop" (end of turn, a stop string, a complete constrained output), "length"
    (max_new_tokens), "cancelled" (`cancel()`, or a reader that stopped reading), or a server's own.
    """

    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int

    def __iter__(self) -> Iterator[str]: ...

    def cancel(self) -> None:
        """Stop the request, from any thread; the reader's loop ends."""


@runtime_checkable
class ChatModel(Protocol):
    name: str  # what users and API clients call this model
    context_length: int  # tokens of prompt and output together

    def count_tokens(self, prompt: Prompt) -> int:
        """The prompt's tokens as the model sees them (messages through the chat template); exact or an estimate
        that is not below the true count (see each implementation)."""

    def stream(self, prompt: Prompt, *, json_schema: dict | None = None, choices: list[str] | None = None,
               regex: str | None = None, **sampling) -> ChatStream:
        """The reply as it is written; the request is checked and sent here, so a refusal raises here."""

    def generate(self, prompt: Prompt, **options) -> str:
        """The whole reply: `stream`, consumed."""

    def generate_batch(self, prompts: list[Prompt], **options) -> list[str]:
        """One reply per prompt, in prompt order, generated together where the model can."""


class ReplyStream:
    """A reply that is complete before it is read (a scripted one, a backend's that does not stream), as a ChatStream.

    finish_reason is None until the pieces have been read, then the reply's, or "cancelled".
    """

    def __init__(self, pieces: list[str], finish_reason: str, prompt_tokens: int, completion_tokens: int):
        self.pieces, self.prompt_tokens, self.completion_tokens = pieces, prompt_tokens, completion_tokens
        self.finish_reason: str | None = None
        self.cancelled = False
        self._final = finish_reason

    def __iter__(self) -> Iterator[str]:
        complete = False
        try:
            for piece in self.pieces:
                if self.cancelled:
                    return
                yield piece
            complete = not self.cancelled
        finally:
            self.finish_reason = self._final if complete else "cancelled"

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class ScriptedReply:
    """One scripted output with what a real model would report about it; None counts follow ScriptedModel's rule."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"  # "length" scripts an output cut off by max_new_tokens


class ScriptedCall(NamedTuple):
    prompt: Prompt
    options: dict  # the keyword arguments of the call: constraints given and sampling options


class ScriptedModel:
    """Gives `outputs` in order, one per `stream` or `generate` call and one per prompt of `generate_batch`:
    strings, dicts (sent as JSON) or ScriptedReplies; a call after the last raises RuntimeError.

    It checks what a real model checks before generating: the sampling options (a bad value raises
    ModelRequestError) and the context (ContextLengthError when count_tokens(prompt) + max_new_tokens >
    context_length). It does not check outputs against json_schema, choices or regex, nor cut them at
    max_new_tokens, so a test can script what an unconstrained model might say. `calls` keeps each
    call's prompt and options. Tokens, by rule: one per whitespace-separated word of the prompt (of
    every message's content) and of the output; an output streams one word (with the blanks before it)
    per delta.
    """

    def __init__(self, outputs: Iterable[str | dict | ScriptedReply], name: str = "scripted",
                 context_length: int = 8192):
        self.outputs = [json.dumps(output) if isinstance(output, dict) else output for output in outputs]
        self.name, self.context_length = name, context_length
        self.calls: list[ScriptedCall] = []
        self._lock = threading.Lock()  # agents.evaluate runs tasks on one model from several threads

    def count_tokens(self, prompt: Prompt) -> int:
        if isinstance(prompt, str):
            return len(prompt.split())
        return sum(len(str(message.get("content") or "").split()) for message in prompt)

    def stream(self, prompt: Prompt, *, json_schema: dict | None = None, choices: list[str] | None = None,
               regex: str | None = None, **sampling) -> ReplyStream:
        params = SamplingParams(**sampling)
        prompt_tokens = self.count_tokens(prompt)
        if params.max_new_tokens is not None and prompt_tokens + params.max_new_tokens > self.context_length:
            raise ContextLengthError(f"the prompt has {prompt_tokens} tokens and max_new_tokens is "
                                     f"{params.max_new_tokens}; the context holds {self.context_length}")
        constraints = {"json_schema": json_schema, "choices": choices, "regex": regex}
        options = {**{name: value for name, value in constraints.items() if value is not None}, **sampling}
        with self._lock:
            if len(self.calls) == len(self.outputs):
                raise RuntimeError(f"ScriptedModel: the script has only {len(self.outputs)} outputs, and a "
                                   f"call #{len(self.calls) + 1} came")
            self.calls.append(ScriptedCall(prompt, options))
            output = self.outputs[len(self.calls) - 1]
        reply = output if isinstance(output, ScriptedReply) else ScriptedReply(output)
        pieces = re.findall(r"\s*\S+|\s+$", reply.text)  # words with the blanks before them; they join to the text
        return ReplyStream(pieces, reply.finish_reason,
                           prompt_tokens if reply.prompt_tokens is None else reply.prompt_tokens,
                           len(reply.text.split()) if reply.completion_tokens is None else reply.completion_tokens)

    def generate(self, prompt: Prompt, **options: Any) -> str:
        return "".join(self.stream(prompt, **options))

    def generate_batch(self, prompts: list[Prompt], **options: Any) -> list[str]:
        return [self.generate(prompt, **options) for prompt in prompts]
