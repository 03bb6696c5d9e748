"""The embedded all-MiniLM-L6-v2 embedder in every precision: offline, batched, normalised, semantically sensible,
and the fast precisions close to the float32 reference on real text."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rag.embeddings
from core import disk_cache, settings
from rag import samples
from rag.chunking import chunk_pages, make_splitter
from rag.embeddings import PRECISIONS, SentenceTransformerEmbedder
from rag.loaders import load_file

pytestmark = pytest.mark.slow  # the real embedding model, in every precision

GUIDE = samples.FOLDER / "nist-sp800-90b-entropy-suite-user-guide.pdf"


@pytest.fixture(scope="module", params=PRECISIONS)
def embedder(request):
    return SentenceTransformerEmbedder(batch_size=4, precision=request.param)


@pytest.fixture(scope="module")
def reference():
    """(the guide's chunks, their float32 vectors)."""
    float32 = SentenceTransformerEmbedder(precision="float32")
    pages, report = load_file(GUIDE)
    chunks = [c.text for c in chunk_pages(pages, report.content_hash, report.name, make_splitter(float32.count_tokens))]
    return chunks, float32.embed(chunks)


def test_vectors_are_float32_unit_length(embedder):
    vectors = embedder.embed(["hello world", "", "ünïcode ✓ 中文"])
    assert vectors.shape == (3, embedder.dim) == (3, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_batching_changes_nothing_and_reports_progress(embedder):
    texts = [f"sentence number {i} about rivers and mountains" + " and valleys" * (i % 3) for i in range(10)]
    calls = []
    batched = embedder.embed(texts, progress=lambda done, total: calls.append((done, total)))
    one_by_one = np.stack([embedder.embed([t])[0] for t in texts])
    # bfloat16 rounds differently for different padding; int8 runs one text at a time, so it is exact.
    assert np.allclose(batched, one_by_one, atol=1e-2 if embedder.precision == "bfloat16" else 1e-5)
    assert calls == [(4, 10), (8, 10), (10, 10)]


def test_similar_sentences_are_closer(embedder):
    cat, rug, revenue = embedder.embed(["The cat sat on the mat.", "A cat is sitting on a rug.",
                                        "Quarterly revenue rose five percent."])
    assert cat @ rug > cat @ revenue + 0.3


def test_fast_precisions_stay_close_to_float32_on_real_chunks(embedder, reference):
    """Measured on the demo PDFs' chunks: bfloat16 >= 0.9999 everywhere; int8 0.992 on average, 0.976 at worst."""
    chunks, float32 = reference
    cosine = (embedder.embed(chunks) * float32).sum(axis=1)
    bounds = {"float32": (0.99999, 0.99999), "bfloat16": (0.999, 0.9995), "int8": (0.95, 0.985)}
    worst, mean = bounds[embedder.precision]
    assert len(chunks) > 20
    assert cosine.min() >= worst and cosine.mean() >= mean, (cosine.min(), cosine.mean())


def test_token_count_matches_the_models_tokenizer(embedder, reference):
    """Also after embedding, which leaves truncation set on the transformers tokenizer's own Rust tokenizer."""
    assert embedder.count_tokens("hello world") == 2
    assert embedder.max_tokens == 256
    chunks, _ = reference
    long_text = "entropy " * 400
    embedder.embed(chunks[:6] + [long_text])
    for text in [*chunks, long_text, ""]:
        assert embedder.count_tokens(text) == len(embedder.model.tokenizer(text, add_special_tokens=False,
                                                                           truncation=False)["input_ids"])


def test_model_input_ids_are_those_sentence_transformers_would_feed(embedder, reference):
    """int8 runs our own tokenization: it must give the model the ids, specials and truncation of PyTorch's path."""
    chunks, _ = reference
    texts = [*chunks[:5], "entropy " * 400, "", "  padded  ", "ünïcode ✓ 中文"]
    expected = embedder.model.preprocess(texts)
    rows = zip(embedder._token_ids(texts), expected["input_ids"], expected["attention_mask"], strict=True)
    for ids, padded, mask in rows:
        assert ids == padded[mask.bool()].tolist()
    assert len(embedder._token_ids(["entropy " * 400])[0]) == embedder.max_tokens


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Could not load the embedding model"):
        SentenceTransformerEmbedder(str(tmp_path / "no-such-model"))


def test_precision_comes_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv(settings.EMBEDDING_PRECISION, "bfloat16")
    assert SentenceTransformerEmbedder().precision == "bfloat16"
    assert SentenceTransformerEmbedder(precision="float32").precision == "float32"
    monkeypatch.setenv(settings.EMBEDDING_PRECISION, "fp8")
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, int8, got 'fp8'"):
        SentenceTransformerEmbedder()


@pytest.mark.parametrize("embedder", ["int8"], indirect=True)
def test_the_int8_export_is_made_once_and_reused(embedder, monkeypatch):
    def export_again(*args):
        raise AssertionError("exported again despite the cache")

    monkeypatch.setattr(rag.embeddings, "_export_int8", export_again)
    again = SentenceTransformerEmbedder(precision="int8")
    assert np.array_equal(again.embed(["cached"]), embedder.embed(["cached"]))


@pytest.mark.parametrize("embedder", ["int8"], indirect=True)
def test_a_truncated_int8_export_is_made_again_with_a_warning(embedder):
    entry = settings.cache_dir(rag.embeddings.ONNX_CACHE) / rag.embeddings._model_digest(embedder.model)
    export = entry / rag.embeddings.ONNX_FILE
    data = export.read_bytes()
    export.unlink()  # a new file: the running session keeps the old one
    export.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match=r"model\.int8\.onnx is \d+ bytes, the manifest says \d+\); building it"):
        again = SentenceTransformerEmbedder(precision="int8")
    assert disk_cache.check(entry) is None
    texts = ["a truncated export", "is exported again"]
    assert np.allclose(again.embed(texts), embedder.embed(texts), atol=1e-6)


START_WITHOUT_TORCH = """
import sys
import numpy as np
from rag.embeddings import SentenceTransformerEmbedder
embedder = SentenceTransformerEmbedder(precision="int8")
np.save(sys.argv[1], embedder.embed(["a saved export", "ünïcode ✓ 中文", "entropy " * 400]))
print(embedder._model is None, embedder.count_tokens("hello world"), embedder.dim, embedder.max_tokens)
print(" ".join(sorted({"torch", "transformers", "sentence_transformers"} & set(sys.modules))))
"""


@pytest.mark.parametrize("embedder", ["int8"], indirect=True)
def test_int8_starts_from_its_saved_export_without_torch(embedder, tmp_path):
    """A process that embeds at int8 once the model was loaded (as the fixture did) runs ONNX Runtime and the Rust
    tokenizer alone: the same vectors and token counts, without importing torch or sentence-transformers."""
    out = tmp_path / "vectors.npy"
    run = subprocess.run([sys.executable, "-c", START_WITHOUT_TORCH, str(out)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent.parent)
    light, heavy = run.stdout.split("\n")[:2]
    assert light == "True 2 384 256" and heavy == "", run.stdout
    assert np.array_equal(np.load(out), embedder.embed(["a saved export", "ünïcode ✓ 中文", "entropy " * 400]))


@pytest.mark.parametrize("embedder", ["int8"], indirect=True)
def test_a_damaged_saved_record_loads_the_model_and_is_written_again(embedder):
    record = settings.cache_dir(rag.embeddings.ONNX_CACHE) / rag.embeddings._files_key(embedder.name)
    tokenizer = record / rag.embeddings.SAVED_TOKENIZER
    text = tokenizer.read_text(encoding="utf-8")
    tokenizer.unlink()
    tokenizer.write_text(text[: len(text) // 2], encoding="utf-8")
    assert rag.embeddings._saved_int8(embedder.name) is None
    with pytest.warns(UserWarning, match="building it again"):
        again = SentenceTransformerEmbedder(precision="int8")
    assert again._model is not None and rag.embeddings._saved_int8(embedder.name) is not None
    assert np.array_equal(again.embed(["damaged"]), embedder.embed(["damaged"]))
