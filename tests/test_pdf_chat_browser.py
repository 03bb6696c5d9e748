"""The PDF chat app end to end: `llmkit pdf-chat` on loopback, driven by a real headless Chromium (Debian's).

One server for the module (the tests share its data dir, in file order). Saves screenshots to test-artifacts/ (or
$LLMKIT_TEST_ARTIFACTS): pdf-chat.png (1440 px wide) and pdf-chat-phone.png (390 px) are the README's (docs/).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from apps.common import LIMITS

from conftest import DEMO_PDFS, running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium, and the app on the real models

LLMKIT = Path(sys.executable).parent / "llmkit"
ARTIFACTS = Path(os.environ.get("LLMKIT_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))
SRX = "nist-srx-proxy-protocol-3.0.pdf"
GUIDE = "nist-sp800-90b-entropy-suite-user-guide.pdf"  # the sample, indexed at start
QUESTION = "What does the Keep Window field of the goodbye message specify?"
ANSWER_PAGE = "30"
DESKTOP, PHONE = {"width": 1440, "height": 900}, {"width": 390, "height": 844}
PASSAGE = "#page-view .page-passage, #page-view mark"  # on the page image, else (not found there) in the text
LONG_ANSWER = "Explain in detail every step to run the entropy assessment tools, with all their options."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_app(["pdf-chat", "--data-dir", str(tmp_path_factory.mktemp("home"))],
                     tmp_path_factory.mktemp("pdf-chat") / "server.log") as url:
        yield url


def open_page(browser, server, viewport: dict):
    page = browser.new_page(viewport=viewport)
    page.goto(server)
    expect(page.locator("#question textarea")).to_be_visible(timeout=60_000)
    return page


@pytest.fixture
def page(browser, server):
    page = open_page(browser, server, DESKTOP)
    yield page
    page.close()


def documents(page, column: int = 0) -> list[str]:
    return page.locator(f"#documents [data-col='{column}'][role=gridcell]").all_inner_texts()


def in_viewport(page, selector: str, seconds: float = 5) -> bool:
    """Whether the element comes to lie wholly inside the window within `seconds` (scrolling is animated)."""
    deadline = time.monotonic() + seconds
    while True:
        inside = page.evaluate("""(selector) => {
            const box = document.querySelector(selector)?.getBoundingClientRect();
            return !!box && box.height > 0 && box.top >= 0 && box.bottom <= window.innerHeight;
        }""", selector)
        if inside or time.monotonic() > deadline:
            return inside
        time.sleep(0.1)


def wide(page, selector: str) -> list[str]:
    """The elements inside `selector` that scroll sideways (content wider than their box)."""
    return page.evaluate("""(selector) => [...document.querySelectorAll(selector + ' *')]
        .filter(e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX) && e.scrollWidth > e.clientWidth + 1)
        .map(e => `${e.className}: ${e.scrollWidth} > ${e.clientWidth}`)""", selector)


def test_upload_ask_and_open_the_cited_page(page):
    expect(page.locator("#documents")).to_contain_text("nist-sp800-90b")  # the sample, indexed at start
    assert len(documents(page)) == 1
    page.set_input_files("#upload input[type=file]", [str(DEMO_PDFS / SRX)])
    expect(page.locator("#upload-report")).to_contain_text(f"{SRX}: added, 34 of 34 pages with text", timeout=180_000)
    expect(page.locator("#documents")).to_contain_text(SRX)

    page.fill("#question textarea", QUESTION)
    asked = time.monotonic()
    page.click("#ask")
    answer = page.locator("#chat [data-testid=bot]").last
    expect(answer).not_to_be_empty(timeout=120_000)
    first_text = time.monotonic() - asked
    expect(page.locator("#answer-status")).to_contain_text("Answered in", timeout=300_000)
    assert answer.inner_text().startswith("\u201c") and f"[{SRX} p. {ANSWER_PAGE}]" in answer.inner_text()  # quoted
    expect(page.locator("#sources [data-testid=cell-0-1]")).to_contain_text(SRX, timeout=300_000)
    pages = page.locator("#sources [data-col='2'][role=gridcell]").all_inner_texts()
    assert ANSWER_PAGE in pages, pages
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "pdf-chat-first-text-seconds.txt").write_text(f"{first_text:.2f}\n")

    relevance = page.locator("#sources [data-col='3'][role=gridcell]").all_inner_texts()
    assert all(len(dots) == 5 and set(dots) <= {"●", "○"} for dots in relevance), relevance

    row = pages.index(ANSWER_PAGE)
    page.click(f"#sources [data-testid=cell-{row}-1]")
    view = page.locator("#page-view")
    expect(view).to_contain_text(f"{SRX}, page {ANSWER_PAGE}", timeout=30_000)
    image = view.locator(".page-image img")  # the page itself, the passage highlighted on it
    expect(image).to_be_visible()
    assert page.evaluate("() => document.querySelector('#page-view .page-image img').naturalWidth") == 1000
    expect(view.locator("mark")).to_be_hidden()  # the text as indexed, folded under "Show text"
    expect(view.locator("mark")).to_contain_text("Keep Window")
    assert in_viewport(page, PASSAGE)
    page.screenshot(path=ARTIFACTS / "pdf-chat.png", full_page=True)
    view.get_by_text("Show text").click()
    expect(view.locator("mark")).to_be_visible()

    page.set_viewport_size(PHONE)  # the page view is below the chat and its sources now: the click scrolls to it
    page.evaluate("window.scrollTo(0, 0)")
    other = next(n for n, number in enumerate(pages) if number != ANSWER_PAGE)
    page.click(f"#sources [data-testid=cell-{other}-1]")
    expect(view).to_contain_text(f", page {pages[other]}", timeout=30_000)
    assert in_viewport(page, PASSAGE)
    page.click(f"#sources [data-testid=cell-{row}-1]")
    expect(view.locator("mark")).to_contain_text("Keep Window", timeout=30_000)
    assert in_viewport(page, PASSAGE)
    page.screenshot(path=ARTIFACTS / "pdf-chat-phone.png", full_page=True)
    page.set_viewport_size(DESKTOP)

    page.fill("#question textarea", "And what is it measured in?")  # a follow-up: the chat's memory goes back
    page.click("#ask")
    status = page.locator("#answer-status")
    expect(status).to_contain_text("Answering", timeout=60_000)
    expect(status).to_contain_text("Answered in", timeout=300_000)
    answers = page.locator("#chat [data-testid=bot]")
    expect(answers).to_have_count(2)
    assert answers.last.inner_text().strip()


def test_bad_uploads_show_errors_and_leave_the_collection(page, bad_files):
    expect(page.locator("#documents")).to_contain_text("nist-sp800-90b")
    before = documents(page)
    page.set_input_files("#upload input[type=file]", [str(path) for path in bad_files])
    report = page.locator("#upload-report")
    expect(report).to_contain_text("photo.pdf: error: not a PDF: the file is a PNG image", timeout=120_000)
    for expected in ("corrupt.pdf: error: cannot read the PDF", "locked.pdf: error: encrypted",
                     "empty.pdf: error: the file is empty"):
        expect(report).to_contain_text(expected)
    page.screenshot(path=ARTIFACTS / "pdf-chat-bad-uploads.png", full_page=True)
    assert documents(page) == before
    page.click("#documents [data-testid=cell-0-0]")  # choosing a document for Delete / Re-index
    expect(page.locator("#selected-document textarea")).to_have_value(before[0])


def test_on_a_phone_the_question_box_is_on_the_first_screen(browser, server):
    page = open_page(browser, server, PHONE)
    box = page.locator("#question textarea").bounding_box()
    assert box["y"] + box["height"] <= PHONE["height"], box
    expect(page.locator("#documents")).to_contain_text(GUIDE)
    assert wide(page, "#documents") == []  # file, pages and passages fit a phone's width
    headers = page.locator("#documents [role=columnheader]").all_inner_texts()
    assert [h.strip() for h in headers] == ["file", "pages", "passages"], headers  # no OCR column: none needs it
    page.close()


def test_questions_are_checked_typing_is_kept_and_stop_halts_the_answer(page):
    question, status, ask = page.locator("#question textarea"), page.locator("#answer-status"), page.locator("#ask")
    page.click("#ask")  # an empty question: a line says so, the chat stays empty
    expect(status).to_have_text("Type a question first.")
    pasted = LIMITS.question_chars + 1000
    page.fill("#question textarea", "x" * pasted)  # a paste over the limit: counted, refused whole, not cut
    expect(page.locator("#question-count")).to_contain_text(f"{pasted} / {LIMITS.question_chars}: too long")
    page.click("#ask")
    expect(status).to_contain_text(f"The question is {pasted} characters long; the limit is {LIMITS.question_chars}")
    assert len(question.input_value()) == pasted
    expect(page.locator("#chat [data-testid=user]")).to_have_count(0)

    page.click("#settings")  # answers written by the model stream for a while: something to stop
    page.get_by_label("Written by the model (for large models)").check()
    question.fill(LONG_ANSWER)
    question.press("Enter")
    expect(question).to_have_value("")  # cleared once, when taken
    expect(ask).to_be_disabled()
    answer = page.locator("#chat [data-testid=bot]").last
    expect(answer).not_to_be_empty(timeout=120_000)
    question.type("a draft typed meanwhile", delay=20)
    question.press("Enter")  # while the answer streams: said, not dropped, and the draft stays
    expect(status).to_contain_text("Still answering the last question")
    time.sleep(1)  # more of the answer streams in
    expect(question).to_have_value("a draft typed meanwhile")
    expect(page.locator("#stop")).to_be_enabled()
    page.click("#stop")
    expect(status).to_contain_text("Stopped after")
    expect(answer).to_contain_text("(stopped: the answer above is incomplete)")
    time.sleep(1)  # the stream's own last update may add the words it had when it saw Stop
    stopped_text = answer.inner_text()
    time.sleep(3)
    assert answer.inner_text() == stopped_text and "(stopped: the answer above is incomplete)" in stopped_text
    expect(ask).to_be_enabled()
    expect(question).to_have_value("a draft typed meanwhile")
    expect(page.locator("#chat [data-testid=user]")).to_have_count(1)


def test_collections_passage_size_reindex_and_confirmed_deletes(page):
    report = page.locator("#upload-report")
    page.click("#new-collection")
    page.fill("#new-collection-name textarea", "my docs")
    page.click("#create-collection")
    expect(report).to_contain_text("'my docs' cannot be a collection's name")
    page.fill("#new-collection-name textarea", "scratch")
    page.click("#create-collection")
    expect(report).to_contain_text("Created the collection 'scratch'")
    expect(page.locator("#collection input")).to_have_value("scratch")
    expect(page.locator("#new-collection-form")).to_be_hidden()

    page.set_input_files("#upload input[type=file]", [str(DEMO_PDFS / GUIDE)])
    expect(report).to_contain_text(f"{GUIDE}: added, 9 of 9 pages with text", timeout=180_000)
    expect(page.locator("#documents")).to_contain_text(GUIDE)
    passages = int(documents(page, 2)[0])
    page.set_input_files("#upload input[type=file]", [str(DEMO_PDFS / GUIDE)])
    expect(report).to_contain_text("already in this collection (same content), not added again", timeout=60_000)

    page.click("#settings button")  # the accordion's header
    box = page.locator("#passage-size input")
    box.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("64")  # keys, as a person types: Gradio's number box missed a value set at once (fill)
    page.keyboard.press("Tab")
    expect(box).to_have_value("64")
    page.click("#set-passage-size")
    expect(page.locator("#passage-size-status")).to_contain_text("Passages of 'scratch' are now up to 64 tokens")
    page.click("#documents [data-testid=cell-0-0]")
    expect(page.locator("#selected-document textarea")).to_have_value(GUIDE)
    page.click("#reindex")
    expect(report).to_contain_text(f"Re-indexed {GUIDE}: read again, 9 pages", timeout=180_000)
    expect(page.locator("#documents [data-col='2'][role=gridcell]").first).not_to_have_text(str(passages))
    assert int(documents(page, 2)[0]) > passages
    assert f"{documents(page, 2)[0]} passages of up to 64 tokens" in report.inner_text()

    page.click("#delete-document")
    expect(page.locator("#confirm-document")).to_contain_text(f"Delete {GUIDE} from scratch?")
    page.click("#cancel-delete-document")
    expect(page.locator("#confirm-document")).to_be_hidden()
    assert documents(page) == [GUIDE]
    page.click("#delete-document")
    page.click("#confirm-delete-document")
    expect(report).to_contain_text(f"Removed {GUIDE}.")
    expect(page.locator("#selected-document textarea")).to_have_value("")
    expect(page.locator("#documents")).not_to_contain_text(GUIDE)

    page.click("#delete-collection")
    expect(page.locator("#confirm-collection")).to_contain_text("Delete the collection scratch and its 0 documents?")
    page.click("#confirm-delete-collection")
    expect(report).to_contain_text("Deleted the collection 'scratch'.")
    expect(page.locator("#collection input")).not_to_have_value("scratch")
    page.click("#collection input")
    expect(page.locator("[data-testid=dropdown-option]").first).to_be_visible()
    options = [option.get_attribute("aria-label") for option in page.locator("[data-testid=dropdown-option]").all()]
    assert "scratch" not in options and "sample" in options, options
