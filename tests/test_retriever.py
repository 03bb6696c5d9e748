"""Hybrid retrieval over the demo PDFs: RRF equals its formula, BM25 finds rare words, filters and MMR hold."""

import re
from collections import Counter

import numpy as np
import pytest

import rag.retriever
from rag import samples
from rag.collection import Collection
from rag.loaders import TextItem
from rag.retriever import BM25_FILE, RRF_K, Retriever, _tokenize, build_corpus, load_corpus, rrf

DEMO = samples.FOLDER
GUIDE = "nist-sp800-90b-entropy-suite-user-guide.pdf"
SRX = "nist-srx-proxy-protocol-3.0.pdf"


@pytest.fixture(scope="module")
def retriever(tmp_path_factory, embedder):
    collection = Collection.open("demo", data_dir=tmp_path_factory.mktemp("data"), embedder=embedder)
    reports = collection.add_files([DEMO / GUIDE, DEMO / SRX])
    assert all(r.ok for r in reports)
    yield Retriever(collection)
    collection.close()


def test_hybrid_ranking_is_reciprocal_rank_fusion_of_both_lists(retriever):
    query = "how is min-entropy estimated for non-IID data"
    dense = [h.chunk.id for h in retriever.search(query, k=retriever.candidates, mode="dense", one_per_page=False)]
    lexical = [h.chunk.id for h in retriever.search(query, k=retriever.candidates, mode="bm25", one_per_page=False)]
    expected = {}
    for ranking in (dense, lexical):
        for rank, chunk_id in enumerate(ranking, start=1):
            expected[chunk_id] = expected.get(chunk_id, 0) + 1 / (RRF_K + rank)
    best = sorted(expected, key=lambda i: (-expected[i], i))[:8]
    hits = retriever.search(query, k=8, one_per_page=False)
    assert [h.chunk.id for h in hits] == best
    assert all(abs(h.score - expected[h.chunk.id]) < 1e-12 for h in hits)
    assert all(h.dense_score is not None or h.bm25_score is not None for h in hits)


def test_bm25_finds_a_word_that_occurs_in_one_chunk_only(retriever):
    chunks = list(retriever.collection.store.all_chunks())
    words = {c.id: set(re.findall(r"\b\w\w+\b", c.text.lower())) for c in chunks}  # bm25s' own token pattern
    counts = Counter(w for ws in words.values() for w in ws)
    rare = sorted(w for w, n in counts.items() if n == 1 and len(w) >= 9 and w.isalpha())[:5]
    assert rare
    for word in rare:
        owner = next(i for i, ws in words.items() if word in ws)
        assert retriever.search(word, k=1, mode="bm25")[0].chunk.id == owner
        assert owner in [h.chunk.id for h in retriever.search(word, k=5)]


def test_hybrid_puts_the_page_with_the_exact_phrase_first(retriever):
    hits = retriever.search("Markov estimate method", k=3)
    assert hits[0].chunk.file_name == GUIDE and hits[0].chunk.page == 3


def test_document_filter(retriever):
    for name in (GUIDE, SRX):
        hits = retriever.search("protocol message format", k=10, documents=[name])
        assert hits and all(h.chunk.file_name == name for h in hits)
    with pytest.raises(ValueError, match="none of"):
        retriever.search("anything", documents=["missing.pdf"])


@pytest.mark.parametrize("exact_filter_max", [rag.retriever.EXACT_FILTER_MAX, 0], ids=["score-all", "widen"])
@pytest.mark.parametrize("mode", ["dense", "bm25"])
def test_filtered_search_is_the_unfiltered_ranking_restricted_to_the_document(retriever, mode, exact_filter_max,
                                                                             monkeypatch):
    """The guide's chunks rank below the SRx ones for an SRx question: the filter finds its best ones, in order,
    whether the dense search scores the allowed chunks alone or widens a search of all of them."""
    monkeypatch.setattr(rag.retriever, "EXACT_FILTER_MAX", exact_filter_max)
    query = "SRx proxy hello message"
    everything = retriever.search(query, k=len(retriever.collection), mode=mode)
    expected = [h.chunk.id for h in everything if h.chunk.file_name == GUIDE][:7]
    assert [h.chunk.id for h in everything[:7]] != expected
    filtered = retriever.search(query, k=7, mode=mode, documents=[GUIDE])
    assert [h.chunk.id for h in filtered] == expected
    assert [h.score for h in filtered] == pytest.approx([h.score for h in everything if h.chunk.id in expected])


def test_mmr_diversifies_without_losing_the_best_hit(retriever, embedder):
    query = "entropy estimation"
    plain = retriever.search(query, k=6)
    diverse = retriever.search(query, k=6, mmr=0.3)

    def mean_similarity(hits):
        vectors = embedder.embed([h.chunk.text for h in hits])
        similarity = vectors @ vectors.T
        return (similarity.sum() - len(hits)) / (len(hits) * (len(hits) - 1))

    assert len(diverse) == 6
    assert mean_similarity(diverse) < mean_similarity(plain)
    relevance = embedder.embed([query] + [h.chunk.text for h in diverse])
    assert int(np.argmax(relevance[1:] @ relevance[0])) == 0  # MMR's first pick is the most relevant


def test_removed_documents_leave_bm25_too(tmp_path, embedder):
    collection = Collection.open("removal", data_dir=tmp_path, embedder=embedder)
    collection.add_files([DEMO / GUIDE, DEMO / SRX])
    retriever = Retriever(collection)
    assert {h.chunk.file_name for h in retriever.search("SRx proxy", k=10, mode="bm25")} >= {SRX}
    collection.remove(SRX)
    for mode in ("bm25", "dense", "hybrid"):
        assert all(h.chunk.file_name == GUIDE for h in retriever.search("SRx proxy", k=10, mode=mode))
    collection.add_files([DEMO / SRX])  # the same documents and chunk count as before the removal, new ids
    for mode in ("bm25", "dense", "hybrid"):
        assert SRX in {h.chunk.file_name for h in retriever.search("SRx proxy", k=10, mode=mode)}
    collection.close()


def test_bad_queries_and_an_empty_collection(tmp_path, embedder, retriever):
    with pytest.raises(ValueError, match="empty"):
        retriever.search("   ")
    with pytest.raises(ValueError, match="mode"):
        retriever.search("x", mode="sparse")
    with Collection.open("empty", data_dir=tmp_path, embedder=embedder) as empty:
        assert Retriever(empty).search("anything") == []


def test_rrf_formula():
    assert rrf([[1, 2], [2, 3]], k=60) == {1: 1 / 61, 2: 1 / 62 + 1 / 61, 3: 1 / 62}


# --- the saved BM25 index ---------------------------------------------------------------------------------------------

BM25_QUERIES = ["min-entropy estimate for non-IID data", "SRx proxy hello message", "Markov", "router key validation"]


@pytest.fixture
def toy_collection(tmp_path, toy_embedder):
    with Collection.open("saved", data_dir=tmp_path, embedder=toy_embedder) as collection:
        assert all(r.ok for r in collection.add_files([DEMO / GUIDE, DEMO / SRX]))
        yield collection


def assert_same_corpus(loaded, built):
    assert loaded.key == built.key and loaded.documents == built.documents and loaded.names == built.names
    assert np.array_equal(loaded.ids, built.ids) and np.array_equal(loaded.codes, built.codes)
    for query in BM25_QUERIES:
        words = _tokenize([query], return_ids=False)[0]
        assert np.array_equal(loaded.bm25.get_scores(words), built.bm25.get_scores(words)), query
        assert loaded.bm25.get_scores(words).any(), query


def test_a_new_process_loads_the_saved_bm25_index_and_it_scores_as_a_rebuilt_one(toy_collection):
    first = Retriever(toy_collection).search("SRx proxy hello message", k=5, mode="bm25")
    path = toy_collection.directory / BM25_FILE
    assert path.is_file()
    key = toy_collection.store.generation()
    loaded = load_corpus(path, key)
    assert loaded is not None
    assert_same_corpus(loaded, build_corpus(list(toy_collection.store.all_chunks()), key))
    before = path.stat().st_mtime_ns
    again = Retriever(toy_collection).search("SRx proxy hello message", k=5, mode="bm25")  # a fresh retriever: loads
    assert [(h.chunk.id, h.score) for h in again] == [(h.chunk.id, h.score) for h in first]
    assert path.stat().st_mtime_ns == before  # not saved again


def test_a_stale_saved_bm25_index_is_rebuilt(toy_collection):
    retriever = Retriever(toy_collection)
    retriever.search("anything", mode="bm25")
    path = toy_collection.directory / BM25_FILE
    old_key = toy_collection.store.generation()
    toy_collection.add_texts([TextItem("note.txt", "The zebrafish cyclotron note: a word no PDF holds.")])
    assert load_corpus(path, toy_collection.store.generation()) is None  # saved for the old generation
    assert load_corpus(path, old_key) is not None
    hits = Retriever(toy_collection).search("zebrafish cyclotron", k=1, mode="bm25")
    assert hits[0].chunk.file_name == "note.txt"
    key = toy_collection.store.generation()
    assert_same_corpus(load_corpus(path, key), build_corpus(list(toy_collection.store.all_chunks()), key))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "bad-array"])
def test_a_damaged_saved_bm25_index_is_not_trusted_but_rebuilt(toy_collection, damage):
    expected = [(h.chunk.id, h.score) for h in Retriever(toy_collection).search("Markov estimate", k=5, mode="bm25")]
    path = toy_collection.directory / BM25_FILE
    key = toy_collection.store.generation()
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    else:  # a whole, readable file whose arrays do not hold together: chunk positions beyond the chunks
        with np.load(path) as saved:
            arrays = dict(saved)
        arrays["indices"] = arrays["indices"] + len(arrays["ids"])
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    assert load_corpus(path, key) is None
    rebuilt = Retriever(toy_collection).search("Markov estimate", k=5, mode="bm25")
    assert [(h.chunk.id, h.score) for h in rebuilt] == expected
    assert load_corpus(path, key) is not None  # saved again, whole
