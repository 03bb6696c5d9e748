"""RemoteLLM: core.LLM's calling surface over an OpenAI-compatible server (llmkit serve, vLLM, llama.cpp, Ollama).

What the RAG answerer, the agents' LocalModel and the apps use works unchanged: `stream` (text deltas, then
`finish_reason` and token counts, `cancel()`), `generate`, `prompt_ids` (for its length), `context_length`
and `name`. Chat messages go to POST /chat/completions, a string prompt to POST /completions, both streamed
as server-sent events. `json_schema` becomes `response_format` json_schema.

Plain `http.client` rather than urllib: a stream must be cancellable from another thread, and that takes the
socket, which urllib hides. (agents.backends.OpenAIModel makes the same requests unstreamed, but core
imports nothing of ours.)

Does not: tokenize (`prompt_ids` is an estimate, see there), send token-id prompts, constrain by `choices`
or `regex`, apply top_k, min_p, logit_bias or a logits_processor (all refused with ValueError rather than
silently ignored), retry, or pool connections. Errors: ValueError when the server refuses a request (HTTP
4xx, its message included), ConnectionError when it cannot be reached, fails (5xx) or breaks off a stream.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import socket
import urllib.parse
from collections.abc import Iterator

from core.sampling import SamplingParams

Prompt = str | list[dict]  # raw text, or chat messages the server's chat template formats

# SmolLM2's tokenizer gives 3-4 characters a token on prose and code, 2.1-2.5 on pages of tables and numbers
# (the demo NIST PDFs); larger vocabularies give more. Estimating low would send prompts the server refuses.
CHARS_PER_TOKEN = 2.5
TOKENS_PER_MESSAGE = 5  # a chat template's role header and end-of-turn marks: "<|im_start|>user\n...<|im_end|>\n"
TEMPLATE_TOKENS = 24  # once per chat prompt: the assistant header, and a default system prompt (SmolLM2's is 17)
DEFAULTS = SamplingParams()
# Sampling options the OpenAI API has no field for; a non-default value is refused (see `RemoteLLM.stream`).
UNSENDABLE = ("top_k", "min_p", "logit_bias", "logits_processor")


class RemoteLLM:
    """A model behind an OpenAI-compatible API; `base_url` ends in /v1, as OpenAI clients take it.

    `model=None` asks GET /models and takes the first model listed (so a wrong URL fails here).
    `context_length` cannot be asked portably: give the server's (`llmkit serve` holds 4096 by default).
    `timeout`: seconds to connect, and the longest wait for the next piece of a reply.
    """

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None,
                 context_length: int = 8192, timeout: float = 120):
        parts = urllib.parse.urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._parts = parts
        self.api_key, self.timeout = api_key, timeout
        self.context_length = context_length  # tokens of prompt and output together
        self.name = model or self._first_model()

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """Placeholder ids, as many as the prompt has tokens by estimate; only the length means anything.

        The server's tokenizer is out of reach, so the count is characters / CHARS_PER_TOKEN (rounded up),
        plus the chat template's tokens. That is above the true count for prose, code and most tables in
        Latin script, so a prompt budgeted with it fits; other scripts, or long runs of digits and
        symbols, can take more tokens, and the server then refuses the request (ValueError).
        """
        path, _ = _route(prompt)
        if path == "/completions":
            return [0] * math.ceil(len(prompt) / CHARS_PER_TOKEN)
        chars = sum(len(str(message.get("content") or "")) for message in prompt)
        return [0] * (math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(prompt) + TEMPLATE_TOKENS)

    def stream(self, prompt: Prompt, *, json_schema=None, choices=None, regex=None, **sampling) -> RemoteStream:
        """Text deltas of the continuation, as `LLM.stream`; the request is sent here, so a refusal raises here.

        `sampling`: max_new_tokens, temperature (0 = greedy), top_p, stop, seed, as `LLM.stream` takes and
        checks them (same defaults: greedy, 256 tokens). repetition_penalty other than 1 is sent as
        `repetition_penalty` (vLLM, SGLang) and `repeat_penalty` (llama.cpp); Ollama and `llmkit serve`
        ignore both, and OpenAI's own API refuses them: pass repetition_penalty=1.0 there.
        """
        params = SamplingParams(**sampling)
        unsendable = [name for name in UNSENDABLE if getattr(params, name) != getattr(DEFAULTS, name)]
        if choices is not None or regex is not None:
            unsendable.append("choices" if choices is not None else "regex")
        if unsendable:
            raise ValueError(f"{', '.join(unsendable)}: the OpenAI API has no such option, so a remote model cannot "
                             "take it (constrain output with json_schema; sample with temperature, top_p and seed)")
        path, body = _route(prompt)
        body.update(model=self.name, stream=True, stream_options={"include_usage": True},
                    temperature=params.temperature, top_p=params.top_p)
        if params.max_new_tokens is not None:  # None: until the end of turn or of the context, as OpenAI does
            body["max_tokens"] = params.max_new_tokens
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if params.repetition_penalty != DEFAULTS.repetition_penalty:
            body["repetition_penalty"] = body["repeat_penalty"] = params.repetition_penalty
        if json_schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": json_schema, "strict": True}}
        connection, response, sock = self._request("POST", path, body)
        return RemoteStream(self.base_url + path, connection, response, sock, chat=path == "/chat/completions",
                            prompt_tokens=len(self.prompt_ids(prompt)))

    def generate(self, prompt: Prompt, **options) -> str:
        return "".join(self.stream(prompt, **options))

    def _first_model(self) -> str:
        url = self.base_url + "/models"
        connection, response, _ = self._request("GET", "/models")
        try:
            models = [card["id"] for card in json.loads(response.read())["data"]]
        except (OSError, http.client.HTTPException) as error:
            raise ConnectionError(f"lost the reply from {url}: {error!r}") from None
        except (ValueError, KeyError, TypeError) as error:
            raise ConnectionError(f"{url} did not answer an OpenAI model list ({error!r})") from None
        finally:
            connection.close()
        if not models:
            raise ValueError(f"{url} lists no models: name one with model=...")
        return models[0]

    def _request(self, method: str, path: str, body: dict | None = None):
        """(connection, response, socket) of a request that got a 2xx status; the caller closes the connection."""
        url = self.base_url + path
        kind = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
        connection = kind(self._parts.hostname, self._parts.port, timeout=self.timeout)
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            connection.request(method, self._parts.path + path, None if body is None else json.dumps(body), headers)
            sock = connection.sock  # kept now: http.client lets go of it once the response owns the connection
            response = connection.getresponse()
            refusal = _error_message(response.read()) if response.status >= 400 else None
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            raise ConnectionError(f"cannot reach {url}: {error!r}") from None
        if refusal is not None:
            connection.close()
            error_kind = ValueError if response.status < 500 else ConnectionError
            raise error_kind(f"{url} answered HTTP {response.status}: {refusal}")
        return connection, response, sock


def _route(prompt: Prompt) -> tuple[str, dict]:
    """The endpoint path and body for a prompt: text to /completions, messages to /chat/completions."""
    if isinstance(prompt, str):
        return "/completions", {"prompt": prompt}
    if isinstance(prompt, list) and prompt and all(isinstance(message, dict) for message in prompt):
        return "/chat/completions", {"messages": prompt}
    raise ValueError("a prompt for a remote model is a string or a non-empty list of {role, content} messages "
                     f"(token ids cannot be sent: the server tokenizes), got {str(prompt)[:80]}")


def _error_message(raw: bytes) -> str:
    """The message of an error reply: OpenAI's {"error": {"message"}}, or the raw text."""
    text = raw.decode(errors="replace")
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = json.loads(text)["error"]
        return error["message"] if isinstance(error, dict) else str(error)
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
        return str(json.loads(text)["detail"])  # FastAPI's shape, from servers that keep it
    return text[:500]


class RemoteStream:
    """One remote request, read as `core.GenerationStream` is: iterate for text deltas; then `finish_reason`.

    finish_reason is the server's ("stop", "length", ...), or "cancelled" after `cancel()` or a reader
    that stopped reading, or "error" when the server reported an error mid-stream (raised as ConnectionError).
    prompt_tokens and completion_tokens are the server's usage report; servers that send none leave the
    estimate of `RemoteLLM.prompt_ids` and the count of deltas received.
    """

    def __init__(self, url: str, connection: http.client.HTTPConnection, response: http.client.HTTPResponse,
                 sock: socket.socket, chat: bool, prompt_tokens: int):
        self.url, self.chat = url, chat
        self._connection, self._response, self._socket = connection, response, sock
        self.prompt_tokens, self.completion_tokens = prompt_tokens, 0
        self.finish_reason: str | None = None
        self.cancelled = False

    def __iter__(self) -> Iterator[str]:
        try:
            yield from self._deltas()
        except ConnectionError:
            self.finish_reason = "error"
            raise
        finally:
            if self.finish_reason is None:  # cancelled, or the reader stopped reading: hang up, the server stops
                self.cancel()
                self.finish_reason = "cancelled"
            self._response.close()  # under Connection: close the response, not the connection, owns the socket
            self._connection.close()

    def cancel(self) -> None:
        """Hang up, from any thread; the reader returns and the server, seeing the client gone, stops generating."""
        self.cancelled = True
        with contextlib.suppress(OSError):  # already closed
            self._socket.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked on the socket, as close() would not

    def _events(self) -> Iterator[str]:
        """The data of each server-sent event; ends quietly once cancelled."""
        lines: list[str] = []
        while True:
            try:
                line = self._response.readline()
            except (OSError, http.client.HTTPException) as error:
                if self.cancelled:
                    return
                raise ConnectionError(f"lost the stream from {self.url}: {error!r}") from None
            if not line:
                return
            line = line.decode().rstrip("\r\n")
            if not line and lines:  # a blank line ends an event
                yield "\n".join(lines)
                lines = []
            elif line.startswith("data:"):
                lines.append(line[5:].removeprefix(" "))

    def _deltas(self) -> Iterator[str]:
        for data in self._events():
            if self.cancelled or data == "[DONE]":
                return
            chunk = self._parse(data)
            if usage := chunk.get("usage"):
                self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
                self.completion_tokens = usage.get("completion_tokens", self.completion_tokens)
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content") if self.chat else choice.get("text")
                if text:
                    self.completion_tokens += 1
                    yield text
                self.finish_reason = choice.get("finish_reason") or self.finish_reason
        if self.finish_reason is None and not self.cancelled:
            raise ConnectionError(f"the stream from {self.url} ended before the server gave a finish reason")

    def _parse(self, data: str) -> dict:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ConnectionError(f"{self.url} sent an event that is not JSON: {data[:200]}") from None
        if "error" in chunk:
            raise ConnectionError(f"{self.url} failed mid-stream: {_error_message(data.encode())}")
        return chunk
