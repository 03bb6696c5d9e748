"""The sentiment app's handlers without a server (apps.finance_sentiment.app): pasted articles, files, the sample,
the table, the article view, the chart and the export; the ones marked slow run the shipped classifier."""

from __future__ import annotations

import csv
import datetime
import json

import pytest

from apps.finance_sentiment import news
from apps.finance_sentiment.analysis import Analyzer
from apps.finance_sentiment.app import (
    ARTICLE_COLUMNS,
    MAX_PASTE_CHARS,
    SAMPLE_CSV,
    STORE_FILE,
    SentimentApp,
    article_html,
    parse_day,
    parse_half_life,
    parse_watchlist,
)
from apps.finance_sentiment.timeseries import CompanyScore, StoredArticle

TWO_BANKS = ("Brokers split on regional lenders\n"
             "Kessler Brandt upgraded Harbor Bancorp to buy and downgraded Fallowmere Bank to sell.\n"
             "Harbor Bancorp's R&D spend stays < 5% of revenue, the bank said.")
WATCHLIST = "Harbor Bancorp, Fallowmere Bank"
SAMPLE_COMPANIES = {"Norrland Freight Corp.", "Calder Pharmaceuticals Inc.", "Ashgrove Retail Group plc"}


@pytest.fixture
def cheap_app(tmp_path):
    """An app whose classifier is never loaded: for inputs refused before scoring."""
    return SentimentApp(tmp_path, Analyzer())


@pytest.fixture(scope="module")
def analyzer():
    analyzer = Analyzer()
    analyzer.score(["warm up"])  # loads the shipped classifier (and exports its ONNX) once for the module
    return analyzer


@pytest.fixture
def app(tmp_path, analyzer):
    return SentimentApp(tmp_path, analyzer)


# --- inputs -----------------------------------------------------------------------------------------------------------

def test_watchlist_dates_and_half_life_are_read_or_refused_clearly():
    assert parse_watchlist("Harbor Bancorp, Inc.\nFallowmere Bank; Harbor Bancorp") == ["Harbor Bancorp",
                                                                                        "Fallowmere Bank"]
    assert parse_watchlist("") == parse_watchlist(None) == []
    with pytest.raises(ValueError, match="the limit is 1000"):
        parse_watchlist(",".join(f"Company {n}" for n in range(1001)))
    assert parse_day("2026-03-04") == parse_day("4 Mar 2026") == datetime.date(2026, 3, 4)
    assert parse_day("  ") is None
    with pytest.raises(ValueError, match="'next week' is not a date: write it as YYYY-MM-DD"):
        parse_day("next week")
    assert parse_half_life(0) is None and parse_half_life("") is None and parse_half_life("2.5") == 2.5
    for bad in (-1, "soon", float("inf")):
        with pytest.raises(ValueError, match="half-life"):
            parse_half_life(bad)


def test_bad_pasted_text_gets_a_clear_message_and_stores_nothing(cheap_app):
    assert cheap_app.add_text("").status == "Paste an article first."
    assert cheap_app.add_text(" \n\t ").error
    binary = cheap_app.add_text("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert binary.error and binary.status == "The pasted text contains NUL characters (binary data?)"
    huge = cheap_app.add_text("x" * (MAX_PASTE_CHARS + 1))
    assert huge.error and f"the limit is {MAX_PASTE_CHARS:,}" in huge.status
    bad_date = cheap_app.add_text(TWO_BANKS, date="31/31/2026")
    assert bad_date.error and "'31/31/2026' is not a date" in bad_date.status
    assert cheap_app.articles().rows == [] and not cheap_app.analyzer.__dict__.get("classifier")  # never loaded


def test_bad_files_and_feed_addresses_get_a_clear_message(cheap_app, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    binary = tmp_path / "photo.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10)
    huge = tmp_path / "huge.jsonl"
    with huge.open("wb") as f:
        f.truncate(news.MAX_FILE_BYTES + 1)  # sparse: refused by its size, before it is read
    unknown = tmp_path / "report.pdf"
    unknown.write_bytes(b"%PDF-1.7")
    no_text = tmp_path / "dates.csv"
    no_text.write_text("date,source\n2026-03-04,wire\n")
    expected = {empty: "empty.csv is empty", binary: "photo.csv is not a text file (it contains NUL bytes)",
                huge: "huge.jsonl is too big", unknown: "report.pdf: unknown kind of file",
                no_text: "dates.csv: no text column (one of text, body"}
    for path, message in expected.items():
        outcome = cheap_app.add_file(path)
        assert outcome.error and outcome.status.startswith(message), outcome.status
    for url, message in [("", "Type a feed's URL first."), ("/etc/passwd", "'/etc/passwd' is not a web address"),
                         ("file:///etc/passwd", "is not a web address")]:
        outcome = cheap_app.add_feed(url)
        assert outcome.error and message in outcome.status, outcome.status
    assert cheap_app.articles().rows == []


def test_the_store_lives_under_the_data_dir(tmp_path):
    app = SentimentApp(tmp_path / "home", Analyzer())
    assert app.store.path == tmp_path / "home" / STORE_FILE and app.store.path.is_file()


# --- the article view -------------------------------------------------------------------------------------------------

def test_the_article_view_escapes_outside_text_and_colours_by_label():
    stored = StoredArticle("k", "<img src=x onerror=alert(1)>", datetime.date(2026, 3, 4), "Wire <https://x.test>",
                           "", 0.5, "positive", (CompanyScore("A&B <Co>", 0.5, 0.9, 1),))
    sentence = {"text": "Profit <script>alert(1)</script> rose.", "label": "positive",
                "probabilities": {"negative": 0.01, "neutral": 0.04, "positive": 0.95}, "score": 0.94,
                "confidence": 0.95, "reasons": ["positive words: rose' onmouseover='x"], "companies": ["A&B <Co>"],
                "headline": False, "paragraph": True}
    weak = {**sentence, "text": "Costs fell.", "label": "negative", "confidence": 0.4, "score": -0.2,
            "paragraph": False}
    details = {"version": 1, "sentences": [sentence, weak], "notes": ["<b>note</b>"],
               "companies": [{"company": "A&B <Co>", "ticker": "", "score": 0.5, "label": "positive",
                              "confidence": 0.9, "sentences": 1, "reason": "“<i>x</i>”"}]}
    page = article_html(stored, details)
    for raw in ("<img", "<script", "<b>note", "<i>x", "<Co>", "' onmouseover"):
        assert raw not in page, raw
    for escaped in ("&lt;img src=x onerror=alert(1)&gt;", "Profit &lt;script&gt;", "A&amp;B &lt;Co&gt;",
                    "rose&#x27; onmouseover=&#x27;x", "&lt;i&gt;x&lt;/i&gt;"):
        assert escaped in page, escaped
    assert "Wire" in page and "https://x.test" not in page  # the source's name, not its address
    strong_alpha = float(page.split("sentiment-positive")[1].split("rgba(22, 163, 74, ")[1].split(")")[0])
    weak_alpha = float(page.split("sentiment-negative")[1].split("rgba(220, 38, 38, ")[1].split(")")[0])
    assert strong_alpha > weak_alpha  # the more confident sentence is the stronger colour
    assert "probabilities: negative 0.01, neutral 0.04, positive 0.95" in page  # in the hover and the list


# --- with the classifier -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_pasted_article_naming_two_companies(app):
    outcome = app.add_text(TWO_BANKS, WATCHLIST, "2026-03-04")
    assert not outcome.error and len(outcome.keys) == 1, outcome.status
    table = app.articles()
    assert table.keys == outcome.keys and len(table.rows[0]) == len(ARTICLE_COLUMNS)
    date, title, source, score, label, companies = table.rows[0]
    assert (date, title, source) == ("2026-03-04", "Brokers split on regional lenders", "pasted")
    scores = {c.company: c.score for c in app.store.get(outcome.keys[0]).companies}
    assert scores["Harbor Bancorp"] > 0.2 and scores["Fallowmere Bank"] < -0.2, scores  # opposite news, signs
    assert f"Harbor Bancorp {scores['Harbor Bancorp']:+.2f}" in companies

    page = app.article_view(outcome.keys[0])
    assert "sentiment-sentence" in page and "upgraded Harbor Bancorp to buy" in page
    assert "R&amp;D spend stays &lt; 5%" in page and "< 5%" not in page
    details = json.loads(app.store.details(outcome.keys[0]))
    assert [s["headline"] for s in details["sentences"]] == [True, False, False]
    assert {c["company"] for c in details["companies"]} == {"Harbor Bancorp", "Fallowmere Bank"}
    assert all(c["reason"] for c in details["companies"]) and "sell" in next(
        c["reason"] for c in details["companies"] if c["company"] == "Fallowmere Bank")
    assert app.articles("Fallowmere Bank").keys == outcome.keys and app.articles("Nobody").keys == []

    again = app.add_text(TWO_BANKS, WATCHLIST, "2026-03-05")  # pasted again: scored again, the same article
    assert again.keys == outcome.keys and app.store.get(outcome.keys[0]).date == datetime.date(2026, 3, 5)
    assert len(app.articles().rows) == 1


@pytest.mark.slow
def test_the_sample_charts_each_company_and_is_not_scored_twice(app, tmp_path):
    steps = []
    first = app.load_sample(lambda fraction, what: steps.append((fraction, what)))
    assert not first.error and first.status.startswith(
        "news.csv: 13 items read, 1 syndicated copy merged; 12 scored, 0 already in the store."), first.status
    assert steps[0] == (0.0, "Scoring 1 of 12") and steps[-1] == (1.0, "Done")
    assert set(app.companies()) == SAMPLE_COMPANIES
    merged = next(row for row in app.articles().rows if row[1].startswith("Calder Pharmaceuticals drops"))
    assert merged[2] == "Sample Newswire, Example Markets Daily"  # the syndicated copy's source kept

    chart = app.chart()
    assert set(chart.companies) == SAMPLE_COMPANIES
    assert {trace.name for trace in chart.figure.data} == SAMPLE_COMPANIES  # a trace per company
    calder = next(trace for trace in chart.figure.data if trace.name == "Calder Pharmaceuticals Inc.")
    assert [str(day) for day in calder.x] == ["2026-03-03", "2026-03-06", "2026-03-09", "2026-03-12"]
    assert calder.customdata[-1][0] == 2 and min(calder.y) < 0  # two stories on the 12th; its trial failure
    assert len(app.chart(["Norrland Freight Corp."], half_life=2).figure.data) == 1

    window = app.articles("", "2026-03-09", "2026-03-10")
    assert [row[0] for row in window.rows] == ["2026-03-10", "2026-03-09", "2026-03-09"]
    assert app.articles("", "soon").status == "The start date 'soon' is not a date: write it as YYYY-MM-DD."

    exported = app.export(["Ashgrove Retail Group plc"], end="2026-03-06")
    with exported.path.open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["company"], r["date"]) for r in rows] == [("Ashgrove Retail Group plc", "2026-03-04"),
                                                         ("Ashgrove Retail Group plc", "2026-03-06")]

    copy = tmp_path / "again.csv"
    copy.write_bytes(SAMPLE_CSV.read_bytes())
    second = app.add_file(copy)
    assert "12 scored" not in second.status and "0 scored, 12 already in the store" in second.status
    assert sorted(second.keys) == sorted(first.keys) and len(app.articles().rows) == 12


@pytest.mark.slow
def test_one_story_that_fails_stays_in_that_story(tmp_path, analyzer):
    class FailsOnLawsuits(Analyzer):  # the real analyzer, but one story breaks it
        def article(self, text, title="", watchlist=()):
            if "lawsuit" in text:
                raise RuntimeError("scoring broke")
            return super().article(text, title, watchlist)

    app = SentimentApp(tmp_path, FailsOnLawsuits(analyzer.classifier))
    path = tmp_path / "two.csv"
    path.write_text("date,title,text\n2026-03-02,Up,Norrland Freight Corp. raised its outlook.\n"
                    "2026-03-03,Sued,Shareholders filed a lawsuit against Calder Pharmaceuticals Inc.\n"
                    "2026-03-04,,\n")
    outcome = app.add_file(path)
    assert not outcome.error and len(outcome.keys) == 1
    assert "2 items read; 1 scored, 0 already in the store." in outcome.status
    assert "Skipped 1: row 4: no text" in outcome.status
    assert "Failed 1: “Sued”: scoring broke" in outcome.status
    assert [row[1] for row in app.articles().rows] == ["Up"]
