"""The PDF chat app end to end: `llmkit pdf-chat` on loopback, driven by a real headless Chromium (Debian's).

Saves screenshots to test-artifacts/ (or $LLMKIT_TEST_ARTIFACTS); the README's screenshot is one of them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from conftest import DEMO_PDFS

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium, and the app on the real models

LLMKIT = Path(sys.executable).parent / "llmkit"
ARTIFACTS = Path(os.environ.get("LLMKIT_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))
SRX = "nist-srx-proxy-protocol-3.0.pdf"
QUESTION = "What does the Keep Window field of the goodbye message specify?"
ANSWER_PAGE = "30"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("pdf-chat") / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen([str(LLMKIT), "pdf-chat", "--port", str(port), "--data-dir",
                                    str(tmp_path_factory.mktemp("home"))], stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while "Running on local URL" not in log.read_text():
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail("the browser tests need Debian's chromium: sudo apt-get install chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(server)
    expect(page.locator("#question textarea")).to_be_visible(timeout=60_000)
    yield page
    page.close()


def documents(page) -> list[str]:
    return page.locator("#documents [data-col='0'][role=gridcell]").all_inner_texts()


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
    assert answer.inner_text().strip()
    expect(page.locator("#sources [data-testid=cell-0-1]")).to_contain_text(SRX, timeout=300_000)
    pages = page.locator("#sources [data-col='2'][role=gridcell]").all_inner_texts()
    assert ANSWER_PAGE in pages, pages
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "pdf-chat-first-text-seconds.txt").write_text(f"{first_text:.2f}\n")

    row = pages.index(ANSWER_PAGE)
    page.click(f"#sources [data-testid=cell-{row}-1]")
    view = page.locator("#page-view")
    expect(view).to_contain_text(f"{SRX}, page {ANSWER_PAGE}", timeout=30_000)
    expect(view.locator("mark")).to_contain_text("Keep Window")
    page.screenshot(path=ARTIFACTS / "pdf-chat.png", full_page=True)

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
