"""Vector indexes: int64 chunk ids -> L2-normalised float32 vectors, searched by inner product (= cosine).

Two implementations of one small `VectorIndex` protocol:
- `NumpyIndex`: brute force and exact, ties broken by id. The reference the tests compare against, and
  the fallback when faiss is not installed.
- `FaissIndex`: an exact `IndexIDMap2(IndexFlatIP)` until it holds `approx_threshold` vectors, then an
  approximate HNSW graph (`IndexHNSWFlat`, inner product, M=32). faiss is imported on first use, so
  `import rag.index` stays light.

Deleting from HNSW: faiss cannot `remove_ids` from an HNSW graph, so the graph is keyed by its own
sequential labels and `_labels[label]` maps each to a chunk id, or to -1 once that chunk is removed
(a tombstone). Search over-fetches by the dead fraction, maps labels to ids and drops tombstones,
widening the fetch for any query left short. A removed chunk's vector never resurfaces, even when its
id is added again (the new vector gets a new label). When tombstones pass `REBUILD_FRACTION` of the graph, `remove`
rebuilds it from the live vectors, which the graph itself stores (no second flat copy: that would
double memory); a rebuild that finds the index below the threshold goes back to the exact flat index.
The flat index removes for real.

Saving writes every file under a fresh name, then replaces `index.json` (which names the files) last,
so a crash at any point leaves the previous save loadable, and a reader in another process loads the old
save or the new one, never half of one; stale files are deleted after the commit. `saved_version` tells
saves apart: a process compares it to notice another's save, and reads it before and after a load to know
which save it loaded. No pickle. Does not: normalise vectors (the embedder does), store chunk text (the
metadata store does), verify checksums (sizes only, which catch truncation), or lock: one writer at a time
(`rag.collection` holds a lock for it), and a load racing a save may find the old files gone (load again).
"""

from __future__ import annotations

import json
import os
import re
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol, Self

import numpy as np

APPROX_THRESHOLD = 50_000  # below this, exact flat search is fast enough and needs no graph build
HNSW_M = 32
EF_CONSTRUCTION = 80
EF_SEARCH = 128
FEW_QUERIES = 8  # searches of fewer queries run on one thread (see FaissIndex.search)
REBUILD_FRACTION = 0.25  # rebuild the HNSW graph once this share of its nodes are tombstones
MANIFEST = "index.json"
FORMAT_VERSION = 1
KINDS = ("faiss", "numpy")
_OUR_FILE = re.compile(r"^(?:[a-z]+-[0-9a-f]{12}\.(?:npy|faiss)(?:\.tmp)?|index\.json\.tmp)$")  # what _commit writes


class IndexFormatError(ValueError):
    """A saved index is missing pieces, corrupt, or from another version or kind; rebuild or re-save it."""


class VectorIndex(Protocol):
    """ids (n,) int64 >= 0 and vectors (n, dim) float32, finite; bad input raises ValueError naming the problem.

    `add` rejects ids already present; `remove` ignores unknown ids and returns how many it removed.
    `search(queries (q, dim), k)` -> (scores (q, k) float32, ids (q, k) int64), best first, padded with
    -inf / -1 when fewer than k vectors are held. `save(directory)` / `load(directory)` round-trip exactly.
    """

    dim: int

    def __len__(self) -> int: ...
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...
    def remove(self, ids: np.ndarray) -> int: ...
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...
    def search_among(self, queries: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def save(self, directory: str | Path) -> None: ...
    @classmethod
    def load(cls, directory: str | Path) -> Self: ...


def check_vectors(vectors: np.ndarray, dim: int, what: str = "vectors") -> np.ndarray:
    if not isinstance(vectors, np.ndarray) or vectors.dtype != np.float32:
        raise ValueError(f"{what} must be a float32 numpy array, got {getattr(vectors, 'dtype', type(vectors))} "
                         f"(convert with .astype(np.float32))")
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {vectors.shape}")
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if bad.size:
        raise ValueError(f"{what} contain NaN or inf in rows {bad[:10].tolist()}")
    return np.ascontiguousarray(vectors)


def check_ids(ids: np.ndarray, n: int, existing: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu" or ids.shape != (n,):
        raise ValueError(f"ids must be an integer array of shape ({n},), got {ids.dtype} {ids.shape}")
    ids = ids.astype(np.int64)
    if (ids < 0).any():
        raise ValueError(f"ids must be non-negative (-1 marks padding), got {ids[ids < 0][:10].tolist()}")
    unique, counts = np.unique(ids, return_counts=True)
    dup = np.union1d(unique[counts > 1], ids[existing(ids)])
    if dup.size:
        raise ValueError(f"duplicate ids {dup[:10].tolist()}: each id is added once (remove it first to replace it)")
    return ids


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort candidates (q, c) by descending score then id; pad to (q, k) with -inf / -1."""
    valid = ids >= 0  # faiss marks a missing result with id -1 and score -FLT_MAX
    scores, ids = np.where(valid, scores, -np.inf).astype(np.float32), np.where(valid, ids, -1).astype(np.int64)
    if scores.shape[1] < k:
        fill = ((0, 0), (0, k - scores.shape[1]))
        scores, ids = np.pad(scores, fill, constant_values=-np.inf), np.pad(ids, fill, constant_values=-1)
    order = np.lexsort((ids, -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, -1), np.take_along_axis(ids, order, -1)


def _exact(queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over the given (n,) ids and their (n, dim) vectors: (q, k) scores and ids, padded."""
    scores = queries @ vectors.T  # (q, n)
    return top_k(scores, np.broadcast_to(ids, scores.shape), k)


def _check_search(queries: np.ndarray, k: int, dim: int) -> np.ndarray:
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return check_vectors(queries, dim, "queries")


class NumpyIndex:
    """Exact brute force: every query scores every vector (a full sort, O(n log n) a query); ties go to the lower id.

    Every add copies the arrays: fine as a reference and for small collections, not for millions of chunks."""

    kind = "numpy"

    def __init__(self, dim: int):
        assert dim > 0, dim
        self.dim = dim
        self._ids = np.empty(0, np.int64)
        self._vectors = np.empty((0, dim), np.float32)

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = check_vectors(vectors, self.dim)
        ids = check_ids(ids, len(vectors), lambda new: np.isin(new, self._ids))
        self._ids, self._vectors = np.concatenate([self._ids, ids]), np.concatenate([self._vectors, vectors])

    def remove(self, ids: np.ndarray) -> int:
        keep = ~np.isin(self._ids, np.asarray(ids, np.int64))
        self._ids, self._vectors = self._ids[keep], self._vectors[keep]
        return int((~keep).sum())

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = _check_search(queries, k, self.dim)
        return _exact(queries, self._ids, self._vectors, k)

    def search_among(self, queries: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        queries = _check_search(queries, k, self.dim)
        keep = np.isin(self._ids, np.asarray(ids, np.int64))
        return _exact(queries, self._ids[keep], self._vectors[keep], k)

    def save(self, directory: str | Path) -> None:
        _commit(Path(directory), {"kind": self.kind, "dim": self.dim, "count": len(self)},
                {"ids.npy": lambda f: np.save(f, self._ids), "vectors.npy": lambda f: np.save(f, self._vectors)})

    @classmethod
    def load(cls, directory: str | Path) -> NumpyIndex:
        manifest, paths = _open(Path(directory), cls.kind)
        index = cls(manifest["dim"])
        index._ids, index._vectors = _read(paths["ids.npy"], np.load), _read(paths["vectors.npy"], np.load)
        if (index._vectors.shape != (len(index._ids), index.dim) or index._vectors.dtype != np.float32
                or index._ids.dtype != np.int64):
            raise IndexFormatError(f"{directory}: vectors {index._vectors.shape} do not match ids/dim; re-save")
        return _check_count(index, manifest, directory)


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise ImportError("FaissIndex needs faiss: `pip install faiss-cpu` (or use kind='numpy')") from e
    return faiss


class FaissIndex:
    """Exact flat search below `approx_threshold` vectors, HNSW with tombstones above (see module doc).

    Results are ordered by (score, id) like NumpyIndex, but which of several vectors tied at the k-th score
    make the cut is faiss's choice; only exact duplicates tie in practice."""

    kind = "faiss"

    def __init__(self, dim: int, approx_threshold: int = APPROX_THRESHOLD, ef_search: int = EF_SEARCH):
        assert dim > 0 and approx_threshold > 0 and ef_search > 0, (dim, approx_threshold, ef_search)
        self.dim, self.approx_threshold, self.ef_search = dim, approx_threshold, ef_search
        self._faiss = _faiss()
        self._index = self._faiss.IndexIDMap2(self._faiss.IndexFlatIP(dim))
        self._labels: np.ndarray | None = None  # HNSW only: label -> chunk id, -1 for a removed one
        self._ids: set[int] = set()

    @property
    def approximate(self) -> bool:
        return self._labels is not None

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = check_vectors(vectors, self.dim)
        ids = check_ids(ids, len(vectors), lambda new: np.fromiter((i in self._ids for i in new.tolist()), bool))
        if self.approximate:
            self._index.add(vectors)
            self._labels = np.concatenate([self._labels, ids])
        else:
            self._index.add_with_ids(vectors, ids)
        self._ids.update(ids.tolist())
        if not self.approximate and len(self) >= self.approx_threshold:
            self._rebuild()

    def remove(self, ids: np.ndarray) -> int:
        ids = np.unique(np.asarray(ids, np.int64))
        gone = ids[np.fromiter((i in self._ids for i in ids.tolist()), bool, len(ids))]
        if not gone.size:
            return 0
        self._ids.difference_update(gone.tolist())
        if not self.approximate:
            removed = self._index.remove_ids(gone)
            assert removed == gone.size, (removed, gone.size)
        else:
            self._labels[np.isin(self._labels, gone)] = -1
            if (self._labels < 0).mean() > REBUILD_FRACTION:
                self._rebuild()
        return int(gone.size)

    def _live(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids (n,), vectors (n, dim)) of every live entry, whichever index holds them."""
        if self.approximate:
            alive = np.flatnonzero(self._labels >= 0)
            return self._labels[alive], self._index.reconstruct_n(0, self._index.ntotal)[alive]
        return self._faiss.vector_to_array(self._index.id_map), self._index.index.reconstruct_n(0, self._index.ntotal)

    def _rebuild(self) -> None:
        """Rebuild from the live vectors: HNSW at or above the threshold, exact flat below it."""
        ids, vectors = self._live()
        if len(ids) >= self.approx_threshold:
            self._index = self._faiss.IndexHNSWFlat(self.dim, HNSW_M, self._faiss.METRIC_INNER_PRODUCT)
            self._index.hnsw.efConstruction = EF_CONSTRUCTION
            self._index.add(vectors)
            self._labels = ids
        else:
            self._index = self._faiss.IndexIDMap2(self._faiss.IndexFlatIP(self.dim))
            self._index.add_with_ids(vectors, ids)
            self._labels = None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = _check_search(queries, k, self.dim)
        if len(queries) >= FEW_QUERIES:
            return self._search(queries, k)
        # A few queries: one OpenMP thread. One query gains nothing from threads (flat, 10k vectors: 0.3 ms on one,
        # 0.7 on two), and loses much when cores are busy: faiss's workers wait at a barrier for a descheduled
        # peer, e.g. behind torch's or onnxruntime's spinning threads; in bench/rag.py a query's search took
        # 20+ ms instead of 0.7. The setting is the calling thread's own (an OpenMP ICV): other threads keep theirs.
        threads = self._faiss.omp_get_max_threads()
        self._faiss.omp_set_num_threads(1)
        try:
            return self._search(queries, k)
        finally:
            self._faiss.omp_set_num_threads(threads)

    def search_among(self, queries: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over `ids` only (those not in the index are ignored), HNSW or not: for a document filter.

        The vectors are copied out and scored directly, so cost grows with len(ids): meant for a few thousand,
        where a search of the whole index widened until enough of them turn up would cost far more."""
        queries = _check_search(queries, k, self.dim)
        ids = np.unique(np.asarray(ids, np.int64))
        if self.approximate:
            labels = np.flatnonzero(np.isin(self._labels, ids))  # tombstones (-1) never match
            return _exact(queries, self._labels[labels], self._index.reconstruct_batch(labels), k)
        ids = ids[np.fromiter((i in self._ids for i in ids.tolist()), bool, len(ids))]
        return _exact(queries, ids, self._index.reconstruct_batch(ids), k)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.approximate:
            return top_k(*self._index.search(queries, min(k, max(len(self), 1))), k)
        self._index.hnsw.efSearch = self.ef_search
        total, want = self._index.ntotal, min(k, len(self))
        fetch = min(total, 2 * k + int(k * (total / max(len(self), 1) - 1)))  # over-fetch by the dead share
        scores, ids = np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        rows = np.arange(len(queries))
        while rows.size:
            got_scores, labels = self._index.search(queries[rows], fetch)  # (r, fetch): graph labels
            got_ids = np.where(labels >= 0, self._labels[labels], -1)
            scores[rows], ids[rows] = top_k(got_scores, got_ids, k)
            if fetch == total:
                break
            rows = rows[(ids[rows] >= 0).sum(axis=1) < want]  # tombstones crowded them out: widen
            fetch = min(total, 4 * fetch)
        return scores, ids

    def save(self, directory: str | Path) -> None:
        files = {"index.faiss": lambda f: self._faiss.write_index(self._index, self._faiss.PyCallbackIOWriter(f.write))}
        if self.approximate:
            files["labels.npy"] = lambda f: np.save(f, self._labels)
        _commit(Path(directory), {"kind": self.kind, "dim": self.dim, "count": len(self),
                                  "approx_threshold": self.approx_threshold, "ef_search": self.ef_search}, files)

    @classmethod
    def load(cls, directory: str | Path) -> FaissIndex:
        manifest, paths = _open(Path(directory), cls.kind, ("approx_threshold", "ef_search"))
        index = cls(manifest["dim"], manifest["approx_threshold"], manifest["ef_search"])
        index._index = _read(paths["index.faiss"], lambda p: index._faiss.read_index(str(p)))
        if index._index.d != index.dim:
            raise IndexFormatError(f"{directory}: faiss index has dim {index._index.d}, {MANIFEST} says {index.dim}")
        if isinstance(index._index, index._faiss.IndexHNSWFlat) != ("labels.npy" in paths):
            raise IndexFormatError(f"{directory}: a {type(index._index).__name__} needs labels.npy iff it is HNSW")
        if "labels.npy" in paths:
            index._labels = _read(paths["labels.npy"], np.load)
            if index._labels.shape != (index._index.ntotal,) or index._labels.dtype != np.int64:
                raise IndexFormatError(f"{directory}: labels {index._labels.shape} do not fit the graph's "
                                       f"{index._index.ntotal} vectors")
        index._ids = set(index._live()[0].tolist())
        return _check_count(index, manifest, directory)


def make_index(dim: int, kind: str = "faiss", **options) -> VectorIndex:
    """A new empty index; kind="faiss" falls back to the exact NumPy index (with a warning) without faiss."""
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if kind == "faiss":
        try:
            return FaissIndex(dim, **options)
        except ImportError as e:
            warnings.warn(f"{e}; falling back to the exact NumPy index", stacklevel=2)
    return NumpyIndex(dim)


def load_index(directory: str | Path) -> VectorIndex:
    """Load whichever kind of index `directory` holds."""
    kind = _open(Path(directory), None)[0]["kind"]
    return (FaissIndex if kind == "faiss" else NumpyIndex).load(directory)


def saved_version(directory: str | Path) -> bytes | None:
    """What identifies the save in `directory` (None when there is none): every save changes it, as its manifest
    names files under a fresh random token, and it never comes back."""
    try:
        return (Path(directory) / MANIFEST).read_bytes()
    except FileNotFoundError:
        return None


def _write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _commit(directory: Path, manifest: dict, files: dict[str, Callable[[BinaryIO], object]]) -> None:
    """Write data files under fresh names, then point index.json at them, then delete what it no longer names."""
    directory.mkdir(parents=True, exist_ok=True)
    token, written = uuid.uuid4().hex[:12], {}
    for name, write in files.items():
        stem, suffix = name.split(".")
        path = directory / f"{stem}-{token}.{suffix}"
        _write_atomic(path, write)
        written[name] = {"file": path.name, "bytes": path.stat().st_size}
    manifest = {"format": "llmkit-vector-index", "version": FORMAT_VERSION, **manifest, "files": written}
    _write_atomic(directory / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    if hasattr(os, "O_DIRECTORY"):  # make the renames durable (POSIX)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)
    keep = {entry["file"] for entry in written.values()}
    for path in directory.iterdir():
        if path.name not in keep and _OUR_FILE.match(path.name):
            path.unlink()


def _open(directory: Path, kind: str | None, fields: tuple[str, ...] = ()) -> tuple[dict, dict[str, Path]]:
    """The manifest (with integer `dim`, `count` and `fields`) and its data files, checked to exist at their size."""
    path = directory / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no saved index in {directory} ({MANIFEST} is missing); build one and save() it")
    try:
        manifest = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IndexFormatError(f"{path} is corrupt ({e}); rebuild the index") from e
    if not isinstance(manifest, dict) or manifest.get("format") != "llmkit-vector-index":
        raise IndexFormatError(f"{path} is not an llmkit vector index manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise IndexFormatError(f"{path} has format version {manifest.get('version')!r}; this llmkit reads "
                               f"version {FORMAT_VERSION}: rebuild the index from your documents")
    if manifest.get("kind") not in KINDS or (kind and manifest["kind"] != kind):
        raise IndexFormatError(f"{directory} holds a {manifest.get('kind')!r} index, not {kind or KINDS!r}; "
                               f"load_index() loads any kind")
    paths = {}
    try:
        for name, entry in manifest["files"].items():
            path = paths[name] = directory / entry["file"]
            size = path.stat().st_size if path.is_file() else None
            if size != entry["bytes"]:
                raise IndexFormatError(f"{path} is {'missing' if size is None else f'{size} bytes'}, "
                                       f"{MANIFEST} says {entry['bytes']} bytes: the save was damaged; rebuild")
        for field in ("dim", "count", *fields):
            if not isinstance(manifest[field], int):
                raise IndexFormatError(f"{directory}/{MANIFEST}: {field} is {manifest[field]!r}, not an integer")
    except (KeyError, TypeError, AttributeError) as e:
        raise IndexFormatError(f"{directory}/{MANIFEST} lacks a field ({e!r}); rebuild the index") from e
    return manifest, paths


def _read(path: Path, reader: Callable[[Path], object]):
    try:
        return reader(path)
    except (ValueError, OSError, RuntimeError, EOFError) as e:
        raise IndexFormatError(f"{path} is corrupt ({e}); rebuild the index") from e


def _check_count(index, manifest: dict, directory: str | Path):
    if len(index) != manifest["count"]:
        raise IndexFormatError(f"{directory}: {len(index)} vectors loaded, {MANIFEST} says {manifest['count']}")
    return index
