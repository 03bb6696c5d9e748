"""The attention explorer end to end: `llmkit explore` on loopback with the embedded SmolLM2, driven by a real headless
Chromium (Debian's): the page opens on the classic example's map, a typed text gets its tokens and its map, the
chat template shows when asked, the sampling and mask tabs answer, and on a phone (390 px) nothing scrolls sideways.

Saves screenshots to test-artifacts/ (or $LLMKIT_TEST_ARTIFACTS): explorer.png (1440 px wide, the page as it opens;
the README's docs/explorer.png is a copy), explorer-masks.png, explorer-next-token.png and explorer-phone.png.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from conftest import running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium, and the app on the embedded SmolLM2

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("LLMKIT_TEST_ARTIFACTS", ROOT / "test-artifacts"))
DESKTOP = {"width": 1440, "height": 900}
CAT = "The cat sat on the mat because it was warm."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_app(["explore"], tmp_path_factory.mktemp("explore") / "server.log") as url:
        yield url


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport=DESKTOP)
    page.goto(server)
    expect(page.locator("#attention-map .js-plotly-plot")).to_be_visible(timeout=120_000)
    yield page
    page.close()


def map_labels(page) -> list[str]:
    """The attention map's query labels, as plotted."""
    return page.evaluate("() => document.querySelector('#attention-map .js-plotly-plot').data[0].y")


def test_the_page_opens_on_the_classic_example_then_shows_a_typed_text(page):
    expect(page.locator("#strongest tbody tr").first).to_contain_text("animal", timeout=60_000)  # "it" -> "animal"
    expect(page.locator("#tokens .explorer-token")).to_have_count(13)
    expect(page.locator("#attention-map")).to_contain_text("layer 13, head 8")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "explorer.png", full_page=True)

    page.fill("#text textarea", CAT)
    page.click("#show")
    expect(page.locator("#tokens")).to_contain_text("11 tokens", timeout=60_000)
    expect(page.locator("#tokens .explorer-token").nth(5)).to_have_text("␣mat")
    assert map_labels(page)[7] == "7: ␣it"
    expect(page.locator("#query input")).to_have_value("7: ␣it")

    page.get_by_label("as a chat message").check()
    expect(page.locator("#prompt textarea")).to_have_value(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        f"<|im_start|>user\n{CAT}<|im_end|>\n<|im_start|>assistant\n", timeout=60_000)
    expect(page.locator("#tokens .explorer-special").first).to_have_text("<|im_start|>")
    assert map_labels(page)[0] == "0: <|im_start|>"


def test_next_token_and_masks_tabs(page):
    page.get_by_role("tab", name="Next token").click()
    expect(page.locator("#sampling-status")).to_contain_text(re.compile(r"\d+ of 49,152 tokens survive"),
                                                             timeout=60_000)
    expect(page.locator("#distribution thead")).to_contain_text("after the filters")
    expect(page.locator("#distribution tbody")).to_contain_text("✓")  # the tokens kept, their probabilities
    page.screenshot(path=ARTIFACTS / "explorer-next-token.png", full_page=True)
    page.get_by_role("tab", name="Masks").click()
    expect(page.locator("#masks .js-plotly-plot")).to_be_visible()
    titles = page.evaluate("() => document.querySelector('#masks .js-plotly-plot').layout.annotations.map(a => a.text)")
    assert titles == ["causal", "sliding window (window 4)", "strided (window 4, stride 6)",
                      "fixed sparse (block 6, summary 1)"]
    page.screenshot(path=ARTIFACTS / "explorer-masks.png", full_page=True)


def test_an_empty_text_says_so(page):
    page.fill("#text textarea", "")
    page.click("#show")
    expect(page.locator("#status")).to_contain_text("Type a text first.", timeout=30_000)


def test_on_a_phone_the_page_fits_the_screen(browser, server):
    phone = {"width": 390, "height": 844}
    page = browser.new_page(viewport=phone)
    page.goto(server)
    expect(page.locator("#attention-map .js-plotly-plot")).to_be_visible(timeout=120_000)
    box = page.locator("#text textarea")
    assert box.bounding_box()["x"] + box.bounding_box()["width"] <= phone["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= phone["width"] + 1  # no sideways scrolling
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "explorer-phone.png", full_page=True)
    page.close()
