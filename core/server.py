"""An OpenAI-compatible HTTP server over one LLM, for OpenAI clients, LangChain's ChatOpenAI and the like.

GET /v1/models, POST /v1/chat/completions and POST /v1/completions, each streamed (server-sent
events) or not. Every request calls `LLM.stream` from a worker thread, so concurrent requests decode
together in the engine's batch and the event loop never waits on the model. Bad input is answered
with HTTP 400 (404 for an unknown model) in OpenAI's error shape, before anything is queued; a prompt,
or prompt plus max_tokens, over the context with code "context_length_exceeded", as OpenAI does. A client
that hangs up ends its generation, so its engine row frees for the next request. Output is constrained
by `response_format` (json_schema, json_object) or by vLLM's `guided_choice` and `guided_regex`.

Does not do: tools or function calling, n > 1, logprobs, presence/frequency penalties, images or
audio, embeddings, or authentication (bind to loopback, or put it behind a proxy that checks keys).
fastapi and uvicorn are imported here only: `import core` does not load this module.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Generator
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from core.engine import GenerationStream
from core.errors import ContextLengthError
from core.llm import LLM

logger = logging.getLogger(__name__)

DEFAULT_TEMPERATURE = 1.0  # OpenAI's default, so clients behave as they do there; clients wanting determinism send 0
DISCONNECT_POLL_S = 0.5  # how often a non-streamed request checks whether its client is still there
OWNER = "llmkit"


class InvalidRequest(Exception):
    """A request the server understood but cannot serve; answered in OpenAI's error shape."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


# Request bodies. Fields OpenAI defines that we cannot honour are declared so a non-default value is
# refused; fields we do not know (user, metadata, store, ...) are ignored, as clients send them freely.
class StreamOptions(BaseModel):
    include_usage: bool = False


class TextFormat(BaseModel):
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    type: Literal["json_object"]


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    name: str
    schema_: dict[str, Any] = Field(alias="schema")  # `schema` would shadow a BaseModel attribute
    description: str | None = None
    strict: bool | None = None  # our decoding always follows the schema exactly


class JsonSchemaFormat(BaseModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class _Request(BaseModel):
    """What both endpoints take; `unsupported` names the asked-for features this server would otherwise ignore."""

    model_config = ConfigDict(extra="ignore")
    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None  # None: up to the end of the context, as OpenAI does
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: ResponseFormat | None = None
    guided_choice: list[str] | None = None  # vLLM's names; the output is one of these strings
    guided_regex: str | None = None  # the output matches it whole

    def unsupported(self) -> dict[str, bool]:
        return {"n": self.n not in (None, 1), "presence_penalty": self.presence_penalty not in (None, 0),
                "frequency_penalty": self.frequency_penalty not in (None, 0)}


class CompletionRequest(_Request):
    prompt: str
    logprobs: int | None = None
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None

    def unsupported(self) -> dict[str, bool]:
        return {**super().unsupported(), "logprobs": self.logprobs is not None, "echo": bool(self.echo),
                "suffix": bool(self.suffix), "best_of": self.best_of not in (None, 1)}


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def as_dict(self) -> dict:
        text = self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None  # OpenAI's newer name for max_tokens; wins when both are sent
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None
    functions: list[dict] | None = None
    function_call: str | dict | None = None

    def unsupported(self) -> dict[str, bool]:
        return {**super().unsupported(), "logprobs": bool(self.logprobs),
                "top_logprobs": self.top_logprobs not in (None, 0), "tools": bool(self.tools),
                "tool_choice": self.tool_choice not in (None, "none"), "functions": bool(self.functions),
                "function_call": self.function_call not in (None, "none")}


def _refuse_unsupported(body: _Request) -> None:
    """400 for anything asked that we would otherwise silently not do."""
    for name, refused in body.unsupported().items():
        if refused:
            raise InvalidRequest(f"{name}={getattr(body, name)!r} is not supported by this server "
                                 "(it generates one choice of plain text: no tools, logprobs or penalties)", param=name)


def _options(body: _Request) -> dict:
    """The keyword arguments of `LLM.stream` for a request; their values are checked there."""
    limit = getattr(body, "max_completion_tokens", None)
    limit = body.max_tokens if limit is None else limit
    format_ = body.response_format
    schema = (format_.json_schema.schema_ if isinstance(format_, JsonSchemaFormat)
              else {"type": "object"} if isinstance(format_, JsonObjectFormat) else None)
    return dict(
        max_new_tokens=limit,  # None: until the end of turn or of the context, as OpenAI does
        temperature=DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        stop=body.stop or (),
        seed=body.seed,
        json_schema=schema,
        choices=body.guided_choice,
        regex=body.guided_regex,
    )


class _Reply:
    """What every chunk of one response shares, and the OpenAI shapes built from it."""

    def __init__(self, chat: bool, model: str):
        self.chat, self.model = chat, model
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def body(self, choices: list[dict], chunk: bool, **extra) -> dict:
        kind = ("chat.completion.chunk" if chunk else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": None, "choices": choices, **extra}

    def choice(self, text: str | None, finish_reason: str | None, *, chunk: bool, first: bool = False) -> dict:
        choice = {"index": 0, "logprobs": None, "finish_reason": finish_reason}
        if not self.chat:
            return {**choice, "text": text or ""}
        if not chunk:
            return {**choice, "message": {"role": "assistant", "content": text, "refusal": None}}
        delta = {"role": "assistant"} if first else {}
        return {**choice, "delta": delta if text is None else {**delta, "content": text}}


def _finish_reason(stream: GenerationStream) -> str:
    # The engine's other reasons ("cancelled", "error") never reach a client that is still reading.
    return "length" if stream.finish_reason == "length" else "stop"


def _usage(stream: GenerationStream) -> dict:
    return {"prompt_tokens": stream.prompt_tokens, "completion_tokens": stream.completion_tokens,
            "total_tokens": stream.prompt_tokens + stream.completion_tokens}


def _events(reply: _Reply, stream: GenerationStream, include_usage: bool) -> Generator[str, None, None]:
    """The server-sent events of a streamed response; Starlette runs this generator in a worker thread."""

    def event(choices: list[dict], **extra) -> str:
        if include_usage:
            extra.setdefault("usage", None)
        return f"data: {json.dumps(reply.body(choices, chunk=True, **extra))}\n\n"

    first = reply.chat  # the role rides on the first text delta
    try:
        for delta in stream:
            yield event([reply.choice(delta, None, chunk=True, first=first)])
            first = False
    except Exception as error:  # the status line is sent: the error goes out as an event, the traceback to the log
        logger.exception("generation failed in %s", reply.id)
        yield f"data: {json.dumps(_error_body(f'generation failed: {error}', 'server_error'))}\n\n"
        return
    yield event([reply.choice(None, _finish_reason(stream), chunk=True, first=first)])
    if include_usage:
        yield event([], usage=_usage(stream))
    yield "data: [DONE]\n\n"


class _EventStream(StreamingResponse):
    """A response of server-sent events that cancels its generation however the response ends.

    Starlette drops the iterator of a response whose client hung up; without the cancel the
    generation would go on decoding for nobody.
    """

    def __init__(self, events: Generator[str, None, None], stream: GenerationStream):
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.stream = stream

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stream.cancel()  # after a complete response this changes nothing


async def _collect(stream: GenerationStream, request: Request) -> str:
    """The whole text of `stream`, read in a worker thread; cancelled if the client leaves before the end."""
    reading = asyncio.ensure_future(run_in_threadpool("".join, stream))
    while not (await asyncio.wait({reading}, timeout=DISCONNECT_POLL_S))[0]:
        if await request.is_disconnected():
            stream.cancel()  # frees its engine row, or its place in the queue, and ends the read
    return reading.result()  # the engine's error, if any, raised here


def _error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(_error_body(message, kind, param, code), status_code=status)


async def _on_invalid_request(request: Request, error: InvalidRequest) -> JSONResponse:
    return _error(error.status, str(error), error.param, error.code)


async def _on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """Pydantic's 422 becomes OpenAI's 400, one line per problem: `messages.0.role: Input should be ...`."""
    problems = [(".".join(str(part) for part in problem["loc"][1:]) or "body", problem["msg"])
                for problem in error.errors()]
    message = "; ".join(f"{where}: {what}" for where, what in problems) or "invalid request body"
    return _error(400, message, param=problems[0][0] if problems else None)


async def _on_http_error(request: Request, error: HTTPException) -> JSONResponse:
    return _error(error.status_code, str(error.detail))


async def _on_server_error(request: Request, error: Exception) -> JSONResponse:
    return _error(500, f"internal error: {type(error).__name__}: {error}")  # Starlette still logs the traceback


def create_app(llm: LLM, model_name: str) -> FastAPI:
    """The app serving `llm` under `model_name`, the one name requests may ask for."""
    app = FastAPI(title="llmkit", description=f"OpenAI-compatible API serving {model_name}")
    app.add_exception_handler(InvalidRequest, _on_invalid_request)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_server_error)
    card = {"id": model_name, "object": "model", "created": int(time.time()), "owned_by": OWNER}

    def check_model(name: str) -> None:
        if name != model_name:
            raise InvalidRequest(f"The model {name!r} does not exist: this server serves {model_name!r}",
                                 status=404, param="model", code="model_not_found")

    async def complete(body: _Request, prompt: str | list[dict], request: Request):
        check_model(body.model)
        _refuse_unsupported(body)
        try:  # tokenising a long prompt or compiling a schema takes a while: off the event loop
            stream = await run_in_threadpool(llm.stream, prompt, **_options(body))
        except ContextLengthError as error:
            raise InvalidRequest(str(error), param="messages" if isinstance(prompt, list) else "prompt",
                                 code="context_length_exceeded") from error
        except ValueError as error:  # bad sampling values, an invalid schema or regex, two constraints at once
            raise InvalidRequest(str(error)) from error
        reply = _Reply(chat=isinstance(body, ChatCompletionRequest), model=model_name)
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            return _EventStream(_events(reply, stream, include_usage), stream)
        text = await _collect(stream, request)
        choice = reply.choice(text, _finish_reason(stream), chunk=False)
        return reply.body([choice], chunk=False, usage=_usage(stream))

    @app.get("/v1/models")
    def list_models() -> dict:
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{name:path}")  # a Hugging Face id has a slash
    def retrieve_model(name: str) -> dict:
        check_model(name)
        return card

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        return await complete(body, [message.as_dict() for message in body.messages], request)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        return await complete(body, body.prompt, request)

    return app


def serve(llm: LLM, host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None) -> None:
    """Serve until interrupted (Ctrl-C)."""
    import uvicorn

    name = model_name or llm.name
    print(f"llmkit: serving {name} ({llm.source}) at http://{host}:{port}/v1", flush=True)
    uvicorn.run(create_app(llm, name), host=host, port=port)
