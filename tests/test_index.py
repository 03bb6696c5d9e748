"""rag.index: FAISS (exact and HNSW) against the brute-force NumPy reference, real deletes, crash-safe saves."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import rag.index
from rag.index import FaissIndex, IndexFormatError, NumpyIndex, load_index, make_index

DIM = 64
KINDS = {
    "numpy": lambda dim: NumpyIndex(dim),
    "faiss-flat": lambda dim: FaissIndex(dim),
    "faiss-hnsw": lambda dim: FaissIndex(dim, approx_threshold=1),  # approximate from the first vector
}


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    return unit(rng.standard_normal((n, dim)))


def assert_same_results(expected, actual, tol=1e-5):
    """Scores equal to `tol`; ids equal, except that two ids may swap places inside a near-tie (faiss's BLAS
    sums in another order than NumPy's, so scores differ in the last bits)."""
    (e_scores, e_ids), (a_scores, a_ids) = expected, actual
    assert a_scores.dtype == np.float32 and a_ids.dtype == np.int64
    assert a_scores.shape == e_scores.shape and a_ids.shape == e_ids.shape
    np.testing.assert_allclose(a_scores, e_scores, atol=tol, rtol=0)
    for row, col in zip(*np.nonzero(a_ids != e_ids), strict=True):
        neighbours = e_scores[row, max(col - 1, 0):col + 2]
        assert np.sum(np.abs(neighbours - e_scores[row, col]) <= tol) > 1, f"row {row} col {col}: not a tie"


def recall(expected_ids: np.ndarray, actual_ids: np.ndarray) -> float:
    hits = [len(set(e[e >= 0]) & set(a[a >= 0])) / max((e >= 0).sum(), 1) for e, a in zip(expected_ids, actual_ids,
                                                                                          strict=True)]
    return float(np.mean(hits))


def filled(kind: str, ids: np.ndarray, vectors: np.ndarray):
    index = KINDS[kind](vectors.shape[1])
    index.add(ids, vectors)
    return index


# --- exact FAISS equals the reference ------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 10, 100])
def test_exact_faiss_equals_numpy_after_adds_removes_and_readds(k):
    rng = np.random.default_rng(k)
    ids = rng.permutation(10_000)[:2000].astype(np.int64)  # sparse and unordered, like chunk ids after deletes
    vectors, queries = random_unit(rng, 2000), random_unit(rng, 50)
    reference, index = NumpyIndex(DIM), FaissIndex(DIM)
    for part in np.array_split(np.arange(2000), 3):  # several adds, not one
        reference.add(ids[part], vectors[part])
        index.add(ids[part], vectors[part])
    assert not index.approximate and len(index) == len(reference) == 2000
    assert_same_results(reference.search(queries, k), index.search(queries, k))

    removed = rng.choice(ids, 700, replace=False)
    assert index.remove(removed) == reference.remove(removed) == 700
    assert len(index) == 1300
    scores, found = index.search(queries, k)
    assert not np.isin(found, removed).any()
    assert_same_results(reference.search(queries, k), (scores, found))

    fresh = random_unit(rng, 700)  # the same ids come back with new vectors
    reference.add(removed, fresh)
    index.add(removed, fresh)
    assert_same_results(reference.search(queries, k), index.search(queries, k))


@pytest.mark.parametrize("kind", KINDS)
def test_fewer_than_k_pads_with_minus_one_and_minus_inf(kind):
    rng = np.random.default_rng(0)
    index = KINDS[kind](DIM)
    scores, ids = index.search(random_unit(rng, 2), 4)
    assert (ids == -1).all() and np.isneginf(scores).all() and ids.shape == (2, 4)
    index.add(np.array([5, 9, 2]), random_unit(rng, 3))
    scores, ids = index.search(random_unit(rng, 2), 5)
    assert sorted(ids[0, :3]) == [2, 5, 9] and (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert (np.diff(scores[:, :3], axis=1) <= 0).all(), "scores must be descending"


@pytest.mark.parametrize("kind", KINDS)
def test_ties_are_broken_by_id(kind):
    vector = random_unit(np.random.default_rng(1), 1)
    index = KINDS[kind](DIM)
    index.add(np.array([7, 3, 11, 5]), np.repeat(vector, 4, axis=0))
    assert index.search(vector, 4)[1].tolist() == [[3, 5, 7, 11]]


@pytest.mark.parametrize("kind", KINDS)
def test_remove_counts_only_known_ids(kind):
    index = filled(kind, np.arange(10), random_unit(np.random.default_rng(2), 10))
    assert index.remove(np.array([1, 2, 2, 99, -1])) == 2
    assert index.remove(np.array([1])) == 0
    assert len(index) == 8


# --- approximate (HNSW) --------------------------------------------------------------------------------------------

def clustered(rng, n, dim, n_clusters=500, spread=0.5):
    """Topic-like data: embeddings of real text sit in clusters, not uniformly on the sphere."""
    centres = rng.standard_normal((n_clusters, dim))
    return unit(centres[rng.integers(0, n_clusters, n)] + spread * rng.standard_normal((n, dim)))


@pytest.mark.slow  # 20,200 points through HNSW and exact search: seconds
@pytest.mark.parametrize("data", ["uniform-64", "clustered-384"])
def test_hnsw_recall_at_10_against_exact(data):
    rng = np.random.default_rng(3)
    dim = int(data.split("-")[1])
    make = random_unit if data.startswith("uniform") else clustered
    points = make(rng, 20_200, dim)  # queries from the same distribution (the same clusters) as the data
    vectors, queries = points[:20_000], points[20_000:]
    ids = np.arange(20_000, dtype=np.int64) * 7
    start = time.perf_counter()
    index = FaissIndex(dim, approx_threshold=10_000)
    index.add(ids, vectors)
    built = time.perf_counter()
    scores, found = index.search(queries, 10)
    searched = time.perf_counter()
    assert index.approximate
    expected = filled("numpy", ids, vectors).search(queries, 10)
    value = recall(expected[1], found)
    print(f"\nHNSW {data}: recall@10 = {value:.4f}; build {built - start:.2f} s, "
          f"search {1000 * (searched - built) / len(queries):.2f} ms/query")
    assert value >= 0.95
    # whatever it returns is scored exactly
    assert np.allclose(scores, np.einsum("qd,qkd->qk", queries, vectors[found // 7]), atol=1e-5)


def test_hnsw_deletes_never_come_back_and_rebuilds():
    rng = np.random.default_rng(4)
    vectors, queries = random_unit(rng, 5000), random_unit(rng, 100)
    ids = np.arange(5000, dtype=np.int64)
    reference, index = NumpyIndex(DIM), FaissIndex(DIM, approx_threshold=2000)
    reference.add(ids, vectors)
    index.add(ids, vectors)
    assert index.approximate

    # remove exactly what the queries would find: every first hit must now be a survivor
    removed = np.unique(reference.search(queries, 5)[1])
    assert index.remove(removed) == reference.remove(removed) == len(removed)
    assert 0 < (index._labels < 0).mean() <= rag.index.REBUILD_FRACTION, "tombstones, not a rebuild"
    scores, found = index.search(queries, 10)
    assert not np.isin(found, removed).any() and (found >= 0).all()
    assert recall(reference.search(queries, 10)[1], found) >= 0.95

    # a crowd of tombstones around one query: the over-fetch must widen until 10 survivors are found
    crowd = reference.search(queries[:1], 300)[1][0]
    index.remove(crowd)
    reference.remove(crowd)
    assert (index._labels < 0).mean() <= rag.index.REBUILD_FRACTION
    found = index.search(queries[:1], 10)[1]
    assert (found >= 0).all() and not np.isin(found, np.concatenate([removed, crowd])).any()

    # add-remove-add: the old vectors of re-added ids must not be returned under their ids
    back = crowd[:50]
    fresh = random_unit(rng, 50)
    index.add(back, fresh)
    reference.add(back, fresh)
    vector_of = dict(zip(back.tolist(), fresh, strict=True)) | dict(zip(reference._ids.tolist(), reference._vectors,
                                                                           strict=True))
    scores, found = index.search(fresh[:10], 10)
    assert found[:, 0].tolist() == back[:10].tolist()
    assert np.allclose(scores, [[q @ vector_of[i] for i in row] for q, row in zip(fresh[:10], found, strict=True)],
                       atol=1e-5)

    # past REBUILD_FRACTION the graph is rebuilt without tombstones; below the threshold it turns exact
    survivors = reference._ids
    index.remove(survivors[:1000])
    reference.remove(survivors[:1000])
    assert index.approximate and (index._labels >= 0).all() and len(index) == len(reference)
    index.remove(survivors[1000:2500])
    reference.remove(survivors[1000:2500])
    assert not index.approximate and len(index) == len(reference) < 2000
    assert_same_results(reference.search(queries, 10), index.search(queries, 10))


@pytest.mark.parametrize("kind", KINDS)
def test_search_among_is_exact_search_over_those_ids_only(kind):
    """A document filter's search: equal to brute force over the allowed ids, also in HNSW after removes and
    re-adds; ids the index does not hold are ignored."""
    rng = np.random.default_rng(6)
    ids, vectors, queries = np.arange(3000, dtype=np.int64), random_unit(rng, 3000), random_unit(rng, 20)
    index = filled(kind, ids, vectors)
    index.remove(ids[:200])
    index.add(ids[:100], vectors[:100])  # back, with their own vectors, under new HNSW labels
    allowed = np.concatenate([rng.choice(ids, 300, replace=False), [5000, 150]])  # 5000: never added, 150: removed
    held = np.setdiff1d(allowed, np.concatenate([ids[100:200], [5000]]))
    reference = NumpyIndex(DIM)
    reference.add(held, vectors[held])
    assert_same_results(reference.search(queries, 10), index.search_among(queries, 10, allowed))
    scores, found = index.search_among(queries, 4, np.array([7, 150, 5000]))
    assert (found[:, 0] == 7).all() and (found[:, 1:] == -1).all() and np.isneginf(scores[:, 1:]).all()
    scores, found = index.search_among(queries, 3, np.array([], np.int64))
    assert found.shape == (20, 3) and (found == -1).all()


# --- persistence ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, tmp_path):
    rng = np.random.default_rng(5)
    index = filled(kind, np.arange(0, 3000, 3), random_unit(rng, 1000))
    index.remove(np.arange(0, 300, 3))  # tombstones in the HNSW case, and they must survive the save
    queries = random_unit(rng, 20)
    before = index.search(queries, 10)
    index.save(tmp_path)
    loaded = load_index(tmp_path)
    assert type(loaded) is type(index) and len(loaded) == len(index) == 900 and loaded.dim == DIM
    after = loaded.search(queries, 10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])
    assert not np.isin(after[1], np.arange(0, 300, 3)).any()
    assert type(index).load(tmp_path).search(queries, 3)[1].tolist() == before[1][:, :3].tolist()
    manifest = json.loads((tmp_path / "index.json").read_text())
    assert manifest["kind"] == index.kind and manifest["dim"] == DIM and manifest["count"] == 900
    with pytest.raises(ValueError, match="duplicate ids"):
        loaded.add(np.array([303]), random_unit(rng, 1))  # the loaded index knows its ids


@pytest.fixture
def saved(tmp_path) -> Path:
    filled("faiss-flat", np.arange(100), random_unit(np.random.default_rng(6), 100)).save(tmp_path)
    return tmp_path


def data_file(directory: Path, name: str) -> Path:
    return directory / json.loads((directory / "index.json").read_text())["files"][name]["file"]


def test_load_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved index"):
        load_index(tmp_path / "nowhere")


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "index.json").write_text("{not json"), "corrupt"),
    (lambda d: (d / "index.json").write_text(json.dumps({"format": "something else"})), "not an llmkit"),
    (lambda d: (d / "index.json").write_text((d / "index.json").read_text().replace('"version": 1', '"version": 99')),
     "version 99"),
    (lambda d: (d / "index.json").write_text((d / "index.json").read_text().replace('"dim"', '"dimension"')), "dim"),
    (lambda d: data_file(d, "index.faiss").unlink(), "missing"),
    (lambda d: data_file(d, "index.faiss").write_bytes(data_file(d, "index.faiss").read_bytes()[:500]), "bytes"),
    (lambda d: data_file(d, "index.faiss").write_bytes(b"\0" * data_file(d, "index.faiss").stat().st_size), "corrupt"),
])
def test_load_damaged_index_says_what_is_wrong(saved, damage, message):
    damage(saved)
    with pytest.raises(IndexFormatError, match=message):
        load_index(saved)


def test_load_wrong_kind(saved):
    with pytest.raises(IndexFormatError, match="holds a 'faiss' index, not 'numpy'"):
        NumpyIndex.load(saved)


@pytest.mark.parametrize("kind", ["numpy", "faiss-hnsw"])
@pytest.mark.parametrize("failing_call", [1, 2, 3])  # each data file, then index.json
def test_crash_mid_save_leaves_previous_save_loadable(kind, failing_call, tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    index = filled(kind, np.arange(50), random_unit(rng, 50))
    queries = random_unit(rng, 5)
    index.save(tmp_path)
    before = index.search(queries, 5)
    index.add(np.arange(50, 80), random_unit(rng, 30))
    index.remove(np.arange(10))

    real_replace, calls = os.replace, []

    def crashing_replace(src, dst):
        calls.append(dst)
        if len(calls) == failing_call:
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(rag.index.os, "replace", crashing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        index.save(tmp_path)
    monkeypatch.undo()
    old = load_index(tmp_path)
    assert len(old) == 50
    np.testing.assert_array_equal(old.search(queries, 5)[1], before[1])

    index.save(tmp_path)  # the next save succeeds and sweeps up the debris
    assert len(load_index(tmp_path)) == 70
    manifest = json.loads((tmp_path / "index.json").read_text())
    assert {p.name for p in tmp_path.iterdir()} == {"index.json"} | {f["file"] for f in manifest["files"].values()}


# --- bad input and construction ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ids, vectors, message", [
    (np.arange(2), np.ones((2, DIM + 1), np.float32), r"shape \(n, 64\)"),
    (np.arange(2), np.ones((2, DIM), np.float64), "float32"),
    (np.arange(2), np.ones(DIM, np.float32), r"shape \(n, 64\)"),
    (np.arange(2), np.array([[np.nan] * DIM, [0.1] * DIM], np.float32), r"NaN or inf in rows \[0\]"),
    (np.arange(2), np.array([[0.1] * DIM, [np.inf] * DIM], np.float32), r"NaN or inf in rows \[1\]"),
    (np.array([4, 4]), np.ones((2, DIM), np.float32), r"duplicate ids \[4\]"),
    (np.array([1, 3]), np.ones((2, DIM), np.float32), r"duplicate ids \[1\]"),  # 1 is already in
    (np.array([-5, 6]), np.ones((2, DIM), np.float32), "non-negative"),
    (np.arange(3), np.ones((2, DIM), np.float32), r"shape \(2,\)"),
    (np.array([0.5, 6.0]), np.ones((2, DIM), np.float32), "integer"),
])
def test_bad_input_is_rejected_with_a_clear_message(kind, ids, vectors, message):
    index = filled(kind, np.array([0, 1]), random_unit(np.random.default_rng(8), 2))
    with pytest.raises(ValueError, match=message):
        index.add(ids, vectors)
    assert len(index) == 2, "a rejected add changes nothing"
    with pytest.raises(ValueError, match="float32"):
        index.search(np.ones((1, DIM)), 1)
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.ones((1, DIM), np.float32), 0)


def test_make_index_kinds_and_fallback(monkeypatch):
    assert isinstance(make_index(8), FaissIndex) and isinstance(make_index(8, "numpy"), NumpyIndex)
    assert make_index(8, approx_threshold=5).approx_threshold == 5
    with pytest.raises(ValueError, match="valid kinds: faiss, numpy"):
        make_index(8, "annoy")
    monkeypatch.setitem(sys.modules, "faiss", None)  # as if faiss-cpu were not installed
    with pytest.warns(UserWarning, match="pip install faiss-cpu"):
        assert isinstance(make_index(8), NumpyIndex)


def test_importing_the_index_module_does_not_import_faiss():
    code = "import sys, rag.index; assert 'faiss' not in sys.modules, 'faiss imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
