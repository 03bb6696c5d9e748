"""The sentiment app end to end: `llmkit sentiment-app` on loopback, driven by a real headless Chromium (Debian's).

One server for the module, on a temp data dir. Saves screenshots to test-artifacts/ (or $LLMKIT_TEST_ARTIFACTS):
sentiment-app.png (1440 px wide; the README's docs/sentiment-app.png is a copy) and sentiment-app-errors.png.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from conftest import running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium, and the app on the shipped classifier

LLMKIT = Path(sys.executable).parent / "llmkit"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("LLMKIT_TEST_ARTIFACTS", ROOT / "test-artifacts"))
DESKTOP = {"width": 1440, "height": 900}
ARTICLE = ("Brokers split on regional lenders\n"
           "Kessler Brandt upgraded Harbor Bancorp to buy and downgraded Fallowmere Bank to sell.\n"
           "Harbor Bancorp shares rose 4% in early trading, while Fallowmere Bank fell 6%.")
SAMPLE_COMPANIES = ["Calder Pharmaceuticals Inc.", "Ashgrove Retail Group plc", "Norrland Freight Corp."]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_app(["sentiment-app", "--data-dir", str(tmp_path_factory.mktemp("home"))],
                     tmp_path_factory.mktemp("sentiment-app") / "server.log") as url:
        yield url


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport=DESKTOP)
    page.goto(server)
    expect(page.locator("#article textarea")).to_be_visible(timeout=60_000)
    yield page
    page.close()


def company_scores(page) -> dict[str, float]:
    """The article view's company table: {company: score}."""
    rows = page.locator("#article-view .sentiment-companies tbody tr")
    cells = [rows.nth(i).locator("td") for i in range(rows.count())]
    return {row.nth(0).inner_text(): float(row.nth(1).inner_text().split()[0]) for row in cells}


def chart_traces(page) -> list[str]:
    """The names of the plotted traces that have data."""
    return page.evaluate("""() => (document.querySelector('#chart .js-plotly-plot')?.data || [])
        .filter(t => t.x && t.x.length).map(t => t.name)""")


def test_paste_an_article_then_load_the_sample_and_see_the_chart(page):
    page.fill("#article textarea", ARTICLE)
    page.fill("#watchlist textarea", "Harbor Bancorp, Fallowmere Bank")
    page.click("#score")
    view = page.locator("#article-view")
    expect(view.locator(".sentiment-companies")).to_be_visible(timeout=120_000)
    expect(page.locator("#add-status")).to_contain_text("Scored “Brokers split on regional lenders”")
    scores = company_scores(page)
    assert scores["Harbor Bancorp"] > 0 > scores["Fallowmere Bank"], scores  # one sentence, opposite news
    assert "sell" in view.locator(".sentiment-companies tbody tr").nth(1).inner_text()  # the reason quotes it
    sentences = view.locator(".sentiment-text .sentiment-sentence")
    expect(sentences).to_have_count(3)  # the headline and two sentences, each coloured with its explanation
    labels = [sentences.nth(i).get_attribute("data-label") for i in range(3)]
    assert "positive" in labels or "negative" in labels, labels
    assert all("probabilities:" in sentences.nth(i).get_attribute("title") for i in range(3))
    colours = {sentences.nth(i).evaluate("e => getComputedStyle(e).backgroundColor") for i in range(3)}
    assert all(c.startswith("rgba(") for c in colours), colours
    expect(view.locator(".sentiment-explanations li")).to_have_count(3)
    expect(page.locator("#articles")).to_contain_text("Brokers split on regional lenders")

    page.click("#load-sample")
    expect(page.locator("#add-status")).to_contain_text("news.csv: 13 items read, 1 syndicated copy merged; 12 "
                                                        "scored", timeout=180_000)
    expect(page.locator("#articles")).to_contain_text("Norrland Freight settles strike")
    deadline = time.monotonic() + 30
    while sorted(chart_traces(page)) != sorted(SAMPLE_COMPANIES) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sorted(chart_traces(page)) == sorted(SAMPLE_COMPANIES)
    expect(page.locator("#chart .js-plotly-plot .scatterlayer .trace")).to_have_count(3)

    expect(view.locator("h3")).to_have_text("Brokers split on regional lenders")  # still the pasted article
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "sentiment-app.png", full_page=True)

    page.click("#articles [data-testid=cell-1-1]")  # the newest sample story (the pasted one, undated, is first)
    expect(view.locator("h3")).to_have_text("Calder Pharmaceuticals faces shareholder lawsuit", timeout=30_000)
    expect(view.locator(".sentiment-companies")).to_contain_text("Calder Pharmaceuticals Inc.")

    page.click("#export")
    expect(page.locator("#export-status")).to_contain_text("Exported", timeout=30_000)
    link = page.locator("#download a[href*='sentiment-index.csv']")
    expect(link).to_be_visible()
    csv_text = page.request.get(link.get_attribute("href")).text()
    assert csv_text.startswith("company,date,count,mean,low,high\n") and "Norrland Freight Corp.,2026-03-02" in csv_text


def test_bad_input_shows_a_clear_message(page):
    page.click("#score")
    expect(page.locator("#add-status")).to_have_text("Paste an article first.", timeout=30_000)
    page.fill("#article textarea", ARTICLE)
    page.fill("#article-date textarea", "next week")
    page.click("#score")
    expect(page.locator("#add-status")).to_contain_text("The date 'next week' is not a date: write it as YYYY-MM-DD")
    page.fill("#start-date textarea", "soon")
    page.press("#start-date textarea", "Enter")
    warning = page.locator("[data-testid=toast-text]", has_text="The start date 'soon' is not a date")
    expect(warning.first).to_be_visible(timeout=30_000)  # a warning, and a line under the chart
    expect(page.locator("#chart-status")).to_contain_text("The start date 'soon' is not a date")
    page.screenshot(path=ARTIFACTS / "sentiment-app-errors.png", full_page=True)


def test_on_a_phone_the_page_fits_the_screen(browser, server):
    phone = {"width": 390, "height": 844}
    page = browser.new_page(viewport=phone)
    page.goto(server)
    box = page.locator("#article textarea")
    expect(box).to_be_visible(timeout=60_000)
    assert box.bounding_box()["x"] + box.bounding_box()["width"] <= phone["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= phone["width"] + 1  # no sideways scrolling
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "sentiment-app-phone.png", full_page=True)
    page.close()
