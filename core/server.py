"""An OpenAI-compatible HTTP server over one LLM, for OpenAI clients, LangChain's ChatOpenAI and the like.

GET /v1/models, POST /v1/chat/completions and POST /v1/completions, each streamed (server-sent
events) or not. One thread (`_Pump`) runs the engine's steps for every request and hands each one's
deltas to the event loop, so concurrent requests, streamed or not, decode together in the engine's batch
(its continuous batching is the one scheduler) and no request holds a worker thread while it generates.
Bad input is answered with HTTP 400 (404 for an unknown model) in OpenAI's error shape, before anything
is queued; a prompt, or prompt plus max_tokens, over the context with code "context_length_exceeded", as
OpenAI does. A client that hangs up ends its generation, so its engine row frees for the next request.
Output is constrained by `response_format` (json_schema, json_object) or by vLLM's `guided_choice` and
`guided_regex`.

Shared use: `ServerLimits` bounds each request (body bytes, prompt characters, max_tokens, wall time) and
all of them (running and queued: 429 with Retry-After beyond them), each checked before the work it would
cost. An optional API key is checked as a bearer token (required to bind beyond loopback), and a server on
loopback answers only Host headers naming loopback (a DNS-rebinding page cannot reach it). Server errors
answer a generic message carrying a request id; the details go to the log.

Does not do: tools or function calling, n > 1, logprobs, presence/frequency penalties, images or
audio, embeddings, TLS (put it behind a proxy for that), or per-client quotas.
fastapi and uvicorn are imported here only: `import core` does not load this module.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from core import settings
from core.engine import Engine, GenerationStream
from core.errors import ContextLengthError, ModelRequestError
from core.llm import LLM

logger = logging.getLogger(__name__)

DEFAULT_TEMPERATURE = 1.0  # OpenAI's default, so clients behave as they do there; clients wanting determinism send 0
DISCONNECT_POLL_S = 0.5  # how often a non-streamed request checks whether its client is still there
OWNER = "llmkit"
PROMPT_CHARS_PER_TOKEN = 4  # max_prompt_chars defaults to this many per token of context: no prompt that fits is
# refused (tokens of text average 3-4 characters), and one far over the context is refused before it is tokenised
RETRY_AFTER_S = 1  # told to a client refused for capacity (429): places free as fast as generations end
SHUTDOWN_RETRY_AFTER_S = 30  # told to a client refused because the server is shutting down (503)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")  # Host header names a loopback server answers by default


@dataclass(frozen=True)
class ServerLimits:
    """What one request, and all requests together, may take; each is checked before the work it would cost.

    The defaults suit a team sharing one machine. `from_settings` takes flags over LLMKIT_SERVE_* variables.
    """

    max_body_bytes: int = 2**20  # a request body; a bigger one is refused (413) before it is read whole
    max_prompt_chars: int | None = None  # characters of prompt or messages, before tokenising (None: 4 per token
    # of the model's context)
    default_max_tokens: int = 1024  # when a request gives no max_tokens (fewer where the context has less room)
    max_tokens: int = 4096  # the most a request may ask for
    max_running: int = 8  # requests generating at once (llmkit's engine batches 8 by default)
    max_queued: int = 32  # requests waiting for a running place; beyond them, 429 with Retry-After
    request_seconds: float = 300  # one request's wall time, waiting included; past it, it is cancelled

    def __post_init__(self):
        for limit in fields(self):
            value = getattr(self, limit.name)
            if value is not None and value < (0 if limit.name == "max_queued" else 1):
                raise ValueError(f"ServerLimits.{limit.name} must be positive, got {value!r}")
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(f"default_max_tokens ({self.default_max_tokens}) is over max_tokens ({self.max_tokens})")

    @classmethod
    def from_settings(cls, **given: int | float | None) -> ServerLimits:
        """The limits from `given` (a CLI's flags; None: not given), else their LLMKIT_SERVE_* variable, else the
        default."""
        values = {}
        for name, variable in settings.SERVE_LIMITS.items():
            value = given.get(name)
            values[name] = settings.env_int(variable) if value is None else value
        return cls(**{name: value for name, value in values.items() if value is not None})

    def prompt_chars(self, context_length: int) -> int:
        return self.max_prompt_chars or PROMPT_CHARS_PER_TOKEN * context_length


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server to this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, api_key: str | None) -> None:
    """ValueError unless the server stays on loopback or has an API key: anyone who can reach it runs the model."""
    if not api_key and not is_loopback(host):
        raise ValueError(f"serving on {host} reaches beyond this machine: give an API key clients must send "
                         f"(--api-key or env {settings.API_KEY}), or bind to 127.0.0.1")


class InvalidRequest(Exception):
    """A request the server understood but cannot serve; answered in OpenAI's error shape."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.status, self.param, self.code, self.retry_after = status, param, code, retry_after


class _TimedOut(Exception):
    """A request ran past ServerLimits.request_seconds."""


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
    # The engine's other reasons ("cancelled", "error") never reach a client that is still reading.
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
    """The text deltas of `stream` as the pump hands them on; _TimedOut (the stream cancelled) past `deadline`.
    With `request`, the stream is cancelled once its client is gone."""
    loop = asyncio.get_running_loop()
    getter, next_check = None, loop.time() + DISCONNECT_POLL_S
    try:
        while True:
            getter = getter or asyncio.ensure_future(deltas.get())
            now = loop.time()
            if now >= deadline:
                stream.cancel()
                raise _TimedOut
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


class _Gate:
    """Places for requests: at most max_running generating, max_queued waiting (first come, first served) for one;
    beyond them 429, and 503 once the server is shutting down (`closing`). Lives on the event loop."""

    def __init__(self, limits: ServerLimits):
        self.limits = limits
        self.running = 0
        self.waiting: deque[asyncio.Future] = deque()
        self.closing = False

    async def enter(self, deadline: float) -> None:
        """Wait for a place; the caller calls `leave` once it got one and is done."""
        if self.closing:
            raise InvalidRequest("the server is shutting down: retry later", status=503, code="server_shutting_down",
                                 retry_after=SHUTDOWN_RETRY_AFTER_S)
        if self.running < self.limits.max_running and not self.waiting:
            self.running += 1
            return
        if len(self.waiting) >= self.limits.max_queued:
            raise InvalidRequest(f"the server is busy ({self.running} requests generating, {len(self.waiting)} "
                                 "waiting): retry shortly", status=429, code="rate_limit_exceeded",
                                 retry_after=RETRY_AFTER_S)
        place = asyncio.get_running_loop().create_future()
        self.waiting.append(place)
        try:
            await asyncio.wait({place}, timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
        except BaseException:  # cancelled while waiting
            if place.done():
                self.leave()  # given a place on the way out: hand it on
            else:
                place.cancel()
                self.waiting.remove(place)
            raise
        if not place.done():
            place.cancel()
            self.waiting.remove(place)
            raise _TimedOut

    def leave(self) -> None:
        """Hand the place on to the first waiting request, or free it."""
        while self.waiting:
            place = self.waiting.popleft()
            if not place.done():
                place.set_result(None)
                return
        self.running -= 1


def _request_id() -> str:
    return f"req-{uuid.uuid4().hex[:16]}"


def _failure(error: BaseException, limits: ServerLimits, where: str) -> tuple[int, str, str | None]:
    """(status, message, code) for a generation that failed: its own refusal as it is, a timeout, else a generic
    message whose request id finds the details in the log."""
    if isinstance(error, _TimedOut):
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
        yield f"data: {json.dumps(_error_body(message, kind, code=code))}\n\n"
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


def _error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error(status: int, message: str, param: str | None = None, code: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(_error_body(message, kind, param, code), status_code=status, headers=headers)


async def _on_invalid_request(request: Request, error: InvalidRequest) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return _error(error.status, str(error), error.param, error.code, headers)


async def _on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """Pydantic's 422 becomes OpenAI's 400, one line per problem: `messages.0.role: Input should be ...`."""
    problems = [(".".join(str(part) for part in problem["loc"][1:]) or "body", problem["msg"])
                for problem in error.errors()]
    message = "; ".join(f"{where}: {what}" for where, what in problems) or "invalid request body"
    return _error(400, message, param=problems[0][0] if problems else None)


async def _on_http_error(request: Request, error: HTTPException) -> JSONResponse:
    return _error(error.status_code, str(error.detail))


async def _on_server_error(request: Request, error: Exception) -> JSONResponse:
    """A generic body: exception text can tell a client about the machine; the log gets it under the id."""
    request_id = _request_id()
    logger.error("%s %s failed (request id %s)", request.method, request.url.path, request_id, exc_info=error)
    return _error(500, f"internal server error (request id {request_id}; the details are in the server's log)")


def _host_name(header: str) -> str:
    """The host of a Host header, without its port: "[::1]:8000" -> "[::1]"."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0]


class _Guard:
    """The checks made before a request reaches the app: its Host (a loopback server answers only names of
    loopback, so a DNS-rebinding page cannot reach it), its API key, and its body size (read here, bounded, and
    handed on whole: a body over the limit is refused, 413, without being kept)."""

    def __init__(self, app, limits: ServerLimits, api_key: str | None, allowed_hosts: Iterable[str] | None):
        self.app, self.limits = app, limits
        self.key = api_key.encode() if api_key else None
        self.hosts = None if allowed_hosts is None else {_host_name(host) for host in allowed_hosts}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        refusal = self._refusal(headers)
        if refusal is None and scope["method"] in ("POST", "PUT", "PATCH"):
            body, refusal = await self._body(headers, receive)
            if body is None and refusal is None:
                return  # the client left while sending
            receive = _replay(body, receive)
        if refusal is not None:
            return await refusal(scope, receive, send)
        await self.app(scope, receive, send)

    def _refusal(self, headers: dict[str, str]) -> JSONResponse | None:
        host = headers.get("host", "")
        if self.hosts is not None and _host_name(host) not in self.hosts:
            return _error(421, f"Host {host!r} is not served here: this server answers {', '.join(sorted(self.hosts))}"
                          " (llmkit serve --allowed-host adds a name)", code="host_not_allowed")
        given = headers.get("authorization", "")
        if self.key is not None and not (given[:7].lower() == "bearer " and
                                         hmac.compare_digest(given[7:].strip().encode("latin-1"), self.key)):
            return _error(401, "Incorrect or missing API key: send it as the header `Authorization: Bearer KEY`",
                          code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        return None

    async def _body(self, headers: dict[str, str], receive) -> tuple[bytes | None, JSONResponse | None]:
        limit = self.limits.max_body_bytes
        too_large = _error(413, f"the request body is over this server's limit of {limit} bytes",
                           code="request_too_large")
        length = headers.get("content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > limit):
            return b"", too_large
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return b"", too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None


def _replay(body: bytes, receive):
    """A `receive` that gives `body` whole, then what the client sends next (its disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed():
        return pending.pop() if pending else await receive()

    return replayed


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
    app.add_middleware(_Guard, limits=limits, api_key=api_key, allowed_hosts=allowed_hosts)
    card = {"id": model_name, "object": "model", "created": int(time.time()), "owned_by": OWNER}
    gate, pump = _Gate(limits), _Pump(llm.engine)
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
        except _TimedOut as error:
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
