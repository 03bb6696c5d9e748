"""`llmkit index|search|ask` as a user runs them: real processes, a real data dir, the committed PDFs."""

import json
import shutil

import pytest
from test_cli import llmkit

from conftest import DEMO_PDFS

pytestmark = pytest.mark.slow  # every test starts the `llmkit` command, most embed with the real model

GUIDE = "nist-sp800-90b-entropy-suite-user-guide.pdf"
SRX = "nist-srx-proxy-protocol-3.0.pdf"


def test_index_add_list_search_remove(tmp_path):
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.7\n1 0 obj <<")
    home = ["--data-dir", str(tmp_path / "home")]
    added = llmkit("index", "add", "docs", str(DEMO_PDFS / GUIDE), str(bad), *home)
    assert added.returncode == 1, added.stderr  # one file failed; the other is indexed
    assert f"{GUIDE}: 9/9 pages with text" in added.stdout
    assert "broken.pdf: ERROR" in added.stdout and "damaged or truncated" in added.stdout
    assert "embedding" not in added.stderr  # progress bars only on a terminal

    again = llmkit("index", "add", "docs", str(DEMO_PDFS / GUIDE), *home)
    assert again.returncode == 0 and "already in the collection" in again.stdout

    assert llmkit("index", "list", *home).stdout.split() == ["docs"]
    listing = llmkit("index", "list", "docs", *home).stdout
    assert listing.startswith(f"{GUIDE}\t9 pages,") and len(listing.splitlines()) == 1

    found = llmkit("search", "docs", "Which file contains the Markov estimate method?", "--k", "3", "--json", *home)
    assert found.returncode == 0, found.stderr
    sources = json.loads(found.stdout)["sources"]
    assert len(sources) == 3 and sources[0]["file"] == GUIDE and sources[0]["page"] == 3
    assert "markov.py" in sources[0]["text"] and sources[0]["score"] > 0

    doc_id = listing.split("\t")[2]  # the start of the id, as the listing shows it
    assert llmkit("index", "remove", "docs", doc_id, *home).returncode == 0
    assert llmkit("index", "list", "docs", *home).stdout == ""
    gone = llmkit("search", "docs", "Markov estimate", "--json", *home)
    assert json.loads(gone.stdout)["sources"] == []
    missing = llmkit("index", "remove", "docs", GUIDE, *home)
    assert missing.returncode == 1 and "no document" in missing.stderr


def test_ask_streams_then_lists_sources(demo_data_dir, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(demo_data_dir, home)
    asked = llmkit("ask", "demo", "What port does the SRx server listen on?", "--k", "2",
                   "--max-new-tokens", "24", "--data-dir", str(home))
    assert asked.returncode == 0, asked.stderr
    answer_text, sources = asked.stdout.split("\nSources:\n")
    assert answer_text.startswith("\u201c") and f"[{SRX} p. " in answer_text  # grounded: a cited quote
    assert all(f"] {SRX} p. " in line for line in sources.splitlines())

    as_json = llmkit("ask", "demo", "What port does the SRx server listen on?", "--k", "2",
                     "--max-new-tokens", "24", "--json", "--style", "free", "--data-dir", str(home))
    result = json.loads(as_json.stdout)
    assert result["answer"] and [s["file"] for s in result["sources"]] == [SRX, SRX]
    assert all(s["page"] >= 1 and s["text"] for s in result["sources"])

    unrelated = llmkit("ask", "demo", "What is a good recipe for chocolate cake?", "--json", "--data-dir", str(home))
    assert json.loads(unrelated.stdout)["sources"] == []


def test_unknown_collection_is_one_clear_error(tmp_path):
    result = llmkit("search", "nope", "anything", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "there is no collection 'nope'" in result.stderr
