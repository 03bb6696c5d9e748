"""Several processes on one collection (the PDF app and the CLI share a data dir): real child processes add, remove
and search at once; nothing is lost, no search fails, and recovery undoes only the work of a writer that is gone."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_collection import assert_consistent

from rag import Collection, Retriever, TextItem
from rag import collection as collection_module
from rag.collection import CollectionBusyError

from conftest import ToyEmbedder

pytestmark = pytest.mark.slow  # each child process takes seconds to import torch
ROOT = Path(__file__).resolve().parents[1]
NAME = "shared"
# Run at the start of every child: the worktree's packages and these tests' helpers, and a file-based barrier.
PRELUDE = f"""
import os, sys, time
from pathlib import Path
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests")!r}]
from conftest import ToyEmbedder
from rag import Collection
from test_collection_lock import NAME, item, wait_for

def publish(path, text):
    Path(path + ".tmp").write_text(text)
    os.replace(path + ".tmp", path)
"""


def item(writer: str, round_: int, i: int) -> TextItem:
    """A document whose word `word(writer, round_, i)` no other document has."""
    text = f"Minutes of meeting {writer} {round_}: the budget of project {word(writer, round_, i)} was approved."
    return TextItem(f"{writer}-{round_}-{i}.txt", text)


def word(writer: str, round_: int, i: int) -> str:
    return f"w{writer}r{round_}i{i}".lower()


def wait_for(path: str | Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not Path(path).exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def start(code: str, **values) -> subprocess.Popen:
    """A child Python running PRELUDE, then `values` bound as globals, then `code`."""
    bindings = "".join(f"{key} = {value!r}\n" for key, value in values.items())
    return subprocess.Popen([sys.executable, "-c", PRELUDE + bindings + textwrap.dedent(code)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(child: subprocess.Popen) -> None:
    _, err = child.communicate(timeout=300)
    assert child.returncode == 0, err


def open_shared(data_dir: Path) -> Collection:
    return Collection.open(NAME, data_dir=data_dir, embedder=ToyEmbedder())


WRITER = """
Path(ready).touch()
wait_for(go)
with Collection.open(NAME, data_dir=data_dir, embedder=ToyEmbedder()) as collection:
    for round_ in range(rounds):
        reports = collection.add_texts([item(writer, round_, i) for i in range(3)])
        assert all(report.ok and not report.warnings for report in reports), reports
"""


def test_two_processes_adding_to_one_collection_lose_nothing(tmp_path):
    rounds, go = 4, tmp_path / "go"
    writers = [start(WRITER, data_dir=str(tmp_path), ready=str(tmp_path / w), go=str(go), writer=w, rounds=rounds)
               for w in "AB"]
    for w in "AB":
        wait_for(tmp_path / w)
    go.touch()  # both create the collection at once, then add round after round
    for child in writers:
        finish(child)
    expected = [(w, r, i) for w in "AB" for r in range(rounds) for i in range(3)]
    with open_shared(tmp_path) as collection:
        assert sorted(d.file_name for d in collection.documents()) == sorted(item(*key).name for key in expected)
        retriever = Retriever(collection)
        for key in expected:
            [hit] = retriever.search(word(*key), k=1)
            assert hit.chunk.file_name == item(*key).name
        assert_consistent(collection)


ADDER = """
with Collection.open(NAME, data_dir=data_dir, embedder=ToyEmbedder()) as collection:
    for round_ in range(rounds):
        collection.add_texts([item("A", round_, i) for i in range(3)])
        if round_:  # removes too: their rows are deleted while the reader searches
            assert collection.remove(item("A", round_ - 1, 0).name) == 1
        publish(done, str(round_ + 1))
        time.sleep(0.05)
"""


def test_a_search_in_another_process_while_one_writes_never_fails(tmp_path):
    rounds, done = 20, tmp_path / "done"
    texts = {item("A", r, i).text for r in range(rounds) for i in range(3)} | {item("B", 0, 0).text}
    with open_shared(tmp_path) as collection:
        collection.add_texts([item("B", 0, 0)])
        retriever = Retriever(collection)
        child = start(ADDER, data_dir=str(tmp_path), done=str(done), rounds=rounds)
        searches_during_writes = 0
        while child.poll() is None:
            finished = int(done.read_text()) if done.exists() else 0
            for mode in ("hybrid", "dense", "bm25"):
                hits = retriever.search("budget of the project approved", k=100, mode=mode)
                assert hits and all(hit.chunk.text in texts for hit in hits)
            if finished:  # a round that ended before this search began is all there, in both indexes
                kept = item("A", finished - 1, 1)  # the rounds' documents 1 and 2 are never removed
                assert retriever.search(word("A", finished - 1, 1), k=1)[0].chunk.text == kept.text
                dense = retriever.search("budget", k=100, mode="dense")
                assert kept.text in {hit.chunk.text for hit in dense}
                searches_during_writes += 1
        finish(child)
        assert searches_during_writes >= 5, "the searches did not overlap the writes"
        assert len(collection.documents()) == 1 + 2 * rounds + 1  # B, then 2 of each round and the last round's 3rd
        assert_consistent(collection)


FROZEN = """
with Collection.open(NAME, data_dir=data_dir, embedder=ToyEmbedder()) as collection:
    save = collection.index.save

    def save_later(directory):  # step 2 of the add waits: its document is "pending", the write lock held
        Path(saving).touch()
        wait_for(go)
        save(directory)

    collection.index.save = save_later
    [report] = collection.add_texts([item("A", 0, 0)])
    assert report.ok and not report.warnings, report
"""


def test_opening_during_another_process_add_neither_waits_nor_undoes_it(tmp_path, monkeypatch):
    saving, go = tmp_path / "saving", tmp_path / "go"
    with open_shared(tmp_path) as seeded:
        seeded.add_texts([item("B", 0, 0)])
    child = start(FROZEN, data_dir=str(tmp_path), saving=str(saving), go=str(go))
    try:
        wait_for(saving)
        started = time.monotonic()
        with open_shared(tmp_path) as collection:  # recovery would take the half-added document for a crash's
            assert time.monotonic() - started < 5, "the open waited for the other process's write"
            assert [d.file_name for d in collection.store.documents("pending")] == [item("A", 0, 0).name]
            retriever = Retriever(collection)
            assert [hit.chunk.file_name for hit in retriever.search(word("B", 0, 0), k=1)] == [item("B", 0, 0).name]
            monkeypatch.setattr(collection_module, "LOCK_TIMEOUT", 0.5)
            busy = rf"collection '{NAME}' is being changed by another process \(pid {child.pid}\).*after 0.5 s"
            with pytest.raises(CollectionBusyError, match=busy):
                collection.add_texts([item("B", 1, 0)])
            go.touch()
            finish(child)
            assert retriever.search(word("A", 0, 0), k=1)[0].chunk.file_name == item("A", 0, 0).name
    finally:
        go.touch()
        child.kill()
    with open_shared(tmp_path) as collection:
        assert sorted(d.file_name for d in collection.documents()) == [item("A", 0, 0).name, item("B", 0, 0).name]
        assert_consistent(collection)


def test_the_half_add_of_a_killed_writer_is_undone_by_the_next_open(tmp_path):
    saving = tmp_path / "saving"
    with open_shared(tmp_path) as seeded:
        seeded.add_texts([item("B", 0, 0)])
    child = start(FROZEN, data_dir=str(tmp_path), saving=str(saving), go=str(tmp_path / "never"))
    wait_for(saving)
    child.kill()  # the kernel releases its lock: the pending document is now a crash's leftover
    child.communicate(timeout=60)
    with open_shared(tmp_path) as collection:
        assert not collection.store.documents("pending")
        assert [d.file_name for d in collection.documents()] == [item("B", 0, 0).name]
        assert_consistent(collection)
