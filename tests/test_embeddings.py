"""The embedded all-MiniLM-L6-v2 embedder: offline, batched, normalised, and semantically sensible."""

import numpy as np
import pytest

from rag.embeddings import SentenceTransformerEmbedder


@pytest.fixture(scope="module")
def embedder():
    return SentenceTransformerEmbedder(batch_size=4)


def test_vectors_are_float32_unit_length(embedder):
    vectors = embedder.embed(["hello world", "", "ünïcode ✓ 中文"])
    assert vectors.shape == (3, embedder.dim) == (3, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_batching_changes_nothing_and_reports_progress(embedder):
    texts = [f"sentence number {i} about rivers and mountains" for i in range(10)]
    calls = []
    batched = embedder.embed(texts, progress=lambda done, total: calls.append((done, total)))
    one_by_one = np.stack([embedder.embed([t])[0] for t in texts])
    assert np.allclose(batched, one_by_one, atol=1e-5)
    assert calls == [(4, 10), (8, 10), (10, 10)]


def test_similar_sentences_are_closer(embedder):
    cat, rug, revenue = embedder.embed(["The cat sat on the mat.", "A cat is sitting on a rug.",
                                        "Quarterly revenue rose five percent."])
    assert cat @ rug > cat @ revenue + 0.3


def test_token_count_matches_the_models_tokenizer(embedder):
    assert embedder.count_tokens("hello world") == 2
    assert embedder.max_tokens == 256


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Could not load the embedding model"):
        SentenceTransformerEmbedder(str(tmp_path / "no-such-model"))
