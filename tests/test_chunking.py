"""Chunks stay under the embedder's token budget, overlap, cover the text, never span two pages, and say where
they are: the page, the item's own locator, or the lines they span."""

import pytest

from rag.chunking import CHUNK_TOKENS, chunk_pages, line_locator, make_splitter
from rag.loaders import Page

RIVERS = ["Nile", "Amazon", "Yangtze", "Danube", "Rhine", "Volga", "Ganges", "Mekong", "Niger", "Congo"]
SENTENCES = [f"The {r} carries water {i} km from the mountains to the sea, shaping valley {i}, feeding farm {i}."
             for i, r in enumerate(RIVERS * 12)]  # no two sentences alike, so every offset is unambiguous


@pytest.fixture(scope="module")
def pages():
    # One long paragraph: the splitter falls back to words, where overlap applies (between whole
    # paragraphs it does not: LangChain overlaps only split units smaller than the overlap).
    return [Page(1, " ".join(SENTENCES)), Page(2, "   \n  "), Page(3, "A short last page about deltas."),
            Page(4, "\n\n".join(" ".join(SENTENCES[i: i + 7]) for i in range(0, 120, 7))),
            Page(5, "x" * 5000)]  # one unbreakable run of characters


@pytest.fixture(scope="module")
def chunks(embedder, pages):
    return chunk_pages(pages, "doc-hash", "rivers.pdf", make_splitter(embedder.count_tokens))


def test_every_chunk_fits_the_embedding_window(embedder, chunks):
    assert all(embedder.count_tokens(c.text) <= CHUNK_TOKENS for c in chunks)


def test_offsets_point_at_the_chunk_in_its_own_page(pages, chunks):
    by_number = {p.number: p.text for p in pages}
    for chunk in chunks:
        assert by_number[chunk.page][chunk.start: chunk.end] == chunk.text
        assert (chunk.doc_id, chunk.file_name, chunk.locator) == ("doc-hash", "rivers.pdf", f"p. {chunk.page}")


def test_chunks_cover_the_text_and_overlap(pages, chunks):
    first_page = [c for c in chunks if c.page == 1]
    assert len(first_page) > 5
    covered = set()
    for chunk in first_page:
        covered.update(range(chunk.start, chunk.end))
    text = pages[0].text
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())
    assert any(b.start < a.end for a, b in zip(first_page, first_page[1:], strict=False))


def test_blank_pages_give_no_chunks_and_pages_are_kept_apart(chunks):
    assert {c.page for c in chunks} == {1, 3, 4, 5}
    assert [c.text for c in chunks if c.page == 3] == ["A short last page about deltas."]


def test_overlap_must_be_smaller_than_the_chunk(embedder):
    with pytest.raises(ValueError, match="overlap"):
        make_splitter(embedder.count_tokens, chunk_tokens=50, overlap_tokens=50)


def test_chunks_of_a_text_cited_by_lines_name_the_lines_they_span(embedder):
    # Lines of very different lengths, some blank, one longer than a chunk: chunks start and end mid-line too.
    lines = [f"{n}: " + " ".join(SENTENCES[: n % 9]) for n in range(1, 200)] + ["", "y " * 400, "last"]
    text = "\n".join(lines)
    chunks = chunk_pages([Page(1, text, by_lines=True)], "h", "notes.py", make_splitter(embedder.count_tokens))
    assert len(chunks) > 10 and chunks[0].locator.startswith("L1-") and chunks[-1].locator == "L202"
    for chunk in chunks:  # against counting the newlines before the first and last character
        first, last = text.count("\n", 0, chunk.start) + 1, text.count("\n", 0, chunk.end - 1) + 1
        assert chunk.locator == line_locator(first, last) and chunk.page == 1
    assert line_locator(7, 7) == "L7" and line_locator(7, 9) == "L7-9"


def test_a_page_with_a_locator_gives_it_to_every_chunk(embedder, pages):
    chunks = chunk_pages([Page(1, pages[0].text, "<m1@example.org>")], "h", "Re: rivers",
                         make_splitter(embedder.count_tokens))
    assert len(chunks) > 5 and {c.locator for c in chunks} == {"<m1@example.org>"}
