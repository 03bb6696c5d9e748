"""What is checked before a request reaches the model: the server's limits, where it may bind, its places for
requests (admission: running and queued), and each request's Host, API key and body size.

core.server builds the app; this module holds the parts that decide whether a request gets in, so that they
can be read (and audited) on their own. Does not: rate-limit per client or terminate TLS.
"""

from __future__ import annotations

import asyncio
import hmac
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, fields

from fastapi.responses import JSONResponse

from core import settings
from core.settings import is_loopback

PROMPT_CHARS_PER_TOKEN = 4  # max_prompt_chars defaults to this many per token of context: no prompt that fits is
# refused (tokens of text average 3-4 characters), and one far over the context is refused before it is tokenised
RETRY_AFTER_S = 1  # told to a client refused for capacity (429): places free as fast as generations end
SHUTDOWN_RETRY_AFTER_S = 30  # told to a client refused because the server is shutting down (503)


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


class TimedOut(Exception):
    """A request ran past ServerLimits.request_seconds."""


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(error_body(message, kind, param, code), status_code=status, headers=headers)


class Gate:
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
            raise TimedOut

    def leave(self) -> None:
        """Hand the place on to the first waiting request, or free it."""
        while self.waiting:
            place = self.waiting.popleft()
            if not place.done():
                place.set_result(None)
                return
        self.running -= 1


def _host_name(header: str) -> str:
    """The host of a Host header, without its port: "[::1]:8000" -> "[::1]"."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0]


class Guard:
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
            served = ", ".join(sorted(self.hosts))
            return error_response(421, f"Host {host!r} is not served here: this server answers {served} (llmkit "
                                  "serve --allowed-host adds a name)", code="host_not_allowed")
        given = headers.get("authorization", "")
        if self.key is not None and not (given[:7].lower() == "bearer " and
                                         hmac.compare_digest(given[7:].strip().encode("latin-1"), self.key)):
            return error_response(401, "Incorrect or missing API key: send it as the header "
                                  "`Authorization: Bearer KEY`", code="invalid_api_key",
                                  headers={"WWW-Authenticate": "Bearer"})
        return None

    async def _body(self, headers: dict[str, str], receive) -> tuple[bytes | None, JSONResponse | None]:
        limit = self.limits.max_body_bytes
        too_large = error_response(413, f"the request body is over this server's limit of {limit} bytes",
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
