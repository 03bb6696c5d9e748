"""apps.finance_sentiment.companies: tickers and company names found in crafted news text, false friends left alone,
the bundled alias table, and bounded work on huge or garbage input."""

import csv
import random
import time

import pytest

from apps.finance_sentiment.companies import (
    MAX_CHARS,
    TABLE_PATH,
    Company,
    company_names,
    find_companies,
    load_table,
    short_name,
)


def found(text, **kwargs):
    """(how, surface, company) of each mention, checking the offsets point at the surface."""
    mentions = find_companies(text, **kwargs)
    for m in mentions:
        assert text[m.start:m.end] == m.surface
    return [(m.how, m.surface, m.company) for m in mentions]


def test_table_is_bundled_and_large_with_the_big_names_and_their_tickers():
    table = load_table()
    assert len(table.companies) > 1000
    by_name = {c.name: c for c in table.companies}
    assert by_name["Apple Inc."].ticker == "AAPL" and "Apple" in by_name["Apple Inc."].aliases
    assert by_name["Microsoft"].ticker == "MSFT"
    assert by_name["SAP"].ticker == "SAP.DE" and "SAP" in by_name["SAP"].tickers  # its NYSE listing
    assert "Google" in by_name["Alphabet Inc."].aliases
    assert load_table() is table  # read once
    assert TABLE_PATH.stat().st_size < 400_000
    with TABLE_PATH.open(encoding="utf-8") as f:
        names = [row["name"] for row in csv.DictReader(f)]
    assert len(names) == len(set(names)), "one row per company across indices"


@pytest.mark.parametrize(("name", "short"), [
    ("Apple Inc.", "Apple"), ("Alphabet Inc. (Class A)", "Alphabet"), ("Ichor Holdings, Ltd.", "Ichor"),
    ("The Coca-Cola Company", "Coca-Cola"), ("Merck & Co.", "Merck"), ("Volkswagen Group", "Volkswagen"),
    ("Carnival Corporation & plc", "Carnival"), ("Group", "Group"),
])
def test_short_name_strips_legal_suffixes_brackets_and_the(name, short):
    assert short_name(name) == short


@pytest.mark.parametrize(("text", "surface", "company", "ticker"), [
    ("Shares of $AAPL jumped.", "$AAPL", "Apple Inc.", "AAPL"),
    ("NASDAQ:MSFT slipped.", "NASDAQ:MSFT", "Microsoft", "MSFT"),
    ("Big Blue (NYSE: IBM) rose.", "NYSE: IBM", "IBM", "IBM"),
    ("Intel (Nasdaq: INTC) was flat.", "Nasdaq: INTC", "Intel", "INTC"),
    ("AAPL.O rose 2%.", "AAPL.O", "Apple Inc.", "AAPL"),
    ("VOD.L fell in London.", "VOD.L", "Vodafone", "VOD.L"),
    ("SAP.DE gained in Frankfurt.", "SAP.DE", "SAP", "SAP.DE"),
    ("LON:VOD was flat.", "LON:VOD", "Vodafone", "VOD.L"),
])
def test_explicit_ticker_forms(text, surface, company, ticker):
    [m] = [m for m in find_companies(text) if m.how == "ticker"]  # "Intel" is also a name
    assert (m.how, m.surface, m.company, m.ticker) == ("ticker", surface, company, ticker)


def test_unknown_cashtag_and_exchange_symbol_are_still_mentions_unknown_ric_is_not():
    assert found("$ZZZQ soared while NYSE: QQZX sank; XQZ.L did nothing.") == [
        ("ticker", "$ZZZQ", "ZZZQ"), ("ticker", "NYSE: QQZX", "QQZX")]


@pytest.mark.parametrize("text", [
    "IT spending rose 5% this year.",
    "ALL of the banks passed the stress test.",
    "A rise in rates hurt lenders.",
    "Shares are ON sale NOW, ARE they not?",
    "The CEO said US GDP and EU growth slowed.",
    "I ate apple pie while the apple harvest failed.",
    "The Nasdaq composite and the Dow Jones fell; Target prices were cut.",
    "it was a bit: THE end.",
])
def test_false_friends_in_prose_are_no_companies(text):
    assert find_companies(text) == []


def test_a_bare_ticker_counts_only_when_its_company_is_named():
    assert found("AAPL rose 3%.") == []
    assert found("Apple (AAPL) gained; AAPL rose 3%.") == [
        ("name", "Apple", "Apple Inc."), ("ticker", "AAPL", "Apple Inc."), ("ticker", "AAPL", "Apple Inc.")]
    # the company of "IT" (Gartner) and "A" (Agilent) named: the words stay words
    assert found("Gartner said IT budgets grew. A rise at Agilent Technologies followed.") == [
        ("name", "Gartner", "Gartner"), ("name", "Agilent Technologies", "Agilent Technologies")]


def test_names_with_suffixes_possessives_and_two_companies():
    assert found("Apple Inc. said Microsoft Corp. and Volkswagen AG would cooperate; Deutsche Telekom's shares fell.") \
        == [("name", "Apple Inc.", "Apple Inc."), ("name", "Microsoft Corp.", "Microsoft"),
            ("name", "Volkswagen AG", "Volkswagen Group"), ("name", "Deutsche Telekom", "Deutsche Telekom")]
    assert found("Tesla, Inc. fell while Siemens Energy rose and Siemens held; U.S. Bancorp gained.") == [
        ("name", "Tesla, Inc.", "Tesla, Inc."), ("name", "Siemens Energy", "Siemens Energy"),
        ("name", "Siemens", "Siemens"), ("name", "U.S. Bancorp", "U.S. Bancorp")]
    assert company_names(find_companies("Google and Facebook were fined; Alphabet appealed.")) == [
        "Alphabet Inc.", "Meta Platforms"]


def test_longest_name_wins():
    assert found("Coca-Cola HBC bottles for The Coca-Cola Company.") == [
        ("name", "Coca-Cola HBC", "Coca-Cola HBC"), ("name", "The Coca-Cola Company", "The Coca-Cola Company")]


def test_fuzzy_variants_and_conservative_threshold():
    assert found("Deutsche Telecom and Procter and Gamble reported.") == [
        ("fuzzy", "Deutsche Telecom", "Deutsche Telekom"), ("name", "Procter and Gamble", "Procter & Gamble")]
    assert found("Shares Fall As General Electronics And Royal Mails Slip") == []


def test_unknown_companies_by_suffix_and_their_short_forms():
    text = ("Northwind Logistics Inc. reported a loss. Northwind said margins shrank, and Northwind Logistics cut "
            "jobs. Harbor Bancorp rose; Harbor is a common word. Redfern & Co upgraded Westmere Holdings plc, "
            "and Westmere's shares rose.")
    assert found(text) == [
        ("suffix", "Northwind Logistics Inc.", "Northwind Logistics Inc."),
        ("short", "Northwind", "Northwind Logistics Inc."),
        ("short", "Northwind Logistics", "Northwind Logistics Inc."),
        ("suffix", "Harbor Bancorp", "Harbor Bancorp"),
        ("suffix", "Redfern & Co", "Redfern & Co"),
        ("suffix", "Westmere Holdings plc", "Westmere Holdings plc"),
        ("short", "Westmere", "Westmere Holdings plc")]
    assert found("Northwind said margins shrank before Northwind Logistics Inc. reported.")[0][0] != "short", \
        "a short form counts only after the full name"
    assert found("On Monday Kestrelle Mining Corp fell.") == [
        ("suffix", "Kestrelle Mining Corp", "Kestrelle Mining Corp")]
    assert found("Target Corp. and Carnival Corp fell.") == [
        ("suffix", "Target Corp.", "Target Corporation"), ("suffix", "Carnival Corp", "Carnival Corporation & plc")]


def test_watchlist_names_and_companies():
    text = "Velmora Retail cut its outlook; Bluemarrow Foods said Velmora's orders fell and $BLMF slid."
    assert found(text) == [("ticker", "$BLMF", "BLMF")]
    watch = ["Velmora Retail", Company("Bluemarrow Foods", "BLMF", ("Bluemarrow",))]
    assert found(text, watchlist=watch) == [
        ("watchlist", "Velmora Retail", "Velmora Retail"), ("watchlist", "Bluemarrow Foods", "Bluemarrow Foods"),
        ("short", "Velmora", "Velmora Retail"), ("ticker", "$BLMF", "Bluemarrow Foods")]
    assert found("Apple rose.", watchlist=["Apple"]) == [("watchlist", "Apple", "Apple Inc.")]
    with pytest.raises(ValueError, match="at most"):
        find_companies("x", watchlist=["Acme"] * 5000)


def test_mentions_are_sorted_and_do_not_overlap():
    text = "Apple Inc. (NASDAQ: AAPL) and Microsoft (MSFT) rose; NASDAQ: AAPL and Apple again. " * 20
    mentions = find_companies(text)
    assert len(mentions) == 120
    assert all(a.end <= b.start for a, b in zip(mentions, mentions[1:], strict=False))


def test_huge_input_is_bounded_and_fast():
    text = "Intro. " + "Apple rose while IT spending and Harbor Bancorp grew. " * 40_000 + "Zetaquill Corp."  # ~2 MB
    assert len(text) > MAX_CHARS
    start = time.perf_counter()
    mentions = find_companies(text)
    elapsed = time.perf_counter() - start
    assert mentions and max(m.end for m in mentions) <= MAX_CHARS
    assert "Zetaquill Corp." not in company_names(mentions), "the text past the limit is not read"
    assert elapsed < 2.0, f"{elapsed:.2f}s for {MAX_CHARS} characters"


def test_garbage_and_binary_text_returns_a_list():
    rng = random.Random(0)
    garbage = "".join(chr(rng.randrange(0, 0x3000)) for _ in range(50_000))
    assert isinstance(find_companies(garbage), list)
    assert isinstance(find_companies(bytes(range(256)).decode("latin-1") * 100), list)
    assert find_companies("$ $$ NYSE: : .O .L 's & &&& Inc. Corp plc") == []
    with pytest.raises(TypeError):
        find_companies(b"Apple Inc.")
