"""RemoteLLM: a chat model (core.chat.ChatModel) behind an OpenAI-compatible server (llmkit serve, vLLM, llama.cpp,
Ollama), so an app moves to a bigger model by changing one setting.

Chat messages go to POST /chat/completions, a string prompt to POST /completions, both streamed as
server-sent events; `generate_batch` sends its prompts as concurrent requests, which the server batches.
Constraints: `json_schema` goes as `response_format` json_schema. `choices` and `regex` go as vLLM's guided
decoding parameters `guided_choice` and `guided_regex`, which vLLM (up to 0.11; 0.12 renamed them) and
`llmkit serve` enforce. With `guided_decoding=False`, for servers without them (OpenAI, llama.cpp, Ollama),
`choices` go as a response_format schema, an object whose one key takes one of them (OpenAI wants an object
at the root), and the text is the choice; `regex` is then refused.

Plain `http.client` rather than urllib: a stream must be cancellable from another thread, and that takes the
socket, which urllib hides.

Does not: tokenize (`count_tokens` is an estimate, see there), send token-id prompts, apply top_k, min_p,
logit_bias or a logits_processor (all refused with ModelRequestError rather than silently ignored), retry,
or pool connections. Replies are read bounded (MAX_REPLY_BYTES, MAX_EVENT_BYTES, MAX_STREAM_CHARS): a server
that sends without end fails the request (ModelUnavailableError) rather than filling memory.
Errors (core.errors): ModelRequestError when the server refuses a request (HTTP 4xx, its message included),
ContextLengthError when it says the request exceeds its context, and ModelUnavailableError when it cannot be
reached, fails (5xx) or breaks off a stream.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import re
import socket
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from core.errors import ContextLengthError, ModelRequestError, ModelUnavailableError
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
MAX_CONCURRENT_REQUESTS = 8  # of one generate_batch: as many as llmkit serve decodes together by default
MAX_REPLY_BYTES = 8 * 2**20  # of a reply that is not streamed (the model list); an error reply is cut there
MAX_EVENT_BYTES = 2**20  # of one line, and of one event, of a stream: a delta is a few bytes, a tool call kilobytes
MAX_STREAM_CHARS = 8 * 2**20  # of the text of one streamed reply: far over what any context holds
CHOICE_KEY = "choice"  # the key of the response_format object that carries a choice (guided_decoding=False)
# How servers say that a request exceeds the context: OpenAI's error code (llmkit serve sends it too), the
# message of OpenAI and vLLM, llama.cpp's error type.
_CONTEXT_OVERFLOW = re.compile(r"context_length_exceeded|maximum context length|exceed_context_size", re.IGNORECASE)


def estimate_tokens(prompt: Prompt) -> int:
    """The prompt's tokens, estimated without the model's tokenizer: characters / CHARS_PER_TOKEN (rounded up),
    plus the chat template's tokens for messages.

    That is above the true count for prose, code and most tables in Latin script, so a prompt budgeted
    with it fits; other scripts, or long runs of digits and symbols, can take more tokens.
    """
    if isinstance(prompt, str):
        return math.ceil(len(prompt) / CHARS_PER_TOKEN)
    chars = sum(len(str(message.get("content") or "")) for message in prompt)
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(prompt) + TEMPLATE_TOKENS


class RemoteLLM:
    """A model behind an OpenAI-compatible API; `base_url` ends in /v1, as OpenAI clients take it.

    `model=None` asks GET /models and takes the first model listed (so a wrong URL fails here).
    `context_length` cannot be asked portably: give the server's (`llmkit serve` holds 4096 by default).
    `timeout`: seconds to connect, and the longest wait for the next piece of a reply.
    `guided_decoding`: whether the server takes `guided_choice` / `guided_regex` (see the module docstring).
    """

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None,
                 context_length: int = 8192, timeout: float = 120, guided_decoding: bool = True):
        parts = urllib.parse.urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._parts = parts
        self.api_key, self.timeout, self.guided_decoding = api_key, timeout, guided_decoding
        self.context_length = context_length  # tokens of prompt and output together
        self.name = model or self._first_model()

    def count_tokens(self, prompt: Prompt) -> int:
        """An estimate (`estimate_tokens`): the server's tokenizer is out of reach. A prompt budgeted with it fits
        unless it is in another script or mostly digits and symbols; the server then refuses it
        (ContextLengthError)."""
        _route(prompt)
        return estimate_tokens(prompt)

    def stream(self, prompt: Prompt, *, json_schema=None, choices=None, regex=None, tools: list[dict] | None = None,
               tool_choice: str | dict | None = None, **sampling) -> RemoteStream:
        """Text deltas of the continuation, as `LLM.stream`; the request is sent here, so a refusal raises here.

        `sampling`: max_new_tokens, temperature (0 = greedy), top_p, stop, seed, as `LLM.stream` takes and
        checks them (same defaults: greedy, 256 tokens). repetition_penalty other than 1 is sent as
        `repetition_penalty` (vLLM, SGLang) and `repeat_penalty` (llama.cpp); Ollama and `llmkit serve`
        ignore both, and OpenAI's own API refuses them: pass repetition_penalty=1.0 there.
        `tools`, `tool_choice`: OpenAI function tools, for a chat prompt to a server that calls them (not
        `llmkit serve`); the calls the reply makes are in `stream.tool_calls` once it is read.
        """
        params = SamplingParams(**sampling)
        unsendable = [name for name in UNSENDABLE if getattr(params, name) != getattr(DEFAULTS, name)]
        if unsendable:
            raise ModelRequestError(f"{', '.join(unsendable)}: the OpenAI API has no such option, so a remote model "
                                    "cannot take it (sample with temperature, top_p and seed)")
        path, body = _route(prompt)
        if (tools is not None or tool_choice is not None) and path != "/chat/completions":
            raise ModelRequestError("tools are for chat prompts: give messages, not a string")
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
        body.update(self._constraint(json_schema, choices, regex))
        if tools is not None:
            body["tools"] = tools
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
        connection, response, sock = self._request("POST", path, body)
        return RemoteStream(self.base_url + path, connection, response, sock, chat=path == "/chat/completions",
                            prompt_tokens=estimate_tokens(prompt),
                            choice_object=choices is not None and not self.guided_decoding)

    def generate(self, prompt: Prompt, **options) -> str:
        return "".join(self.stream(prompt, **options))

    def generate_batch(self, prompts: list[Prompt], **options) -> list[str]:
        """One request per prompt, MAX_CONCURRENT_REQUESTS at a time, so the server batches them; outputs in
        prompt order. The first failure raises, and the requests not yet sent are not sent."""
        prompts = list(prompts)
        if not prompts:
            return []
        pool = ThreadPoolExecutor(min(len(prompts), MAX_CONCURRENT_REQUESTS), thread_name_prefix="RemoteLLM")
        try:
            return list(pool.map(lambda prompt: self.generate(prompt, **options), prompts))
        finally:
            pool.shutdown(cancel_futures=True)

    def _constraint(self, json_schema, choices, regex) -> dict:
        """The body fields that carry the constraint; what the server cannot take is refused here."""
        given = [name for name, value in (("json_schema", json_schema), ("choices", choices), ("regex", regex))
                 if value is not None]
        if len(given) > 1:
            raise ModelRequestError(f"give at most one of json_schema, choices, regex; got {given}")
        if isinstance(json_schema, type) and hasattr(json_schema, "model_json_schema"):  # a Pydantic model class
            json_schema = json_schema.model_json_schema()
        if choices is not None:
            if isinstance(choices, str) or not choices or not all(isinstance(c, str) and c for c in choices):
                raise ModelRequestError(f"choices must be a non-empty list of non-empty strings, got {choices!r}")
            if self.guided_decoding:
                return {"guided_choice": list(choices)}
            json_schema = {"type": "object", "properties": {CHOICE_KEY: {"type": "string", "enum": list(choices)}},
                           "required": [CHOICE_KEY], "additionalProperties": False}
        if regex is not None:
            if not isinstance(regex, str):
                raise ModelRequestError(f"regex must be a string, got {type(regex).__name__}")
            if not self.guided_decoding:
                raise ModelRequestError("regex needs a server with guided decoding (vLLM, llmkit serve), and this "
                                        "RemoteLLM has guided_decoding=False: constrain with choices or json_schema")
            return {"guided_regex": regex}
        if json_schema is None:
            return {}
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "output", "schema": json_schema, "strict": True}}}

    def _first_model(self) -> str:
        url = self.base_url + "/models"
        connection, response, _ = self._request("GET", "/models")
        try:
            reply = response.read(MAX_REPLY_BYTES + 1)
            if len(reply) > MAX_REPLY_BYTES:
                raise ModelUnavailableError(f"{url} sent a model list over {MAX_REPLY_BYTES} bytes: is it an "
                                            "OpenAI-compatible server?")
            models = [card["id"] for card in json.loads(reply)["data"]]
        except (OSError, http.client.HTTPException) as error:
            raise ModelUnavailableError(f"lost the reply from {url}: {error!r}") from None
        except (ValueError, KeyError, TypeError) as error:
            raise ModelUnavailableError(f"{url} did not answer an OpenAI model list ({error!r})") from None
        finally:
            connection.close()
        if not models:
            raise ModelRequestError(f"{url} lists no models: name one with model=...")
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
            refusal = response.read(MAX_REPLY_BYTES) if response.status >= 400 else None  # cut: only its message counts
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            raise ModelUnavailableError(f"cannot reach {url}: {error!r}") from None
        if refusal is not None:
            connection.close()
            message = f"{url} answered HTTP {response.status}: {_error_message(refusal)}"
            if response.status >= 500:
                raise ModelUnavailableError(message)
            if _CONTEXT_OVERFLOW.search(refusal.decode(errors="replace")):
                raise ContextLengthError(message)
            raise ModelRequestError(message)
        return connection, response, sock


def _route(prompt: Prompt) -> tuple[str, dict]:
    """The endpoint path and body for a prompt: text to /completions, messages to /chat/completions."""
    if isinstance(prompt, str):
        return "/completions", {"prompt": prompt}
    if isinstance(prompt, list) and prompt and all(isinstance(message, dict) for message in prompt):
        return "/chat/completions", {"messages": prompt}
    raise ModelRequestError("a prompt for a remote model is a string or a non-empty list of {role, content} messages "
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

    finish_reason is the server's ("stop", "length", "tool_calls", ...), or "cancelled" after `cancel()` or a
    reader that stopped reading, or "error" when the server reported an error mid-stream (raised as
    ModelUnavailableError). prompt_tokens and completion_tokens are the server's usage report; servers that
    send none leave the estimate of `estimate_tokens` and the count of deltas received. `tool_calls`: the
    reply's calls of the request's `tools`, in OpenAI's shape, arguments as JSON text.
    `choice_object`: the reply is the response_format object that carries a choice; the text given is the
    choice, once the reply is complete (a server that ignored the format: its text as it is).
    """

    def __init__(self, url: str, connection: http.client.HTTPConnection, response: http.client.HTTPResponse,
                 sock: socket.socket, chat: bool, prompt_tokens: int, choice_object: bool = False):
        self.url, self.chat, self.choice_object = url, chat, choice_object
        self._connection, self._response, self._socket = connection, response, sock
        self.prompt_tokens, self.completion_tokens = prompt_tokens, 0
        self.finish_reason: str | None = None
        self.tool_calls: list[dict] = []
        self.cancelled = False

    def __iter__(self) -> Iterator[str]:
        try:
            yield from (_the_choice(self._deltas()) if self.choice_object else self._deltas())
        except ModelUnavailableError:
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
        size = 0  # of the event so far
        while True:
            try:
                line = self._response.readline(MAX_EVENT_BYTES + 1)
            except (OSError, http.client.HTTPException) as error:
                if self.cancelled:
                    return
                raise ModelUnavailableError(f"lost the stream from {self.url}: {error!r}") from None
            if not line:
                return
            size += len(line)
            if size > MAX_EVENT_BYTES:
                raise ModelUnavailableError(f"{self.url} sent an event over {MAX_EVENT_BYTES} bytes: a server sending "
                                            "without end?")
            line = line.decode(errors="replace").rstrip("\r\n")
            if not line and lines:  # a blank line ends an event
                yield "\n".join(lines)
                lines, size = [], 0
            elif not line:
                size = 0
            elif line.startswith("data:"):
                lines.append(line[5:].removeprefix(" "))

    def _deltas(self) -> Iterator[str]:
        chars = 0
        for data in self._events():
            if self.cancelled or data == "[DONE]":
                return
            chunk = self._parse(data)
            if usage := chunk.get("usage"):
                self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
                self.completion_tokens = usage.get("completion_tokens", self.completion_tokens)
            for choice in chunk.get("choices") or []:
                delta = (choice.get("delta") or {}) if self.chat else {"content": choice.get("text")}
                for piece in delta.get("tool_calls") or []:
                    self._add_tool_call(piece)
                if text := delta.get("content"):
                    chars += len(text)
                    if chars > MAX_STREAM_CHARS:
                        raise ModelUnavailableError(f"{self.url} streamed over {MAX_STREAM_CHARS} characters of "
                                                    "text: a server sending without end?")
                    self.completion_tokens += 1
                    yield text
                self.finish_reason = choice.get("finish_reason") or self.finish_reason
        if self.finish_reason is None and not self.cancelled:
            raise ModelUnavailableError(f"the stream from {self.url} ended before the server gave a finish reason")

    def _add_tool_call(self, piece: dict) -> None:
        """A tool call streams in pieces: the first (by index) has its id and name, the others more arguments."""
        index = piece.get("index", len(self.tool_calls))
        while len(self.tool_calls) <= index:
            self.tool_calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        call, function = self.tool_calls[index], piece.get("function") or {}
        call["id"] = piece.get("id") or call["id"]
        call["function"]["name"] = function.get("name") or call["function"]["name"]
        call["function"]["arguments"] += function.get("arguments") or ""

    def _parse(self, data: str) -> dict:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ModelUnavailableError(f"{self.url} sent an event that is not JSON: {data[:200]}") from None
        if "error" in chunk:
            raise ModelUnavailableError(f"{self.url} failed mid-stream: {_error_message(data.encode())}")
        return chunk


def _the_choice(deltas: Iterator[str]) -> Iterator[str]:
    """The choice in a complete `{"choice": ...}` reply, as one delta; a reply of another shape as it is."""
    text = "".join(deltas)
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    choice = value.get(CHOICE_KEY) if isinstance(value, dict) else None
    text = choice if isinstance(choice, str) else text
    if text:
        yield text
