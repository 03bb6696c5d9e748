"""Shared fixtures: tiny random-initialised models in Hugging Face format, a tiny tokenizer, a toy embedder, the real
SmolLM2 and embedder; the `slow` marker put on every test that uses a real model's fixture."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from core import ScriptedModel

pytest_plugins = ["email_servers"]  # the email bot's loopback Dovecot and SMTP sink fixtures (tests/email_servers.py)

# The fixtures below that load a real model (SmolLM2, all-MiniLM-L6-v2) or hand out the path its users load; a
# module's own fixture of the same name counts too (test_embeddings' `embedder` is real in every precision).
REAL_MODEL_FIXTURES = {"llm", "served_url", "smollm2_path", "embedder", "demo_data_dir"}


def pytest_collection_modifyitems(items):
    """A test that uses a real model's fixture, directly or through another fixture, is `slow` without being
    marked by hand: `pytest -m "not slow"` stays fast as tests are added."""
    for item in items:
        if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


TINY_TEXT = ("The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs! "
             "def main():\n    return 42\n") * 20


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """Converted models go to a per-run cache, so tests never depend on (or pollute) the user's."""
    previous = os.environ.get("LLMKIT_CACHE")
    os.environ["LLMKIT_CACHE"] = str(tmp_path_factory.mktemp("llmkit-cache"))
    yield
    if previous is None:
        os.environ.pop("LLMKIT_CACHE", None)
    else:
        os.environ["LLMKIT_CACHE"] = previous


def tiny_bpe_tokenizer() -> HFTokenizer:
    """A byte-level BPE trained in milliseconds: ~300 tokens, with <|im_start|> / <|im_end|> specials."""
    tokenizer = HFTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([TINY_TEXT], trainer)
    return tokenizer


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights large enough that a wrong rotation, mask or bias moves logits well past the 1e-4 tolerance."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            is_norm = "norm" in name or "ln_" in name
            param.copy_(1.0 + 0.1 * noise if is_norm and name.endswith("weight") else 0.15 * noise)
    return model.eval()


def tiny_hf_model(arch: str, vocab_size: int = 300):
    """A random-initialised transformers model of `arch` small enough to run in milliseconds."""
    import transformers as tf

    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6,
                  rope_theta=500.0, tie_word_embeddings=False, attn_implementation="eager",
                  bos_token_id=1, eos_token_id=2)
    if arch == "llama":
        config = tf.LlamaConfig(**common)
        cls = tf.LlamaForCausalLM
    elif arch == "mistral":
        config = tf.MistralConfig(**common, sliding_window=5)
        cls = tf.MistralForCausalLM
    elif arch == "qwen2":
        config = tf.Qwen2Config(**{**common, "tie_word_embeddings": True})
        cls = tf.Qwen2ForCausalLM
    elif arch == "gpt2":
        # n_positions stays at GPT-2's 1024: transformers' GGUF reader ignores gpt2.context_length.
        config = tf.GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=1024,
                               attn_implementation="eager", bos_token_id=1, eos_token_id=2)
        cls = tf.GPT2LMHeadModel
    else:
        raise ValueError(arch)
    torch.manual_seed(0)
    return randomize(cls(config))


def save_tiny_checkpoint(arch: str, directory: Path):
    """A complete checkpoint directory: config.json, model.safetensors, tokenizer.json, tokenizer_config.json."""
    tokenizer = tiny_bpe_tokenizer()
    model = tiny_hf_model(arch, vocab_size=tokenizer.get_vocab_size())
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    (directory / "tokenizer_config.json").write_text(
        __import__("json").dumps({"eos_token": "<|im_end|>", "chat_template": template}))
    return model


@pytest.fixture(scope="session")
def smollm2_path():
    from core.resolve import embedded_model_path

    return embedded_model_path()


DEMO_PDFS = Path(__file__).parent.parent / "rag" / "samples"  # the sample PDFs llmkit ships, as package data
ROBUSTNESS_PDFS = Path(__file__).parent.parent / "data" / "pdfs" / "robustness"


@pytest.fixture(scope="session")
def embedder():
    """The embedded all-MiniLM-L6-v2 at the default precision, loaded once per run (test_embeddings has its own)."""
    from rag import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


class ToyEmbedder:
    """Bag of hashed words, normalised: deterministic, in microseconds, and good enough for search to find the chunk
    that shares a query's words. `identity` is what a collection records as the model that embedded it."""

    dim, max_tokens = 64, 256

    def __init__(self, identity: str = "toy"):
        self.identity = identity

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def embed(self, texts, progress=None):
        vectors = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                vectors[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


@pytest.fixture(scope="session")
def toy_embedder() -> ToyEmbedder:
    """A fake embedder for tests about what surrounds embedding (collections, tools, apps), not about its quality."""
    return ToyEmbedder()


@pytest.fixture
def bad_files(tmp_path) -> list[Path]:
    """The uploads people get wrong: corrupt, encrypted, an image renamed .pdf, empty."""
    folder = tmp_path / "bad"
    folder.mkdir()
    # damaged beyond repair for PDFium and pypdf alike (PDFium repairs damaged-startxref.pdf)
    shutil.copy(ROBUSTNESS_PDFS / "broken-trailer-attributeerror.pdf", folder / "corrupt.pdf")
    shutil.copy(ROBUSTNESS_PDFS / "encrypted-aes256-userpw-foo.pdf", folder / "locked.pdf")
    (folder / "photo.pdf").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (folder / "empty.pdf").write_bytes(b"")
    return sorted(folder.iterdir())


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory):
    """A data dir holding collection "demo": the two committed NIST PDFs, embedded once per run. Read-only."""
    from rag import Collection

    data_dir = tmp_path_factory.mktemp("llmkit-home")
    with Collection.open("demo", data_dir=data_dir) as collection:
        reports = collection.add_files(sorted(DEMO_PDFS.glob("*.pdf")))
        assert all(report.ok for report in reports), reports
    return data_dir


def scripted_llm(reply: str, calls: int = 50) -> ScriptedModel:
    """A core.ScriptedModel that writes `reply` at each of up to `calls` calls, whatever the prompt: for tests that
    need a known answer; `.calls` keeps the prompts."""
    return ScriptedModel([reply] * calls)


SERVED_MODEL = "smollm2-test"  # the name `served_url` serves the embedded model under


@pytest.fixture(scope="session")
def llm():
    """The embedded SmolLM2, loaded once for the whole run."""
    from core import LLM

    return LLM.load()


@contextmanager
def serving(app):
    """`app` under uvicorn in a background thread, on a loopback port the OS picked (no race for it); the base URL,
    ending in /v1."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="session")
def served_url(llm):
    """`llmkit serve`'s app over `llm`, served in this process (`serving`)."""
    from core.server import create_app

    with serving(create_app(llm, SERVED_MODEL)) as url:
        yield url


def wait_until_engine_idle(llm, seconds: float = 20) -> bool:
    """True once no engine row is occupied: a request whose client left must not keep decoding."""
    deadline = time.monotonic() + seconds
    while any(llm.engine.rows):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@contextmanager
def local_http_server(handler, **attributes):
    """A ThreadingHTTPServer on a free loopback port running `handler`, with `attributes` set on the server (what
    the handler reads as self.server.NAME); yields its base URL ending in /v1, as an OpenAI client takes it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    for name, value in attributes.items():
        setattr(server, name, value)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def running_app(command: list[str], log: Path):
    """`llmkit COMMAND...` started on a free loopback port (its --port added) until the block ends, output in `log`;
    yields its URL once it serves."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    llmkit = Path(sys.executable).parent / "llmkit"
    with log.open("w") as out:
        process = subprocess.Popen([str(llmkit), *command, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while "Running on local URL" not in log.read_text():
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium through Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail("the browser tests need Debian's chromium: sudo apt-get install chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True)
        yield launched
        launched.close()
