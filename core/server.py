"""An OpenAI-compatible HTTP server over one LLM, for OpenAI clients, LangChain's ChatOpenAI and the like.

GET /v1/models, POST /v1/chat/completions and POST /v1/completions, each streamed (server-sent
events) or not. One thread (`_Pump`) runs the engine's steps for every request and hands each one's
deltas to the event loop, so concurrent requests, streamed or not, decode together in the engine's batch
(its continuous batching is the one scheduler) and no request holds a worker thread while it generates.
Bad input is answered with HTTP 400 (404 for an unknown model) in OpenAI's error shape, before anything
is queued; a prompt, or prompt plus max_tokens, over the context with code "context_length_exceeded", as
OpenAI does. A client that hangs up ends its generation, so its engine row frees for the next request.
Output is constrained by `response_format` (json_schema, json_object) or by vLLM's `guided_choice` and
`guided_regex`, and always matches within max_tokens (or the default budget): one that cannot hold the
shortest match is answered with 400.

Shared use: `ServerLimits` bounds each request (body bytes, prompt characters, max_tokens, wall time) and
all of them (running and queued: 429 with Retry-After beyond them), each checked before the work it would
cost. An optional API key is checked as a bearer token (required to bind beyond loopback), and a server on
loopback answers only Host headers naming loopback (a DNS-rebinding page cannot reach it). Server errors
answer a generic message carrying a request id; the details go to the log.
Those checks (limits, binding, admission, Host, key, body) live in core.server_guard.

Does not do: tools or function calling, n > 1, logprobs, presence/frequency penalties, images or
audio, embeddings, TLS (put it behind a proxy for that), or per-client quotas.
fastapi and uvicorn are imported here only: `import core` does not load this module.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from core.engine import Engine, GenerationStream
from core.errors import ContextLengthError, ModelRequestError
from core.llm import LLM
from core.server_guard import (
    Gate,
    Guard,
    InvalidRequest,
    ServerLimits,
    TimedOut,
    check_binding,
    error_body,
    error_response,
)
from core.settings import LOOPBACK_HOSTS, is_loopback

logger = logging.getLogger(__name__)

DEFAULT_TEMPERATURE = 1.0  # OpenAI's default, so clients behave as they do there; clients wanting determinism send 0
DISCONNECT_POLL_S = 0.5  # how often a non-streamed request checks whether its client is still there
OWNER = "llmkit"
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


def _asked_tokens(body: _Request, limits: ServerLimits) -> int | None:
    """The request's max_tokens (None: not given), refused over the server's cap."""
    asked = getattr(body, "max_completion_tokens", None)
    asked = body.max_tokens if asked is None else asked
    if asked is not None and asked > limits.max_tokens:
        name = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) is not None else "max_tokens"
        raise InvalidRequest(f"{name}={asked} is over this server's limit of {limits.max_tokens}: ask for fewer",
                             param=name)
    return asked


def _options(body: _Request, max_new_tokens: int | None) -> dict:
    """The keyword arguments of `LLM.stream` for a request; their values are checked there."""
    format_ = body.response_format
    schema = (format_.json_schema.schema_ if isinstance(format_, JsonSchemaFormat)
              else {"type": "object"} if isinstance(format_, JsonObjectFormat) else None)
    return dict(
        max_new_tokens=max_new_tokens,
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
    # The engine's other reasons ("cancelled", "error") never reach a client that is still reading. A
    # response_format output closed early to fit max_tokens is complete and valid: "stop", as the engine says.
    return "length" if stream.finish_reason == "length" else "stop"


def _usage(stream: GenerationStream) -> dict:
    return {"prompt_tokens": stream.prompt_tokens, "completion_tokens": stream.completion_tokens,
            "total_tokens": stream.prompt_tokens + stream.completion_tokens}


_DONE = object()  # what the pump hands on after a stream's last delta


class _Pump:
    """The one thread that runs the engine's steps for this server's requests, and hands each request's deltas
    (then an exception, or _DONE) to the event loop. Steps for everyone at once, so the engine's continuous batching
    schedules streamed and non-streamed requests alike; the thread ends when no request is left."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self._readers: dict[GenerationStream, tuple[Any, Callable[[object], None]]] = {}
        self._wake = threading.Lock()
        self._running = False

    def follow(self, stream: GenerationStream) -> asyncio.Queue:
        """The queue, on the running event loop, that receives `stream`'s deltas, then an exception or _DONE."""
        loop, deltas = asyncio.get_running_loop(), asyncio.Queue()
        with self._wake:
            self._readers[stream] = (iter(stream), lambda item: loop.call_soon_threadsafe(deltas.put_nowait, item))
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="llmkit-server-engine", daemon=True).start()
        return deltas

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._readers:
                    self._running = False
                    return
                readers = list(self._readers.items())
            try:
                for stream, (iterator, deliver) in readers:
                    self._hand_on(stream, iterator, deliver)
                waiting = [stream for stream, _ in readers if stream in self._readers and stream.queue.empty()]
                if waiting:
                    self._engine.step(waiting[0])  # a step for every row, whichever reader it is run for
            except Exception as error:  # the engine itself failed (out of memory growing its cache): end them all
                logger.exception("the engine failed; ending %d requests", len(readers))
                for stream, (_, deliver) in readers:
                    stream.cancel()
                    deliver(error)
                    self._forget(stream)

    def _hand_on(self, stream: GenerationStream, iterator, deliver: Callable[[object], None]) -> None:
        while not stream.queue.empty():  # so `next` only reads: it would run steps on an empty queue
            try:
                deliver(next(iterator))
            except StopIteration:
                deliver(_DONE)
            except Exception as error:  # this request's own failure; the others go on
                deliver(error)
            else:
                continue
            return self._forget(stream)

    def _forget(self, stream: GenerationStream) -> None:
        with self._wake:
            self._readers.pop(stream, None)


async def _deltas(deltas: asyncio.Queue, stream: GenerationStream, deadline: float,
                  request: Request | None = None) -> AsyncIterator[str]:
    """The text deltas of `stream` as the pump hands them on; TimedOut (the stream cancelled) past `deadline`.
    With `request`, the stream is cancelled once its client is gone."""
    loop = asyncio.get_running_loop()
    getter, next_check = None, loop.time() + DISCONNECT_POLL_S
    try:
        while True:
            getter = getter or asyncio.ensure_future(deltas.get())
            now = loop.time()
            if now >= deadline:
                stream.cancel()
                raise TimedOut
            if request is not None and now >= next_check:  # by the clock: deltas may never pause
                next_check = now + DISCONNECT_POLL_S
                if await request.is_disconnected():
                    stream.cancel()  # frees its engine row, or its place in the queue; _DONE follows
            if not (await asyncio.wait({getter}, timeout=min(DISCONNECT_POLL_S, deadline - now)))[0]:
                continue
            item, getter = getter.result(), None
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if getter is not None:
            getter.cancel()


def _request_id() -> str:
    return f"req-{uuid.uuid4().hex[:16]}"


def _failure(error: BaseException, limits: ServerLimits, where: str) -> tuple[int, str, str | None]:
    """(status, message, code) for a generation that failed: its own refusal as it is, a timeout, else a generic
    message whose request id finds the details in the log."""
    if isinstance(error, TimedOut):
        return 504, f"the request ran past this server's limit of {limits.request_seconds:g} s", "timeout"
    if isinstance(error, ModelRequestError):
        return 400, str(error), None
    request_id = _request_id()
    logger.error("generation failed in %s (request id %s)", where, request_id, exc_info=error)
    return 500, f"the generation failed (request id {request_id}; the details are in the server's log)", None


async def _events(reply: _Reply, stream: GenerationStream, deltas: AsyncIterator[str], include_usage: bool,
                  limits: ServerLimits) -> AsyncIterator[str]:
    """The server-sent events of a streamed response."""

    def event(choices: list[dict], **extra) -> str:
        if include_usage:
            extra.setdefault("usage", None)
        return f"data: {json.dumps(reply.body(choices, chunk=True, **extra))}\n\n"

    first = reply.chat  # the role rides on the first text delta
    try:
        async for delta in deltas:
            yield event([reply.choice(delta, None, chunk=True, first=first)])
            first = False
    except Exception as error:  # the status line is sent: the error goes out as an event
        status, message, code = _failure(error, limits, reply.id)
        kind = "invalid_request_error" if status < 500 else "server_error"
        yield f"data: {json.dumps(error_body(message, kind, code=code))}\n\n"
        return
    yield event([reply.choice(None, _finish_reason(stream), chunk=True, first=first)])
    if include_usage:
        yield event([], usage=_usage(stream))
    yield "data: [DONE]\n\n"


class _EventStream(StreamingResponse):
    """A response of server-sent events that cancels its generation, and gives up its place, however it ends.

    Starlette drops the iterator of a response whose client hung up; without the cancel the
    generation would go on decoding for nobody.
    """

    def __init__(self, events: AsyncIterator[str], stream: GenerationStream, leave: Callable[[], None]):
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.stream, self.leave = stream, leave

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stream.cancel()  # after a complete response this changes nothing
            self.leave()




async def _on_invalid_request(request: Request, error: InvalidRequest) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return error_response(error.status, str(error), error.param, error.code, headers)


async def _on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """Pydantic's 422 becomes OpenAI's 400, one line per problem: `messages.0.role: Input should be ...`."""
    problems = [(".".join(str(part) for part in problem["loc"][1:]) or "body", problem["msg"])
                for problem in error.errors()]
    message = "; ".join(f"{where}: {what}" for where, what in problems) or "invalid request body"
    return error_response(400, message, param=problems[0][0] if problems else None)


async def _on_http_error(request: Request, error: HTTPException) -> JSONResponse:
    return error_response(error.status_code, str(error.detail))


async def _on_server_error(request: Request, error: Exception) -> JSONResponse:
    """A generic body: exception text can tell a client about the machine; the log gets it under the id."""
    request_id = _request_id()
    logger.error("%s %s failed (request id %s)", request.method, request.url.path, request_id, exc_info=error)
    return error_response(500, f"internal server error (request id {request_id}; the details are in the server's log)")


def create_app(llm: LLM, model_name: str, limits: ServerLimits | None = None, *, api_key: str | None = None,
               allowed_hosts: Iterable[str] | None = LOOPBACK_HOSTS) -> FastAPI:
    """The app serving `llm` under `model_name`, the one name requests may ask for.

    `api_key`: the bearer token every request must carry (None: none). `allowed_hosts`: the names (any port) a
    Host header may give, None for any; the default suits a server bound to loopback. `app.state.gate.closing`
    set, requests for generations are refused with 503 (`serve` sets it when told to stop).
    """
    limits = limits or ServerLimits()
    app = FastAPI(title="llmkit", description=f"OpenAI-compatible API serving {model_name}")
    app.add_exception_handler(InvalidRequest, _on_invalid_request)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_server_error)
    app.add_middleware(Guard, limits=limits, api_key=api_key, allowed_hosts=allowed_hosts)
    card = {"id": model_name, "object": "model", "created": int(time.time()), "owned_by": OWNER}
    gate, pump = Gate(limits), _Pump(llm.engine)
    app.state.gate = gate
    max_prompt_chars = limits.prompt_chars(llm.context_length)

    def check_model(name: str) -> None:
        if name != model_name:
            raise InvalidRequest(f"The model {name!r} does not exist: this server serves {model_name!r}",
                                 status=404, param="model", code="model_not_found")

    def check_prompt(prompt: str | list[dict]) -> None:
        chars = len(prompt) if isinstance(prompt, str) else sum(len(message["content"]) for message in prompt)
        if chars > max_prompt_chars:
            param = "messages" if isinstance(prompt, list) else "prompt"
            raise InvalidRequest(f"{chars} characters of {param}, over this server's limit of "
                                 f"{max_prompt_chars} for a context of {llm.context_length} tokens: shorten it",
                                 param=param, code="context_length_exceeded")

    def start(body: _Request, prompt: str | list[dict], asked: int | None) -> GenerationStream:
        """Tokenise (in a worker thread: a long prompt or a schema takes a while) and submit."""
        ids = llm.prompt_ids(prompt)
        room = llm.context_length - len(ids)
        return llm.stream(ids, **_options(body, asked if asked is not None or room < 1
                                          else min(limits.default_max_tokens, room)))

    async def complete(body: _Request, prompt: str | list[dict], request: Request):
        check_model(body.model)
        _refuse_unsupported(body)
        check_prompt(prompt)
        asked = _asked_tokens(body, limits)
        deadline = asyncio.get_running_loop().time() + limits.request_seconds
        reply = _Reply(chat=isinstance(body, ChatCompletionRequest), model=model_name)
        try:
            await gate.enter(deadline)
        except TimedOut as error:
            status, message, code = _failure(error, limits, reply.id)
            raise InvalidRequest(message, status=status, code=code) from None
        handed_on = False
        try:
            try:
                stream = await run_in_threadpool(start, body, prompt, asked)
            except ContextLengthError as error:
                raise InvalidRequest(str(error), param="messages" if isinstance(prompt, list) else "prompt",
                                     code="context_length_exceeded") from error
            except ValueError as error:  # bad sampling values, an invalid schema or regex, two constraints at once
                raise InvalidRequest(str(error)) from error
            if body.stream:
                include_usage = body.stream_options is not None and body.stream_options.include_usage
                events = _events(reply, stream, _deltas(pump.follow(stream), stream, deadline), include_usage, limits)
                handed_on = True
                return _EventStream(events, stream, gate.leave)
            try:
                text = "".join([delta async for delta in _deltas(pump.follow(stream), stream, deadline, request)])
            except Exception as error:
                status, message, code = _failure(error, limits, reply.id)
                raise InvalidRequest(message, status=status, code=code) from None
            choice = reply.choice(text, _finish_reason(stream), chunk=False)
            return reply.body([choice], chunk=False, usage=_usage(stream))
        finally:
            if not handed_on:
                gate.leave()

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


def serve(llm: LLM, host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None,
          limits: ServerLimits | None = None, api_key: str | None = None, allowed_hosts: Iterable[str] = ()) -> None:
    """Serve until interrupted (Ctrl-C). Beyond loopback an `api_key` is required (ValueError without one); on
    loopback, Host headers must name loopback or one of `allowed_hosts`."""
    import uvicorn

    check_binding(host, api_key)
    name = model_name or llm.name
    hosts = [*LOOPBACK_HOSTS, *allowed_hosts] if is_loopback(host) else None
    app = create_app(llm, name, limits, api_key=api_key, allowed_hosts=hosts)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.gate.closing = True  # requests still arriving on open connections get 503
            super().handle_exit(sig, frame)

    print(f"llmkit: serving {name} ({llm.source}) at http://{host}:{port}/v1", flush=True)
    Server(uvicorn.Config(app, host=host, port=port)).run()
