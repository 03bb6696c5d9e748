"""The PDF chat shared by many browsers: typed names create nothing, uploads create at most `Limits.collections`
collections, a few stay open (the least recently used closed, never one in use), and uploads' temp copies are
deleted. Handlers called directly, on the toy embedder and a scripted model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from apps.common import Limits
from apps.pdf_chat import PdfChat, Settings
from rag.answer import Source

from conftest import scripted_llm

QUESTION = "How many days of vacation do staff have?"


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def handbook(folder: Path, name: str = "handbook.txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"{name}: staff have 25 days of paid vacation each year.")
    return path


@pytest.fixture
def app(tmp_path, toy_embedder):
    return PdfChat(tmp_path / "home", llm=scripted_llm("25 days."), embedder=toy_embedder,
                   limits=Limits(collections=12))


def test_typed_names_create_nothing_and_open_nothing(app):
    before = open_files()
    source = Source(1, "handbook.txt", 1, "staff", 0.5, 0.5)
    for n in range(400):
        name = f"typed-{n}" if n % 2 else f"not a name {n}!"
        assert app.documents(name) == []
        assert list(app.ask(QUESTION, [], Settings(name)))[-1].messages[0]["content"].endswith("upload a PDF first.")
        assert app.remove(name, "handbook.txt") == f"There is no collection {name!r}."
        assert app.reindex(name, "handbook.txt") == f"There is no collection {name!r}."
        assert "no longer in the collection" in app.page_view(name, source)
    assert not (app.data_dir / "collections").exists() and app.collections() == []
    assert open_files() <= before


def test_uploads_create_at_most_the_limit_of_collections(app, tmp_path):
    for n in range(12):
        assert "added" in app.upload(f"c{n}", [handbook(tmp_path / "in")])
    report = app.upload("one-more", [handbook(tmp_path / "in")])
    assert report == ("**Nothing added:** there are already 12 collections, the most this app creates: upload into "
                      "an existing one, or ask the operator to remove one.")
    assert "one-more" not in app.collections() and not (app.data_dir / "collections" / "one-more").exists()
    assert "invalid collection name '../etc'" in app.upload("../etc", [handbook(tmp_path / "in")])
    assert "already in this collection" in app.upload("c0", [handbook(tmp_path / "in")])  # existing ones still take


def test_the_least_recently_used_collections_are_closed_not_those_in_use(app, tmp_path):
    app.open_collections.max_open = 2
    app.upload("warm-up", [handbook(tmp_path / "in")])  # what the first upload and question load stays loaded
    list(app.ask(QUESTION, [], Settings("warm-up")))
    app.open_collections.close()
    baseline = open_files()
    app.upload("c0", [handbook(tmp_path / "in")])
    per_collection = open_files() - baseline
    assert per_collection > 0
    answer = app.ask(QUESTION, [], Settings("c0"))
    first = next(answer)  # a question in flight on c0 while others are opened and closed
    for n in range(1, 11):  # 11 collections with the warm-up: the limit is 12
        app.upload(f"c{n}", [handbook(tmp_path / "in")])
        assert [row[0] for row in app.documents(f"c{n}")] == ["handbook.txt"]
    assert open_files() - baseline <= 2 * per_collection  # c0 (in use) and the last used; not 11
    assert list(app.open_collections._open) == ["c0", "c10"]
    replies = [first, *answer]
    assert "25 days" in replies[-1].messages[0]["content"] and replies[-1].sources  # c0 stayed open
    assert [row[0] for row in app.documents("c3")] == ["handbook.txt"]  # a closed one opens again
    assert list(app.open_collections._open) == ["c10", "c3"]  # c0, released, was the least recently used


def test_uploads_temp_copies_are_deleted_whatever_happens(app, tmp_path):
    temp = tmp_path / "gradio"
    good, unsupported = handbook(temp / "a"), handbook(temp / "b", "notes.docx")
    kept = handbook(tmp_path / "mine")
    assert "added" in app.upload("docs", [good, unsupported], delete_inputs=True)
    assert not good.exists() and not unsupported.exists()
    assert [row[0] for row in app.documents("docs")] == ["handbook.txt"]  # the collection's own copy serves
    assert "no documents" not in list(app.ask(QUESTION, [], Settings("docs")))[-1].messages[0]["content"]
    too_many = [handbook(temp / str(n), f"f{n}.txt") for n in range(app.limits.files_per_upload + 1)]
    assert "Too many files" in app.upload("docs", too_many, delete_inputs=True)
    assert not any(path.exists() for path in too_many)
    refused = handbook(temp / "c")
    assert "invalid collection name" in app.upload("no good", [refused], delete_inputs=True)
    assert not refused.exists()
    assert "already in this collection" in app.upload("docs", [kept])
    assert kept.exists()  # not a temp copy: the caller's file stays
