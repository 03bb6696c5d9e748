"""`llmkit serve` shared by clients who may be careless or hostile: every limit refused before the work it would cost,
capacity answered with 429 + Retry-After, a wall time per request, auth, the Host allowlist, generic error bodies, a
server that stays responsive under load, and RemoteLLM's bounded reads. Over a tiny random model (context 256)."""

import json
import os
import random
import socket
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from core import LLM, ModelUnavailableError, RemoteLLM
from core import remote as remote_module
from core.server import ServerLimits, check_binding, create_app

from conftest import local_http_server, save_tiny_checkpoint, serving, wait_until_engine_idle

MODEL = "tiny"
TIMEOUT = 60


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_checkpoint("llama", folder)
    return LLM.load(str(folder))


@contextmanager
def served(llm, **options):
    """The app over `llm` (`limits`, `api_key`, `allowed_hosts` as create_app takes them), served on loopback."""
    limits = options.pop("limits", ServerLimits())
    app = create_app(llm, MODEL, limits, **options)
    with serving(app) as url:
        yield url, app


def complete(url, timeout=TIMEOUT, headers=None, **body):
    body = {"model": MODEL, "prompt": "The quick brown fox", "max_tokens": 8, "temperature": 0, **body}
    return httpx.post(url + "/completions", json=body, timeout=timeout, headers=headers)


def raw_request(url: str, head: str, body_bytes: int, chunk: bytes = b"x" * 65536) -> str:
    """Send `head`, then up to `body_bytes` of body (as far as the server reads), and return its answer."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(head.encode())

        def send_body():
            sent = 0
            try:
                while sent < body_bytes:
                    sent += sock.send(chunk[: body_bytes - sent])
            except OSError:  # the server answered and closed: the rest of the body is not wanted
                pass

        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        answer = b""
        while b"}" not in answer and (piece := sock.recv(65536)):  # the head, then the JSON error body
            answer += piece
        sender.join(timeout=TIMEOUT)
    return answer.decode(errors="replace")


def test_a_huge_body_is_refused_from_its_content_length_fast_and_without_being_kept(tiny_llm):
    with served(tiny_llm) as (url, _):
        tracemalloc.start()
        started = time.monotonic()
        head = ("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {64 * 2**20}\r\n\r\n")
        answer = raw_request(url, head, 64 * 2**20)
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert answer.startswith("HTTP/1.1 413") and "1048576 bytes" in answer, answer[:300]
    assert elapsed < 5 and peak < 8 * 2**20, (elapsed, peak)


def test_a_chunked_body_is_refused_once_it_passes_the_limit(tiny_llm):
    with served(tiny_llm, limits=ServerLimits(max_body_bytes=4096)) as (url, _):
        head = ("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"1000\r\n" + b"x" * 4096 + b"\r\n"  # 4 KiB chunks, without end
        answer = raw_request(url, head, 10**6, chunk=chunk)
    assert answer.startswith("HTTP/1.1 413"), answer[:300]


def test_a_long_prompt_is_refused_before_it_is_tokenised(tiny_llm, monkeypatch):
    tokenised = []
    real = tiny_llm.prompt_ids
    monkeypatch.setattr(tiny_llm, "prompt_ids", lambda prompt: tokenised.append(prompt) or real(prompt))
    with served(tiny_llm) as (url, _):
        limit = 4 * tiny_llm.context_length  # the default: 4 characters a token of context
        response = complete(url, prompt="x" * (limit + 1))
        chat = httpx.post(url + "/chat/completions", timeout=TIMEOUT, json={
            "model": MODEL, "messages": [{"role": "user", "content": "y" * limit}, {"role": "user", "content": "z"}]})
        fits = complete(url, prompt="fox " * 10)
    for refused, param in ((response, "prompt"), (chat, "messages")):
        error = refused.json()["error"]
        assert refused.status_code == 400 and f"over this server's limit of {limit}" in error["message"], error
        assert error["param"] == param and error["code"] == "context_length_exceeded"
    assert fits.status_code == 200 and tokenised[0] == "fox " * 10  # the first prompt tokenised: the one that fits


def test_max_tokens_has_a_server_default_and_a_cap(tiny_llm):
    with served(tiny_llm, limits=ServerLimits(default_max_tokens=5, max_tokens=40)) as (url, _):
        unbounded = complete(url, max_tokens=None, prompt="fox", stop=None)
        huge = complete(url, max_tokens=10**30)
        newer_name = httpx.post(url + "/chat/completions", timeout=TIMEOUT, json={
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 41})
        at_cap = complete(url, max_tokens=40)
    assert unbounded.status_code == 200 and unbounded.json()["usage"]["completion_tokens"] <= 5
    assert huge.status_code == 400 and "over this server's limit of 40" in huge.json()["error"]["message"]
    assert huge.json()["error"]["param"] == "max_tokens"
    assert newer_name.status_code == 400 and newer_name.json()["error"]["param"] == "max_completion_tokens"
    assert at_cap.status_code == 200


def test_beyond_running_and_queued_requests_a_client_gets_429_with_retry_after(tiny_llm):
    limits = ServerLimits(max_running=1, max_queued=1)
    with served(tiny_llm, limits=limits) as (url, app), ThreadPoolExecutor(2) as pool:
        with tiny_llm.engine._lock:  # the engine is busy: the first request runs (waits on it), the second queues
            running = pool.submit(complete, url)
            time.sleep(0.5)
            queued = pool.submit(complete, url)
            time.sleep(0.5)
            refused = complete(url)
        assert running.result().status_code == 200 and queued.result().status_code == 200
        app.state.gate.closing = True  # as `serve` sets it when told to stop
        closing = complete(url)
        models = httpx.get(url + "/models", timeout=TIMEOUT)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert closing.status_code == 503 and int(closing.headers["Retry-After"]) > 0
    assert models.status_code == 200  # listing models is not a generation: answered while closing


def test_a_request_past_its_wall_time_is_cancelled_with_a_clean_error(tiny_llm):
    with served(tiny_llm, limits=ServerLimits(request_seconds=1)) as (url, _), ThreadPoolExecutor(2) as pool:
        with tiny_llm.engine._lock:  # the engine is stuck for longer than the limit
            whole = pool.submit(complete, url, max_tokens=100)
            streamed = pool.submit(lambda: httpx.post(url + "/completions", timeout=TIMEOUT, json={
                "model": MODEL, "prompt": "fox", "max_tokens": 100, "stream": True}))
            time.sleep(1.5)
        whole, streamed = whole.result(), streamed.result()
        assert wait_until_engine_idle(tiny_llm)
    assert whole.status_code == 504 and whole.json()["error"]["code"] == "timeout"
    assert "limit of 1 s" in whole.json()["error"]["message"]
    events = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    assert streamed.status_code == 200 and events[-1]["error"]["code"] == "timeout"


def test_with_an_api_key_requests_without_it_get_401_in_openai_shape(tiny_llm):
    with served(tiny_llm, api_key="s3cret") as (url, _):
        missing = httpx.get(url + "/models", timeout=TIMEOUT)
        wrong = complete(url, headers={"Authorization": "Bearer guess"})
        right = complete(url, headers={"Authorization": "Bearer s3cret"})
        models = RemoteLLM(url, api_key="s3cret").name
    for refused in (missing, wrong):
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert right.status_code == 200 and models == MODEL


def test_binding_beyond_loopback_without_a_key_is_refused(monkeypatch):
    monkeypatch.delenv("LLMKIT_API_KEY", raising=False)
    for host in ("127.0.0.1", "localhost", "::1"):
        check_binding(host, None)
    check_binding("0.0.0.0", "s3cret")
    with pytest.raises(ValueError, match="--api-key"):
        check_binding("0.0.0.0", None)
    from apps.cli import main

    with pytest.raises(SystemExit, match="LLMKIT_API_KEY"):  # before any model loads
        main(["serve", "--host", "192.168.1.5", "--model", "/nonexistent.gguf"])


@pytest.mark.parametrize("host, status", [
    ("evil.example", 421), ("evil.example:80", 421), ("127.0.0.1.evil.example", 421), ("", 421),
    ("localhost:8000", 200), ("127.0.0.1", 200), ("[::1]:9", 200), ("LocalHost", 200), ("team-box:8000", 200),
])
def test_on_loopback_only_loopback_host_headers_are_answered(tiny_llm, host, status):
    hosts = ("localhost", "127.0.0.1", "[::1]", "team-box")
    with served(tiny_llm, allowed_hosts=hosts) as (url, _):
        response = httpx.get(url + "/models", headers={"Host": host}, timeout=TIMEOUT)
    assert response.status_code == status, response.text
    if status == 421:
        assert response.json()["error"]["code"] == "host_not_allowed"


def test_a_server_error_answers_generically_with_a_request_id_in_the_log(tiny_llm, monkeypatch, caplog):
    def broken(prompt):
        raise RuntimeError("secret detail /home/operator/model")

    monkeypatch.setattr(tiny_llm, "prompt_ids", broken)
    with served(tiny_llm) as (url, _):
        response = complete(url)
    message = response.json()["error"]["message"]
    assert response.status_code == 500 and "secret" not in response.text and "RuntimeError" not in response.text
    request_id = message.split("request id ")[1].split(";")[0]
    assert any(request_id in record.getMessage() and "secret detail" in str(record.exc_info)
               for record in caplog.records)


@pytest.mark.slow  # 48 generations of 240 tokens: seconds
def test_models_stay_fast_while_48_non_streamed_generations_run(tiny_llm):
    limits = ServerLimits(max_running=48)
    with served(tiny_llm, limits=limits) as (url, _), ThreadPoolExecutor(48) as pool:
        generations = [pool.submit(complete, url, timeout=300, max_tokens=240, prompt=f"fox {n}", temperature=1.0,
                                   seed=n) for n in range(48)]
        time.sleep(0.2)
        latencies = []
        while not all(future.done() for future in generations) and len(latencies) < 10:
            started = time.monotonic()
            assert httpx.get(url + "/models", timeout=TIMEOUT).status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.1)
        assert all(future.result().status_code == 200 for future in generations)
    assert latencies and max(latencies) < 0.5, latencies


# --- RemoteLLM's bounded reads, against a server that sends without end ----------------------------------------------

class Endless(BaseHTTPRequestHandler):
    """Answers with `server.first` then `server.repeat` for ever (until the client hangs up)."""

    def reply(self):
        if self.command == "POST":
            self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if self.command == "POST" else "application/json")
        self.end_headers()
        try:
            self.wfile.write(self.server.first)
            while True:
                self.wfile.write(self.server.repeat)
        except OSError:
            pass

    do_GET = do_POST = reply

    def log_message(self, *args):
        pass


DELTA = b'data: {"choices": [{"index": 0, "delta": {"content": "ab"}, "finish_reason": null}]}\n\n'


@pytest.mark.parametrize("first, repeat, words", [
    (b"data: ", b"x" * 65536, "an event over"),  # one line without end
    (b"", b"data: x\n" * 1000, "an event over"),  # one event of endless lines
    (b"", DELTA * 100, "characters"),  # endless small deltas
], ids=["line", "event", "text"])
def test_remote_streams_are_read_bounded(first, repeat, words, monkeypatch):
    monkeypatch.setattr(remote_module, "MAX_STREAM_CHARS", 2**16)  # the same check, reached sooner
    with local_http_server(Endless, first=first, repeat=repeat) as url:
        stream = RemoteLLM(url, model="any", timeout=10).stream([{"role": "user", "content": "hi"}])
        with pytest.raises(ModelUnavailableError, match=words):
            for _ in stream:
                pass
        assert stream.finish_reason == "error"


def test_an_endless_model_list_is_refused(monkeypatch):
    monkeypatch.setattr(remote_module, "MAX_REPLY_BYTES", 2**16)
    endless_list = local_http_server(Endless, first=b'{"data": [', repeat=b'{"id": "m"},' * 1000)
    with endless_list as url, pytest.raises(ModelUnavailableError, match="model list over"):
        RemoteLLM(url)


# --- a bounded load test ----------------------------------------------------------------------------------------------

def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc")
def test_64_clients_mixing_streams_long_prompts_and_cancellations_all_end_cleanly(tiny_llm):
    """For ~30 s: every request ends with a result or a clean refusal, and memory returns near where it was."""
    allowed = {200, 400, 429, 504}
    outcomes, failures = [], []
    with served(tiny_llm, limits=ServerLimits(max_running=16, max_queued=32, request_seconds=20)) as (url, _):
        complete(url)  # warm up before the baseline
        baseline = rss_bytes()
        deadline = time.monotonic() + 30

        def client(n: int):
            rng = random.Random(n)
            with httpx.Client(timeout=TIMEOUT) as session:
                while time.monotonic() < deadline:
                    kind = rng.choice(["stream", "whole", "long", "cancel", "huge"])
                    prompt = "fox " * (rng.randint(40, 120) if kind == "long" else rng.randint(1, 20))
                    body = {"model": MODEL, "prompt": prompt, "max_tokens": rng.randint(1, 150),
                            "temperature": 1.0, "seed": n, "stream": kind in ("stream", "cancel")}
                    if kind == "huge":
                        body["prompt"] = "x" * 5000
                    try:
                        if body["stream"]:
                            with session.stream("POST", url + "/completions", json=body) as response:
                                for number, line in enumerate(response.iter_lines()):
                                    if kind == "cancel" and number > 2:
                                        break
                                    if line.startswith('data: {"error"') and '"code": "timeout"' not in line:
                                        failures.append(line)  # a timeout is a clean end; anything else is not
                            outcomes.append(response.status_code)
                        else:
                            outcomes.append(session.post(url + "/completions", json=body).status_code)
                    except httpx.HTTPError as error:
                        failures.append(repr(error))

        with ThreadPoolExecutor(64) as pool:
            list(pool.map(client, range(64)))
        assert wait_until_engine_idle(tiny_llm)
        after = rss_bytes()
    assert not failures, failures[:5]
    assert outcomes and set(outcomes) <= allowed, set(outcomes)
    assert outcomes.count(200) >= 100  # refusals (the huge prompts, prompts over the context) answer fastest
    assert after - baseline < 200 * 2**20, (baseline, after)
