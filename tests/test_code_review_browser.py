"""The code-review app end to end: `llmkit code-review` on loopback with the embedded SmolLM2 explaining, driven by a
real headless Chromium (Debian's): the page opens on the example's findings, each with its tool, rule and an
explanation; a local project's failing test gives suspicious lines highlighted and a verified patch.

Saves screenshots to test-artifacts/ (or $LLMKIT_TEST_ARTIFACTS): code-review.png (1440 px wide, the page as it
opens; the README's docs/code-review.png is a copy) and code-review-debug.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect

from conftest import running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium, and the app on the embedded SmolLM2

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("LLMKIT_TEST_ARTIFACTS", ROOT / "test-artifacts"))
DESKTOP = {"width": 1440, "height": 1000}


@pytest.fixture(scope="module")
def projects(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("projects")
    shutil.copytree(ROOT / "bench" / "bugs" / "average", folder / "average")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory, projects):
    with running_app(["code-review", "--root", str(projects)], tmp_path_factory.mktemp("cr") / "server.log") as url:
        yield url


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport=DESKTOP)
    page.goto(server)
    yield page
    page.close()


def test_the_page_opens_on_the_examples_findings_explained(page):
    rows = page.locator("#findings [role=row]")  # the header's, then one per finding
    expect(rows.nth(1)).to_contain_text("B602", timeout=120_000)
    expect(rows).to_have_count(6)  # B602, F821 (`value`), F401, B006 (values=[]), B404
    for n, (tool, rule) in enumerate((("bandit", "B602"), ("ruff", "F821"), ("ruff", "F401"), ("ruff", "B006"),
                                      ("bandit", "B404")), 1):
        expect(rows.nth(n)).to_contain_text(tool)
        expect(rows.nth(n)).to_contain_text(rule)
    expect(rows.nth(1)).to_contain_text("sanitize")  # the explanation, from bandit's documentation of B602
    expect(rows.nth(2)).to_contain_text("NameError")  # from ruff's documentation of F821
    expect(page.locator("#status")).to_contain_text("Explanations by")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "code-review.png", full_page=True)


def test_a_path_outside_the_roots_is_refused(page):
    page.get_by_role("tab", name="Local folder").click()
    page.fill("#path textarea", "/etc")
    page.click("#review-path")
    expect(page.locator("#status")).to_contain_text("outside the folders this page may read", timeout=30_000)


def test_the_debug_tab_shows_suspicious_lines_and_a_verified_patch(page, projects):
    page.get_by_role("tab", name="Debug").click()
    page.fill("#project textarea", str(projects / "average"))
    page.click("#debug")
    expect(page.locator("#patches")).to_contain_text("sum(values) / len(values)", timeout=180_000)
    expect(page.locator("#suspicious tbody tr").first).to_contain_text("module.py")
    buggy = page.locator("#code-view .cr-suspicious", has_text="return sum(values) * len(values)")
    expect(buggy).to_have_count(1)  # the buggy line, highlighted
    expect(page.locator("#status")).to_contain_text("1 failing test")
    page.screenshot(path=ARTIFACTS / "code-review-debug.png", full_page=True)
