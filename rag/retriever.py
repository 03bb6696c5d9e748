"""Retriever: dense search and BM25 fused by reciprocal rank fusion, with optional MMR and a document filter.

BM25 (bm25s) finds the exact words an embedding blurs (a part number, a rare term); the dense index finds
paraphrases. Reciprocal rank fusion (Cormack et al., 2009) adds 1 / (RRF_K + rank) over both lists, so
the two score scales never need calibrating. Both read a chunk's indexed text (its context, then its text:
rag.context). A page cut into overlapping chunks is one source: by default the best chunk of each page stands
for it, so the top k are k pages (bench/results/retrieval.md measures it on and off). Scores are exposed on
every hit.

The BM25 index is built from the store's chunks (their indexed text) and saved in the collection's directory
(BM25_FILE), keyed by the store's generation, so that a new process (one `llmkit search`) loads it instead of
tokenising every chunk again; a file that is stale, unreadable or inconsistent is rebuilt and saved over. The save
is atomic (a fresh temporary file, then a rename) and needs no lock: a reader sees a whole file or none, and
a file saved from an older generation by a slow process is only ever a stale one, rebuilt by the next reader.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import bm25s
import numpy as np

from rag.collection import Collection
from rag.context import indexed_text
from rag.store import StoredChunk

RRF_K = 60  # the constant of Cormack et al.: damps the weight of the very first ranks
CANDIDATES = 50  # taken from each method (or k, if larger) before fusing, filtering and MMR
EXACT_FILTER_MAX = 20_000  # a document filter allowing at most this many chunks scores each of them exactly
BM25_FILE = "bm25.npz"  # in the collection's directory
BM25_FORMAT = 1  # raise it when `indexed_text`, the tokenizer, BM25's parameters or the file's layout change
Mode = Literal["hybrid", "dense", "bm25"]


@dataclass
class Hit:
    chunk: StoredChunk
    score: float  # what ranked it: RRF (hybrid), cosine (dense) or BM25 (bm25); MMR reorders but keeps it
    dense_score: float | None = None  # cosine similarity to the query, when the dense search found it
    bm25_score: float | None = None


@dataclass
class _Corpus:
    key: tuple  # the store's generation this was built from
    bm25: bm25s.BM25 | None  # None for an empty collection
    ids: np.ndarray  # (n,) chunk ids, in BM25's order
    documents: list[str]  # the documents' ids, in order of first appearance
    names: list[str]  # their file names
    codes: np.ndarray  # (n,) int32: each chunk's document, as an index into `documents`

    def positions(self, allowed: set[str]) -> np.ndarray:
        """Ascending positions, in BM25's order, of the chunks of the allowed documents."""
        wanted = [code for code, doc_id in enumerate(self.documents) if doc_id in allowed]
        return np.flatnonzero(np.isin(self.codes, wanted))


class Retriever:
    def __init__(self, collection: Collection, candidates: int = CANDIDATES):
        self.collection = collection
        self.candidates = candidates
        self._cached: _Corpus | None = None

    def search(self, query: str, k: int = 5, mode: Mode = "hybrid", documents: list[str] | None = None,
               mmr: float | None = None, one_per_page: bool = True,
               query_vector: np.ndarray | None = None) -> list[Hit]:
        """The k best chunks for `query`, best first.

        `documents`: only chunks of these documents (content hashes or file names). `mmr`: a lambda in
        [0, 1] trading relevance (1) against diversity (0) among the fused candidates. `one_per_page`: only
        the best chunk of each page (of each locator, for text items: an email, a file's lines).
        `query_vector`: the query's embedding (dim,), when the caller has it (`embed_query`): then the query is
        not embedded again.
        """
        if not query.strip():
            raise ValueError("the query is empty")
        if mode not in ("hybrid", "dense", "bm25"):
            raise ValueError(f"mode must be 'hybrid', 'dense' or 'bm25', got {mode!r}")
        if mmr is not None and not 0 <= mmr <= 1:
            raise ValueError(f"mmr must lie in [0, 1], got {mmr}")
        with self.collection.reading():  # one state of the collection, whatever other processes write meanwhile
            return self._search(query, k, mode, documents, mmr, one_per_page, query_vector)

    def embed_query(self, query: str) -> np.ndarray:
        """The query's unit vector (dim,), as `search` compares it with the chunks: embed once, pass it on."""
        return self.collection.embedder.embed([query])[0]

    def _search(self, query: str, k: int, mode: Mode, documents: list[str] | None, mmr: float | None,
                one_per_page: bool, query_vector: np.ndarray | None) -> list[Hit]:
        allowed = self._allowed_docs(documents)
        positions = self._corpus().positions(allowed) if allowed is not None else None
        if query_vector is None and (mode != "bm25" or mmr is not None):
            query_vector = self.embed_query(query)
        dense = self._dense(query_vector, k, positions) if mode != "bm25" else {}
        lexical = self._lexical(query, k, positions) if mode != "dense" else {}
        if mode == "dense":
            ranked = sorted(dense, key=lambda i: -dense[i])
            scores = dense
        elif mode == "bm25":
            ranked = sorted(lexical, key=lambda i: -lexical[i])
            scores = lexical
        else:
            scores = rrf([sorted(dense, key=lambda i: -dense[i]), sorted(lexical, key=lambda i: -lexical[i])])
            ranked = sorted(scores, key=lambda i: (-scores[i], i))
        known: dict[int, StoredChunk] = {}  # the chunks read from the store so far, by id: each is read once
        if one_per_page:
            known = {chunk.id: chunk for chunk in self._best_of_each_page(ranked)}
            ranked = list(known)
        if mmr is not None:
            ranked = self._mmr(query_vector, ranked[: self.candidates], k, mmr)
        ranked = ranked[:k]
        unread = [i for i in ranked if i not in known]
        known.update(zip(unread, self.collection.store.chunks_by_ids(unread), strict=True))
        return [Hit(known[i], scores[i], dense.get(i), lexical.get(i)) for i in ranked]

    def _best_of_each_page(self, ranked: list[int]) -> list[StoredChunk]:
        """The first (best) chunk of each (document, locator) in `ranked`, in order."""
        seen, best = set(), []
        for chunk in self.collection.store.chunks_by_ids(ranked):
            if (chunk.doc_id, chunk.locator) not in seen:
                seen.add((chunk.doc_id, chunk.locator))
                best.append(chunk)
        return best

    def _allowed_docs(self, documents: list[str] | None) -> set[str] | None:
        if documents is None:
            return None
        corpus = self._corpus()  # not store.documents(): it counts every document's chunks (7 ms at 100k)
        allowed = {doc_id for doc_id, name in zip(corpus.documents, corpus.names, strict=True)
                   if doc_id in documents or name in documents}
        if not allowed:
            raise ValueError(f"none of {documents} is in collection {self.collection.name!r}")
        return allowed

    def _dense(self, query_vector: np.ndarray, k: int, positions: np.ndarray | None) -> dict[int, float]:
        index = self.collection.index
        if len(index) == 0:
            return {}
        want = min(max(k, self.candidates), len(index))
        queries = np.asarray(query_vector, np.float32).reshape(1, -1)  # (1, dim)
        if positions is None:
            scores, ids = index.search(queries, want)
        else:
            allowed_ids = self._corpus().ids[positions]
            if len(allowed_ids) <= EXACT_FILTER_MAX:  # score them all: exact, and ~1 ms a thousand
                scores, ids = index.search_among(queries, want, allowed_ids)
            else:  # too many to copy out: widen a search of everything until enough of them are in it
                want, fetch = min(want, len(allowed_ids)), want
                while True:
                    fetch = min(fetch * 4, len(index))
                    scores, ids = index.search(queries, fetch)  # (1, fetch)
                    keep = np.isin(ids, allowed_ids)
                    if keep.sum() >= want or fetch >= len(index):
                        scores, ids = scores[keep][None, :want], ids[keep][None, :want]
                        break
        return {int(i): float(s) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0}

    def _lexical(self, query: str, k: int, positions: np.ndarray | None) -> dict[int, float]:
        """BM25 scores of every chunk, then the best of those that contain a query word (and are allowed): not
        bm25s's own top-k, whose argpartition over mostly zero scores took 14 ms at 100k chunks, this 0.2."""
        corpus = self._corpus()
        words = _tokenize([query], return_ids=False)[0]
        if corpus.bm25 is None or not words:
            return {}
        scores = corpus.bm25.get_scores(words)  # (n,) in BM25's order; 0 where no query word occurs
        found = np.flatnonzero(scores) if positions is None else positions[scores[positions] > 0]
        k = max(k, self.candidates)
        if len(found) > k:
            found = found[np.argpartition(-scores[found], k)[:k]]
        return {int(corpus.ids[p]): float(scores[p]) for p in found}

    def _corpus(self) -> _Corpus:
        """BM25 over every ready chunk and whose chunk is whose, for the store's generation: kept in memory, else
        loaded from BM25_FILE, else built (and saved)."""
        store = self.collection.store
        key = store.generation()
        if self._cached is None or self._cached.key != key:
            path = self.collection.directory / BM25_FILE
            self._cached = load_corpus(path, key)
            if self._cached is None:
                self._cached = build_corpus(list(store.all_chunks()), key)
                save_corpus(self._cached, path)
        return self._cached

    def _mmr(self, query_vector: np.ndarray, candidates: list[int], k: int, lam: float) -> list[int]:
        """Maximal marginal relevance (Carbonell & Goldstein, 1998) over the candidates' embeddings."""
        if not candidates:
            return []
        texts = [c.text for c in self.collection.store.chunks_by_ids(candidates)]
        vectors = self.collection.embedder.embed(texts)  # (n, dim)
        relevance, similarity = vectors @ query_vector, vectors @ vectors.T  # (n,), (n, n)
        chosen: list[int] = []
        while len(chosen) < min(k, len(candidates)):
            redundancy = similarity[:, chosen].max(axis=1) if chosen else np.zeros(len(candidates))
            value = lam * relevance - (1 - lam) * redundancy
            value[chosen] = -np.inf
            chosen.append(int(value.argmax()))
        return [candidates[i] for i in chosen]


def rrf(rankings: list[list[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion of best-first id lists: sum over lists of 1 / (k + rank), ranks from 1."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    return fused


def _tokenize(texts: list[str], return_ids: bool = True):
    """Words for BM25: bm25s's tokenizer, English stop words dropped (as ids for indexing, as strings to query)."""
    return bm25s.tokenize(texts, stopwords="en", show_progress=False, return_ids=return_ids)


# --- the BM25 index and its file ------------------------------------------------------------------------------------

def build_corpus(chunks: list[StoredChunk], key: tuple) -> _Corpus:
    """BM25 over the chunks' indexed text (rag.context), in their order, and each chunk's document."""
    bm25 = None
    if chunks:
        bm25 = bm25s.BM25()
        bm25.index(_tokenize([indexed_text(c.context, c.text) for c in chunks]), show_progress=False)
    name_of = {c.doc_id: c.file_name for c in chunks}  # documents in order of first appearance
    code_of = {doc_id: code for code, doc_id in enumerate(name_of)}
    return _Corpus(key, bm25, np.array([c.id for c in chunks], np.int64), list(name_of), list(name_of.values()),
                   np.array([code_of[c.doc_id] for c in chunks], np.int32))


def save_corpus(corpus: _Corpus, path: Path) -> None:
    """Write `corpus` to `path` atomically; nothing for an empty one (it builds in no time), nor where the
    directory cannot be written (a read-only collection): the index then lives in memory only."""
    if corpus.bm25 is None:
        return
    scores = corpus.bm25.scores
    meta = {"key": _file_key(corpus.key), "num_docs": int(scores["num_docs"]), "documents": corpus.documents,
            "names": corpus.names}
    arrays = {"meta": _json_bytes(meta), "vocab": _json_bytes(corpus.bm25.vocab_dict), "ids": corpus.ids,
              "codes": corpus.codes, **{name: np.asarray(scores[name]) for name in ("data", "indices", "indptr")}}
    tmp = path.with_name(f".{path.name}-{uuid.uuid4().hex[:12]}.tmp")  # this process's own: no other writes it
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:  # mode as open()'s
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if not isinstance(error, OSError):
            raise


def load_corpus(path: Path, key: tuple) -> _Corpus | None:
    """The corpus saved at `path` if it was built for `key` (a generation of the store) and holds together;
    else None (missing, stale, truncated, or altered: the caller rebuilds it)."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            meta = json.loads(saved["meta"].tobytes())
            if meta.get("key") != _file_key(key):
                return None
            vocab = json.loads(saved["vocab"].tobytes())
            data, indices, indptr = saved["data"], saved["indices"], saved["indptr"]
            ids, codes = saved["ids"], saved["codes"]
        n, documents, names = meta["num_docs"], meta["documents"], meta["names"]
        consistent = (
            isinstance(vocab, dict) and len(names) == len(documents) and ids.shape == codes.shape == (n,)
            and ids.dtype == np.int64 and codes.dtype == np.int32 and len(indptr) in (len(vocab), len(vocab) + 1)
            and data.shape == indices.shape == (int(indptr[-1]),) and int(indptr[0]) == 0
            and bool(np.all(np.diff(indptr) >= 0)) and sorted(vocab.values()) == list(range(len(vocab)))
            and (n == 0 or (int(indices.min(initial=0)) >= 0 and int(indices.max(initial=0)) < n
                            and int(codes.min()) >= 0 and int(codes.max()) < len(documents))))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile):
        return None  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    if not consistent or n == 0:
        return None
    # As bm25s.BM25.load sets one up, from our single file. indptr has a column per word but the empty one ""
    # that bm25s adds to the vocabulary after building (no query holds it).
    bm25 = bm25s.BM25()
    bm25.vocab_dict, bm25.unique_token_ids_set = vocab, set(vocab.values())
    bm25.scores = {"data": data, "indices": indices, "indptr": indptr, "num_docs": n}
    bm25.nonoccurrence_array = None  # the default method ("lucene") has none
    return _Corpus(key, bm25, ids, documents, names, codes)


def _file_key(key: tuple) -> str:
    """What a saved file records of the generation it was built for (with BM25_FORMAT)."""
    return hashlib.sha256(json.dumps([BM25_FORMAT, key]).encode()).hexdigest()


def _json_bytes(value) -> np.ndarray:
    return np.frombuffer(json.dumps(value, ensure_ascii=False).encode(), np.uint8)
