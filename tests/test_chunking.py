"""Chunks stay under the embedder's token budget, overlap, cover the text, and never span two pages."""

import pytest

from rag.chunking import CHUNK_TOKENS, chunk_pages, make_splitter
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
        assert (chunk.doc_id, chunk.file_name) == ("doc-hash", "rivers.pdf")


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
