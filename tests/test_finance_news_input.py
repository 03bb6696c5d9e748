"""apps.finance_sentiment.news: RSS/Atom fixtures (modelled on wire feeds) read with local dates and plain text, a
feed served over loopback HTTP, CSV/JSONL with bad rows skipped by number, syndicated copies merged (checked
against exact Jaccard), and bad input (empty, binary, 1 MB, non-English, HTML, wrong suffix) read or refused."""

import datetime
import functools
import re
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from apps.finance_sentiment import news
from apps.finance_sentiment.news import (
    NewsInputError,
    NewsItem,
    from_text,
    html_to_text,
    merge_duplicates,
    parse_date,
    read_csv,
    read_feed,
    read_file,
    read_html,
    read_jsonl,
)

FEEDS = Path(__file__).resolve().parent / "fixtures" / "feeds"
D = datetime.date


def test_rss_entries_have_plain_text_publisher_dates_and_headline_only_entries_keep_their_headline():
    report = read_file(FEEDS / "meridian_markets.rss")
    assert report.skipped == [] and report.notes == []
    northwind, harbor, correction, halted = report.items
    assert northwind.title == "Northwind Logistics quarterly revenue rises 8%, keeps outlook"
    assert northwind.source == "Meridian Wire - Markets"
    assert northwind.url == "https://meridianwire.example/markets/northwind-q4-2025"
    assert northwind.date == D(2026, 3, 3)  # 22:30 -0500 as filed, though 4 March in UTC
    # content:encoded (CDATA) preferred over the shorter description; entities resolved, script dropped
    assert northwind.text.startswith("Northwind Logistics said on Tuesday that fourth-quarter revenue rose 8%")
    assert "freight & lower fuel costs" in northwind.text and "\u201cVolumes held up" in northwind.text
    assert "trackView" not in northwind.text and "<" not in northwind.text
    assert northwind.text.endswith("Shares rose 3% in after-hours trading.")
    assert harbor.date == D(2026, 3, 4) and harbor.text.startswith("Harbor Bancorp\u2019s quarterly profit beat")
    assert correction.date is None and "April 2" in correction.text
    assert (halted.title, halted.text) == ("", "Quayside Energy shares halted pending announcement")
    assert halted.url == "" and halted.sources == ["Meridian Wire - Markets"]


def test_atom_entries_read_html_and_xhtml_content_html_titles_and_published_before_updated():
    report = read_feed(FEEDS / "ledger_business.atom")
    merger, hub, cfo, guidance = report.items
    assert merger.title == "Harbor Bancorp & Pine Street Trust agree to merge"
    assert merger.date == D(2026, 3, 5)  # published 08:15 +09:00 (23:15 UTC the day before)
    assert "valued at $1.9 billion" in merger.text and "\u201cfull but fair\u201d" in merger.text  # not the summary
    assert merger.sources == ["The Daily Ledger: Business <https://ledger.example/business/1093>"]
    assert hub.text == ("Northwind Logistics will open a 350-person distribution hub near Rotterdam next year.\n\n"
                        "The company expects the site to cut delivery times to Germany by a day.")
    assert hub.date == D(2026, 3, 4)
    assert cfo.date is None and cfo.text == "Eastgate Foods appointed Lena Marsh as chief financial officer, " \
                                            "effective April 1."
    assert (guidance.title, guidance.text, guidance.url) == ("", "Quayside Energy suspends guidance", "")
    assert guidance.date == D(2026, 3, 3)


@pytest.fixture
def feed_server():
    """The fixtures folder over real loopback HTTP; yields the base URL."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(FEEDS))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_feed_url_is_fetched_and_read_like_the_saved_file(feed_server, monkeypatch):
    fetched = read_feed(f"{feed_server}/ledger_business.atom")
    assert fetched.items == read_feed(FEEDS / "ledger_business.atom").items
    with pytest.raises(NewsInputError, match="HTTP 404"):
        read_feed(f"{feed_server}/missing.rss")
    monkeypatch.setattr(news, "MAX_FEED_BYTES", 1000)
    with pytest.raises(NewsInputError, match="larger than 1,000 bytes"):
        read_feed(f"{feed_server}/ledger_business.atom")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/feed.xml", "gopher://x/"])
def test_only_http_urls_are_fetched(url):
    with pytest.raises(NewsInputError, match="only http and https"):
        read_feed(url)


def test_bytes_are_parsed_as_a_feed_never_opened_as_a_path(tmp_path):
    with pytest.raises(NewsInputError, match="not an RSS or Atom feed"):
        read_feed(str(FEEDS / "meridian_markets.rss").encode())  # feedparser alone would open this path


def test_syndicated_copy_with_a_reworded_lead_is_merged_and_the_next_quarters_story_is_not():
    report = read_file(FEEDS / "syndicated.csv")
    assert [item.date for item in report.items] == [D(2026, 3, 3), D(2026, 3, 4), D(2025, 11, 4), D(2026, 3, 4)]
    wire, copy, next_quarter, harbor = report.items
    merged = merge_duplicates(report.items)
    assert len(merged) == 3
    story = merged[0]
    assert story.sources == ["Meridian Wire <https://meridianwire.example/markets/northwind-q4-2025>",
                             "The Daily Ledger <https://ledger.example/business/northwind-revenue>"]
    assert story.date == D(2026, 3, 3)  # the earliest copy's date
    assert story.text == max(wire.text, copy.text, key=len)
    assert merged[1:] == [next_quarter, harbor]
    assert len(wire.sources) == 1  # the inputs are unchanged


def _exact_groups(items, threshold):
    """The slow reference: exact Jaccard of word 3-shingles for every pair, grouped transitively."""
    shingles = [news._shingles(item.text) for item in items]
    groups = [{i} for i in range(len(items))]
    for i in range(len(items)):
        for j in range(i):
            if len(shingles[i] & shingles[j]) / len(shingles[i] | shingles[j]) >= threshold:
                merged = next(g for g in groups if i in g) | next(g for g in groups if j in g)
                groups = [g for g in groups if not g & merged] + [merged]
    return sorted(sorted(items[i].sources[0] for i in group) for group in groups)


@pytest.mark.parametrize("threshold", [news.DUPLICATE_JACCARD, 0.8])
def test_minhash_merging_matches_exact_jaccard_on_every_fixture_item(threshold):
    items = [item for name in ("syndicated.csv", "meridian_markets.rss", "ledger_business.atom")
             for item in read_file(FEEDS / name).items]
    items.append(NewsItem("", items[0].text, None, "Copy Desk", "https://copy.example/1"))  # an exact copy
    merged = merge_duplicates(items, threshold)
    assert sorted(sorted(item.sources) for item in merged) == _exact_groups(items, threshold)
    assert len(merged) == (len(items) - 2 if threshold == news.DUPLICATE_JACCARD else len(items) - 1)


def test_merging_keeps_the_order_of_each_storys_first_copy():
    a = NewsItem("", "Alpha Mining shares rose after its copper output beat forecasts", D(2020, 1, 2), "alpha")
    b = NewsItem("", "Beta Retail cut its outlook as shoppers spent less on clothing", None, "beta")
    c = NewsItem("", "Gamma Shipping said freight rates fell for a third month", None, "gamma")
    a_copy = NewsItem("", a.text + ", the company said", D(2020, 1, 1), "syndicator")
    merged = merge_duplicates([b, a, c, a_copy])
    assert [item.sources for item in merged] == [["beta"], ["alpha", "syndicator"], ["gamma"]]
    assert merged[1].text == a_copy.text and merged[1].date == D(2020, 1, 1)  # the longest text, the earliest date
    assert merge_duplicates([]) == []


def test_csv_with_bom_semicolons_body_and_headline_columns_day_first_dates_and_bad_rows(tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes("\ufeffDate;Headline;Body;Source\n"
                     "13/03/2026;Harbor Bancorp raises dividend;Harbor Bancorp raised its dividend by 5%.;Wire\n"
                     "04/03/2026;Harbor Bancorp names new chair;;Wire\n"
                     "\n"
                     "04/03/2026;;  ;Wire\n"
                     "soon;Northwind hires;Northwind Logistics hired a new chief operating officer.;\n"
                     "05/03/2026;;Eastgate Foods shares slipped 2%.;Wire\n".encode())
    report = read_csv(path)
    dividend, chair, hires, eastgate = report.items
    assert (dividend.title, dividend.text, dividend.date) == ("Harbor Bancorp raises dividend",
                                                              "Harbor Bancorp raised its dividend by 5%.",
                                                              D(2026, 3, 13))
    assert eastgate.date == D(2026, 3, 5)  # day first, as the 13/03 row shows (slashes alone would read 3 May)
    assert (chair.title, chair.text) == ("", "Harbor Bancorp names new chair")  # a headline-only row
    assert report.skipped == ["row 5: no text"]
    assert hires.date is None and hires.notes == ["date 'soon' not understood: left empty"]
    assert hires.source == "export.csv"  # no source in the row: the file's name


def test_csv_with_only_headlines_month_first_dates_and_a_note_on_the_ambiguity():
    report = read_csv(b"headline,date\nHarbor Bancorp shares jump,03/04/2026\nQuayside Energy halted,03/05/2026\n",
                      source="upload")
    assert [(item.title, item.text, item.date) for item in report.items] == [
        ("", "Harbor Bancorp shares jump", D(2026, 3, 4)), ("", "Quayside Energy halted", D(2026, 3, 5))]
    assert report.notes == ["dates like 03/04/2026 are ambiguous: read month first (03.04.2026: day first)"]
    assert report.items[0].source == "upload"


def test_csv_not_in_utf8_is_read_with_a_note_and_without_a_text_column_is_refused():
    report = read_csv("text,source\nSoci\xe9t\xe9 Foncière results beat forecasts,Wire\n".encode("latin-1"))
    assert report.items[0].text == "Soci\ufffdt\ufffd Fonci\ufffdre results beat forecasts"
    assert len(report.notes) == 1 and "not valid UTF-8 (byte 0xe9" in report.notes[0]
    with pytest.raises(NewsInputError, match=r"no text column .* found 'date', 'ticker'"):
        read_csv(b"date,ticker\n2026-03-04,NWL\n")


def test_jsonl_bad_lines_are_skipped_by_number():
    lines = ['{"text": "Northwind Logistics raised its outlook.", "date": "2026-03-04", "url": "https://n.example"}',
             "{not json",
             "[1, 2]",
             '{"content": 42}',
             "[" * 100_000,
             "",
             '{"Body": "<p>Harbor Bancorp &amp; Pine Street agree terms.</p>", "Source": "Ledger"}']
    report = read_jsonl("\n".join(lines).encode())
    first, second = report.items
    assert (first.text, first.date, first.url, first.source) == (
        "Northwind Logistics raised its outlook.", D(2026, 3, 4), "https://n.example", "the JSONL data")
    assert (second.text, second.source) == ("Harbor Bancorp & Pine Street agree terms.", "Ledger")
    assert [reason.split(":")[0] for reason in report.skipped] == ["line 2", "line 3", "line 4", "line 5"]
    assert report.skipped[2] == "line 4: 'content' is not text but int"


def test_item_limit_skips_the_rest_with_one_reason(monkeypatch):
    monkeypatch.setattr(news, "MAX_ITEMS", 3)
    report = read_csv(b"text\n" + b"".join(b"story number %d\n" % i for i in range(10)))
    assert [item.text for item in report.items] == ["story number 0", "story number 1", "story number 2"]
    assert report.skipped == ["row 5 and after: not read (the limit is 3 items)"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".rss", ".html", ".txt"])
def test_empty_and_binary_files_are_refused_with_the_files_name(tmp_path, suffix):
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b" \n\n")
    with pytest.raises(NewsInputError, match=f"empty{re.escape(suffix)} is empty"):
        read_file(empty)
    binary = tmp_path / f"image{suffix}"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00")
    with pytest.raises(NewsInputError, match=f"image{re.escape(suffix)} is not a text file"):
        read_file(binary)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("notes.pdf", b"%PDF-1.7", "unknown kind of file"),
    ("feed.xml", b"<html><body><p>Not a feed</p></body></html>", "is not an RSS or Atom feed"),
    ("rows.jsonl", b"text,date\nNorthwind shares rose,2026-03-04\n", r"no news item in it \(line 1: not JSON"),
    ("page.html", b"text,date\nNorthwind shares rose,2026-03-04\n", "is not HTML"),
    ("table.csv", b'{"text": "Northwind shares rose"}\n', "no text column"),
])
def test_a_file_that_is_not_what_its_suffix_says_is_refused(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(NewsInputError, match=message):
        read_file(path)


def test_a_file_over_the_size_limit_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(news, "MAX_FILE_BYTES", 100)
    path = tmp_path / "big.csv"
    path.write_bytes(b"text\n" + b"x" * 200)
    with pytest.raises(NewsInputError, match="big.csv is too big"):
        read_file(path)


def test_pasted_text_takes_a_short_first_line_as_title_only_when_it_reads_like_a_headline():
    item = from_text("Harbor Bancorp beats estimates\r\n\r\nHarbor Bancorp\u00a0reported  profit above estimates.\x07")
    assert (item.title, item.text, item.source) == ("Harbor Bancorp beats estimates",
                                                    "Harbor Bancorp reported profit above estimates.", "pasted")
    sentence_first = from_text("Harbor Bancorp beat estimates.\nDeposits were flat.")
    assert sentence_first.title == "" and sentence_first.text.startswith("Harbor Bancorp beat")
    assert from_text("Shares rose.").title == ""
    for bad in ("", " \n\t ", "<p> </p>"):
        with pytest.raises(NewsInputError, match="the pasted text is empty"):
            from_text(bad)
    with pytest.raises(NewsInputError, match="NUL"):
        from_text("abc\x00def")


def test_a_megabyte_of_pasted_text_is_truncated_with_a_note_quickly():
    start = time.perf_counter()
    item = from_text("Northwind Logistics shipped more freight this quarter. " * 19_000)  # ~1 MB
    assert time.perf_counter() - start < 2.0
    assert len(item.text) == news.MAX_ARTICLE_CHARS
    assert item.notes == ["text truncated to 100,000 characters (it had 1,044,999)"]  # its last space dropped


def test_non_english_text_is_read_with_a_note_and_english_without():
    german = ("Die Aktie der Northwind Logistics stieg am Dienstag um acht Prozent, nachdem das Unternehmen seine "
              "Prognose für das laufende Jahr bestätigt hatte und der Umsatz im vierten Quartal deutlich zulegte.")
    chinese = "北风物流周二表示，第四季度营收增长百分之八，达到四亿一千二百万美元，并维持全年业绩预期。" * 2
    for text in (german, chinese):
        assert from_text(text).notes == ["does not look like English: the sentiment models read English only"]
    assert from_text(read_file(FEEDS / "syndicated.csv").items[0].text).notes == []


def test_pasted_html_and_saved_pages_become_the_article_text(tmp_path):
    page = ("<!DOCTYPE html><html><head><title>Harbor Bancorp beats | Daily Ledger</title>"
            '<meta property="og:site_name" content="The Daily Ledger">'
            '<meta property="article:published_time" content="2026-03-04T09:30:00-05:00">'
            '<link rel="canonical" href="https://ledger.example/business/harbor-beats"></head><body>'
            "<nav><a href='/'>Home</a> | <a href='/markets'>Markets</a> | Subscribe now</nav>"
            "<article><h1>Harbor Bancorp beats estimates</h1>"
            "<p>Harbor Bancorp reported quarterly profit above analyst estimates on Tuesday, helped by higher net "
            "interest income &amp; lower funding costs.</p><script>var ad = 'BUY NOW';</script>"
            "<p>The lender said deposits grew 3% from the prior quarter, and it raised its full-year guidance.</p>"
            "</article><footer>Copyright 2026 The Daily Ledger. All rights reserved.</footer></body></html>")
    text = html_to_text(page)
    assert "higher net interest income & lower funding costs." in text and "raised its full-year guidance" in text
    assert "Subscribe now" not in text and "BUY NOW" not in text and "All rights reserved" not in text
    pasted = from_text(page)
    assert pasted.title == "Harbor Bancorp beats estimates" and pasted.text.startswith("Harbor Bancorp reported")
    path = tmp_path / "harbor.html"
    path.write_text(page, encoding="utf-8")
    saved = read_html(path).items[0]
    assert (saved.title, saved.date, saved.source, saved.url) == (
        "Harbor Bancorp beats estimates", D(2026, 3, 4), "The Daily Ledger",
        "https://ledger.example/business/harbor-beats")
    assert saved.text.startswith("Harbor Bancorp reported") and "Subscribe" not in saved.text
    fragment = "<p>Quayside Energy <b>halted</b> trading.</p><ul><li>Shares: -4%</li></ul><!-- ad -->"
    assert html_to_text(fragment) == "Quayside Energy halted trading.\n\nShares: -4%"


@pytest.mark.parametrize(("value", "day_first", "expected"), [
    ("2026-03-04", None, D(2026, 3, 4)),
    ("2026-03-04T23:30:00-05:00", None, D(2026, 3, 4)),
    ("2026-03-04 10:15", None, D(2026, 3, 4)),
    ("Wed, 04 Mar 2026 13:05:00 GMT", None, D(2026, 3, 4)),
    ("4 March 2026", None, D(2026, 3, 4)),
    ("Wednesday, March 4, 2026", None, D(2026, 3, 4)),
    ("Sept. 9, 2025", None, D(2025, 9, 9)),
    ("2026/03/04", None, D(2026, 3, 4)),
    ("03/04/2026", None, D(2026, 3, 4)),
    ("03/04/2026", True, D(2026, 4, 3)),
    ("04.03.2026", None, D(2026, 3, 4)),
    ("13/03/26", None, D(2026, 3, 13)),
    ("31/02/2026", None, None),
    ("next week", None, None),
    ("", None, None),
])
def test_parse_date(value, day_first, expected):
    assert parse_date(value, day_first) == expected
