"""Contextual chunks: the document's identity and the page's headings are indexed, the chunk's text alone is cited."""

from pathlib import Path

import numpy as np
import pytest

from rag.answer import relevant_sources
from rag.collection import Collection
from rag.context import CONTEXT_CHARS, chunk_context, document_identity, indexed_text, page_headings, running_lines
from rag.loaders import Page, load_file
from rag.retriever import Retriever

FILINGS = Path(__file__).parent / "data" / "filings"

COVER = """UNITED STATES
SECURITIES AND EXCHANGE COMMISSION
FORM 10-K
ANNUAL REPORT PURSUANT TO SECTION 13 OR 15(d) OF THE SECURITIES EXCHANGE ACT OF 1934
For the fiscal year ended September 24, 2022
Commission File Number: 001-36743
Example Widgets Inc.
(Exact name of Registrant as specified in its charter)
California 94-2404110
"""
STATEMENT = ("Example Widgets Inc. | 2022 Form 10-K | {n}\nCONSOLIDATED STATEMENTS OF CASH FLOWS\n(In millions)\n"
             + "".join(f"Line item {n} of the statement 1,{n:03d} 2,{n:03d} 3,{n:03d}\n" for n in range(30))
             + "Proceeds from sales of marketable securities 37,446 29,917 50,473\n")
PROSE = "Example Widgets Inc. | 2022 Form 10-K | {n}\nThe Company designs widgets and sells them worldwide.\n"


def report_pages() -> list[Page]:
    return [Page(1, COVER), *(Page(n, PROSE.format(n=n)) for n in range(2, 6)), Page(6, STATEMENT.format(n=6))]


def test_a_filing_cover_gives_company_form_and_period():
    identity = document_identity(report_pages(), "widgets_annual-2022.pdf")
    assert identity == ("widgets annual 2022 | Example Widgets Inc. | Form 10-K | "
                        "fiscal year ended September 24, 2022")


@pytest.mark.parametrize("name, expected", [
    ("MCDONALDS_2023Q2_EARNINGS.pdf", ["MCDONALDS 2023 Q2 EARNINGS second quarter", "quarter ended June 30, 2023",
                                       "McDONALD'S REPORTS SECOND QUARTER 2023 RESULTS"]),
    ("EBAY_2023Q2_EARNINGS.pdf", ["EBAY 2023 Q2 EARNINGS second quarter", "quarter ended June 30, 2023",
                                  "eBay Inc. Reports Better Than Expected Second Quarter 2023"]),
])
def test_identity_of_real_earnings_releases(name, expected):
    pages, report = load_file(FILINGS / name)
    assert report.ok
    assert document_identity(pages, name).split(" | ") == expected


def test_a_page_heading_is_found_and_running_headers_are_not():
    pages = report_pages()
    running = running_lines(pages)
    assert "Example Widgets Inc. | 2022 Form 10-K | 3" not in running  # the page number differs on each page
    assert page_headings(pages[5], running) == ["CONSOLIDATED STATEMENTS OF CASH FLOWS"]
    assert page_headings(pages[2], running) == []  # prose under a running line has no heading
    repeated = [Page(n, "Table of Contents\nItem 7\nRevenue grew.\n") for n in range(1, 6)]
    assert page_headings(repeated[0], running_lines(repeated)) == []


def test_context_is_bounded_whatever_the_document_says():
    huge = [Page(1, "A" * 50 + "\n(exact name of registrant\n" + "FORM 10-K " * 1000)]
    context = chunk_context(document_identity(huge, "x" * 500 + ".pdf"), ["B" * 80, "C" * 80])
    assert len(context) <= CONTEXT_CHARS
    assert indexed_text("", "text") == "text" and indexed_text("ctx", "text") == "ctx\ntext"


def write_report(tmp_path: Path) -> Path:
    """The report above as a text file, pages split by form feeds (rag.loaders reads .txt that way)."""
    path = tmp_path / "widgets_annual-2022.txt"
    path.write_text("\f".join(page.text for page in report_pages()))
    return path


def test_context_is_indexed_but_only_the_text_is_cited(tmp_path, toy_embedder):
    with Collection.open("reports", data_dir=tmp_path, embedder=toy_embedder) as collection:
        [report] = collection.add_files([write_report(tmp_path)])
        assert report.ok, report.error
        *_, statement = [c for c in collection.store.all_chunks() if c.page == 6]  # the page's last chunk
        assert statement.context.startswith("widgets annual 2022 | Example Widgets Inc. | Form 10-K")
        assert statement.context.endswith("CONSOLIDATED STATEMENTS OF CASH FLOWS")
        assert "marketable" in statement.text and "CASH FLOWS" not in statement.text  # the title is not cited
        # The dense index holds the indexed text's vector, not the bare text's.
        _, ids = collection.index.search(toy_embedder.embed([indexed_text(statement.context, statement.text)]), 1)
        assert ids[0][0] == statement.id
        # The title is in the page's first chunk only; BM25 finds the row under it by the context.
        hits = Retriever(collection).search("cash flows statement: marketable securities", k=1, mode="bm25")
        assert hits[0].chunk.id == statement.id and hits[0].chunk.text == statement.text
        collection.set_contextual(False)
        collection.replace(write_report(tmp_path))
        *_, plain = [c for c in collection.store.all_chunks() if c.page == 6]
        assert plain.context == "" and plain.text == statement.text
        _, ids = collection.index.search(toy_embedder.embed([plain.text]), 1)
        assert ids[0][0] == plain.id


def test_one_chunk_per_page_unless_asked_for_all(tmp_path, toy_embedder):
    text = "\n\n".join(f"Paragraph {n} about river deltas and sediment." for n in range(60))
    path = tmp_path / "rivers.txt"
    path.write_text(text + "\f" + "A second page about river deltas.")
    with Collection.open("rivers", data_dir=tmp_path, embedder=toy_embedder) as collection:
        collection.set_chunk_tokens(64)
        collection.add_files([path])
        retriever = Retriever(collection)
        every = retriever.search("river deltas sediment", k=5, one_per_page=False)
        assert len({h.chunk.page for h in every}) == 1 and len(every) == 5
        spread = retriever.search("river deltas sediment", k=5)
        assert [h.chunk.page for h in spread] == [1, 2]
        assert spread[0].chunk.id == every[0].chunk.id  # the page's best chunk stands for it
        assert np.isclose(spread[0].score, every[0].score)


def test_a_chunk_only_bm25_found_is_compared_as_the_index_compares_it(tmp_path, toy_embedder):
    """Its cosine with the question is that of its indexed text (context and text), as a dense hit's is."""
    with Collection.open("reports", data_dir=tmp_path, embedder=toy_embedder) as collection:
        collection.add_files([write_report(tmp_path)])
        retriever = Retriever(collection)
        question = "cash flows statement: marketable securities"
        [lexical] = relevant_sources(retriever, question, 1, "bm25", None, min_similarity=-1.0)
        dense = {h.chunk.text: h.dense_score for h in retriever.search(question, k=20, mode="dense",
                                                                        one_per_page=False)}
        assert lexical.similarity == pytest.approx(dense[lexical.text])
