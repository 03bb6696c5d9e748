"""Companies in financial news: tickers ($AAPL, NASDAQ:AAPL, AAPL.O) and company names, from a bundled alias table.

The table (companies.csv beside this file, provenance in companies.md) is built from pytickersymbols' index members
by `rebuild_table` (`python -m apps.finance_sentiment.companies --rebuild`); the runtime reads only the CSV. Names
match exactly on word boundaries and capitalisation ("apple pie" is no Apple, "Apple" is), longest first, then
fuzzily (rapidfuzz) for close multi-word variants ("Deutsche Telecom"). Companies outside the table are found by a
corporate suffix ("Northwind Logistics Inc.") or a watchlist, and once named in full, by their distinctive first
word ("Northwind"). A bare uppercase word is a ticker only when its company is named in the same text, so "IT",
"ALL" or "A" in prose are no companies.

Does not: resolve descriptions ("the iPhone maker"), read all-caps names ("APPLE SHARES"), tell Title Case headline
words from names ("Apple Pie Sales" holds Apple), or know a company outside the table that carries no suffix. Only
the first MAX_CHARS characters of a text are read.
"""

from __future__ import annotations

import argparse
import csv
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from rapidfuzz import fuzz, process


def _wordset(text: str) -> frozenset[str]:
    """The words of a long string: word lists below read and edit better without quotes around each word."""
    return frozenset(text.split())


TABLE_PATH = Path(__file__).with_name("companies.csv")
MAX_CHARS = 200_000  # of a text that is read; the rest is ignored (a long report's companies are named early)
MAX_WATCHLIST = 1000  # entries
MAX_WATCH_CHARS = 200  # of a watchlist name
MAX_NAME_TOKENS = 8  # the longest alias, in words
FUZZY_CUTOFF = 91  # rapidfuzz ratio (0-100) of a multi-word span to a table name; 88 took "General Electronics"

# Words that end a company's name and say only that it is one; stripped to get the short name ("Apple Inc." ->
# "Apple") and, for an unknown company, the mark that a capitalised run is a company ("Harbor Bancorp").
LEGAL_SUFFIXES = _wordset(
    "Inc Incorporated Corp Corporation Co Company Companies plc PLC AG SE SA S.A NV N.V Ltd Limited LLC L.P LP "
    "Holdings Holding Group AB ASA Oyj Oy S.p.A SpA KGaA GmbH Bhd Bancorp Bancshares")
_ABBREVIATIONS = _wordset("Inc Corp Co Ltd S.A N.V L.P S.p.A Bhd")  # take their closing "."
_SUFFIX_MARKS = LEGAL_SUFFIXES - {"Company", "Companies", "Co", "Holding", "SA", "SE", "AB", "Oy", "NV", "LP"}

# Common English words that are capitalised at a sentence start or in a headline: never a company's one-word short
# name, neither from the table ("News Corp" -> "News") nor from the text ("Harbor" after "Harbor Bancorp").
COMMON_WORDS = _wordset("""
a about above after again against all also american an and any are as at back bank bay be because before best big
black blue both but by can capital central chief city clear common could day did do does down during each east
eastern energy every first five for four from future general global gold golden good great green group growth harbor
harbour has have he her here high his home how however i if in industrial international is it its just key last less
like live low main market may more most national new news next no north northern not now of off old on once one only
open or other our out over pacific park people power premier prime public real red river royal said same she
shares should since so some south southern standard star state states steel still such sun target than that the
their then there these they this those three through to today trade trust two under union united universal up us
very was we well were west western what when where which while white who why will with world would year yet you
""")

# Uppercase words that are tickers of some listed company but far more often just words: never a bare ticker.
FALSE_FRIENDS = _wordset("""
A I AI ALL AM AN ARE AT BE BIG BY CEO CFO COO CPI CTO DO ECB ETF EU EV FED FOR GDP GO HAS HE IF IN IPO IS IT KEY
LOW ME MY NEW NO NOW OF OK ON ONE OR PM SO THE TO UK UN UP US USA USD WE
""")

# Hand-kept aliases for well-known names the index lists do not spell (keyed by the table's canonical name).
EXTRA_ALIASES = {
    "Alphabet Inc.": ("Google",), "Meta Platforms": ("Facebook",), "Volkswagen Group": ("VW",),
    "Mercedes-Benz Group": ("Mercedes", "Daimler"), "Berkshire Hathaway": ("Berkshire",),
    "JPMorgan Chase": ("JPMorgan", "JP Morgan", "J.P. Morgan"), "Procter & Gamble": ("P&G",),
    "Exxon Mobil": ("Exxon", "ExxonMobil"), "Walmart": ("Wal-Mart",), "Johnson & Johnson": ("J&J",),
    "The Walt Disney Company": ("Disney",), "Goldman Sachs": ("Goldman",), "Bank of America": ("BofA",),
    "The Coca-Cola Company": ("Coca-Cola", "Coke"), "McDonald's": ("McDonalds",),
}
# One-word names that name something else as often (an index, a place, a person, a thing): the company is found
# by its longer name only ("Carnival Corporation", "Dover Corporation").
DENIED_ALIASES = _wordset("""
Admiral Alamo Alpha Andersons Ball Bancorp Berkeley Block Booking Box Brady Buckle Cactus Carnival Compass
Continental Cooper Customers Dana Deluxe Disco Douglas Dover Dow Employers Enact Everest Evolution Fox Gates Griffon
Harmonic Hartford Hawkins Hilltop Hub Huntington Indus Integer Interface Investor Lindsay Match Merchants Mosaic
Nasdaq Noble Norma Orange Orion Partners Phoenix Pool Progressive Rational Recruit Rogers Sage Sharp Southside
Stellar Stride Target Travelers Triumph U.S Universal Verve Waters Wiley Williams
""")

_TOKEN = re.compile(r"[^\W_]+(?:[&'’.+\-–][^\W_]+)*|&")
_CASHTAG = re.compile(r"\$([A-Z][A-Z0-9]{0,5}(?:[.\-][A-Z]{1,2})?)\b")
_EXCHANGES = {  # exchange prefix -> the Yahoo suffix its local codes carry in the table ("" for US listings)
    "NASDAQ": "", "NYSE": "", "NYSEARCA": "", "NYSEAMERICAN": "", "AMEX": "", "OTC": "", "OTCMKTS": "",
    "LON": ".L", "LSE": ".L", "ETR": ".DE", "XETRA": ".DE", "FRA": ".F", "EPA": ".PA", "AMS": ".AS", "BME": ".MC",
    "TYO": ".T", "TSE": ".T", "SWX": ".SW", "SIX": ".SW", "EBR": ".BR", "HEL": ".HE", "STO": ".ST", "BIT": ".MI"}
_PREFIXED = re.compile(r"\b(" + "|".join(f"{e}|{e.title()}" for e in _EXCHANGES)  # NASDAQ, Nasdaq
                       + r")\s?:\s?([A-Z0-9]{1,6}(?:[.\-][A-Z]{1,2})?)\b")
_RIC_SUFFIXES = {"O": "", "OQ": "", "N": "", "L": ".L", "DE": ".DE", "PA": ".PA", "AS": ".AS", "MC": ".MC",
                 "T": ".T", "SW": ".SW", "S": ".SW", "BR": ".BR", "HE": ".HE", "ST": ".ST", "MI": ".MI"}
_RIC = re.compile(r"\b([A-Z][A-Z0-9]{0,5}|[0-9]{4})\.(" + "|".join(_RIC_SUFFIXES) + r")\b")
_TITLE_ABBREVIATIONS = _wordset("St Bros Mt Ft Dr")  # "St. Joe", "Warner Bros. Discovery"
_LEADING_NOISE = _wordset("""
The A An On In At For By And But Of To As From With Shares Yesterday Today Monday Tuesday Wednesday Thursday Friday
Saturday Sunday January February March April May June July August September October November December
""")


@dataclass(frozen=True)
class Company:
    name: str  # canonical: the key mentions are grouped by
    ticker: str  # the main listing's symbol, "" when unknown
    aliases: tuple[str, ...] = ()  # other names it goes by ("Apple" for "Apple Inc.")
    tickers: tuple[str, ...] = ()  # other listings' symbols (Yahoo style: "SAP", "SAP.DE")
    country: str = ""


@dataclass(frozen=True)
class Mention:
    company: str  # canonical name (Company.name), the key the rest of the app groups by
    ticker: str  # "" when unknown
    start: int  # character offsets of the surface text in the input
    end: int
    surface: str  # the text as written
    how: str  # "ticker" | "name" | "fuzzy" | "short" | "watchlist" | "suffix"


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: a cache key for its fuzzy index
class CompanyTable:
    companies: tuple[Company, ...]
    by_ticker: dict[str, Company] = field(repr=False)  # every listing symbol -> its company
    by_alias: dict[tuple[str, ...], Company] = field(repr=False)  # an alias's words -> its company
    by_stem: dict[tuple[str, ...], Company] = field(repr=False)  # short names, common words too ("Target")


def words(name: str) -> tuple[str, ...]:
    """The words a name is matched by: punctuation between them dropped, apostrophes straightened."""
    return tuple(t.replace("’", "'") for t in _TOKEN.findall(name))


def short_name(name: str) -> str:
    """`name` without a disambiguation in brackets, a leading "The" or trailing legal suffixes ("Ichor Holdings,
    Ltd." -> "Ichor"); the name itself when nothing would be left."""
    name = re.sub(r"\s*\([^)]*\)", "", name).strip()
    spans = list(_TOKEN.finditer(name))
    lo, hi = int(len(spans) > 1 and spans[0].group() == "The"), len(spans)
    while hi - lo > 1 and (spans[hi - 1].group() in LEGAL_SUFFIXES or spans[hi - 1].group() == "&"):
        hi -= 1
    return name[spans[lo].start():spans[hi - 1].end()] if spans else name


def load_table(path: Path | None = None) -> CompanyTable:
    """The alias table at `path` (the bundled companies.csv by default), read once per path."""
    return _load_table(Path(path or TABLE_PATH))


@lru_cache(maxsize=4)
def _load_table(path: Path) -> CompanyTable:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    companies = tuple(Company(r["name"], r["ticker"], _split(r["aliases"]), _split(r["tickers"]), r["country"])
                      for r in rows)
    stems = {}
    for c in companies:
        stems.setdefault(words(short_name(c.name)), c)
    return CompanyTable(companies, *_indexes(companies), stems)


def _split(cell: str) -> tuple[str, ...]:
    return tuple(s for s in cell.split(";") if s)


def _indexes(companies: Iterable[Company], everything: bool = False
             ) -> tuple[dict[str, Company], dict[tuple[str, ...], Company]]:
    """Symbol -> company and alias words -> company; the first company to claim a key keeps it. One-word names
    that are common words or denied are left out unless `everything` (a watchlist is taken as given)."""
    by_ticker: dict[str, Company] = {}
    by_alias: dict[tuple[str, ...], Company] = {}
    for c in companies:
        for t in (c.ticker, *c.tickers):
            if t:
                by_ticker.setdefault(t, c)
        for a in (c.name, *c.aliases):
            key = words(a)[:MAX_NAME_TOKENS]
            if key and (everything or len(key) > 1 or _distinctive(key[0]) or a in EXTRA_ALIASES.get(c.name, ())):
                by_alias.setdefault(key, c)
    return by_ticker, by_alias


def _distinctive(word: str) -> bool:
    return word not in DENIED_ALIASES and word not in FALSE_FRIENDS and word.lower() not in COMMON_WORDS


def company_names(mentions: Iterable[Mention]) -> list[str]:
    """The companies mentioned, each once, in order of first mention."""
    return list(dict.fromkeys(m.company for m in mentions))


# --- finding mentions -------------------------------------------------------------------------------------------------

class _Text:
    """A text's words with their offsets, and which of them a mention already covers."""

    def __init__(self, text: str):
        self.text = text
        found = [(m.start(), m.end(), m.group().replace("’", "'")) for m in _TOKEN.finditer(text)]
        self.starts = [s for s, _, _ in found]
        self.ends = [e for _, e, _ in found]
        self.words = [w for _, _, w in found]
        self.covered = bytearray(len(found))
        self.mentions: list[Mention] = []

    def joined(self, i: int, comma: bool = False) -> bool:
        """Whether word i+1 follows word i as part of one name: a space or line break, after an initial's dot, or
        after a comma if allowed ("Tesla, Inc.")."""
        gap = self.text[self.ends[i]:self.starts[i + 1]]
        if not 0 < len(gap) <= 3 or gap.isspace():
            return bool(gap)
        word = self.words[i]
        dotted = gap[0] == "." and ("." in word or len(word) == 1 or word in _TITLE_ABBREVIATIONS)  # "U.S. Bancorp"
        return (dotted or comma and gap[0] == ",") and gap[1:].isspace()

    def token_range(self, start: int, end: int) -> range:
        return range(bisect_right(self.ends, start), bisect_left(self.starts, end))

    def add(self, company: Company, start: int, end: int, how: str) -> bool:
        """Record a mention unless a recorded one overlaps it."""
        span = self.token_range(start, end)
        if any(self.covered[span.start:span.stop]):
            return False
        self.covered[span.start:span.stop] = b"\1" * len(span)
        self.mentions.append(Mention(company.name, company.ticker, start, end, self.text[start:end], how))
        return True


def find_companies(text: str, table: CompanyTable | None = None,
                   watchlist: Iterable[str | Company] = ()) -> list[Mention]:
    """The companies `text` mentions, sorted by start and not overlapping: explicit tickers first, then names
    (watchlist, table, suffix), fuzzy variants, and last short forms and bare tickers of companies already named.
    Reads only the first MAX_CHARS characters."""
    if not isinstance(text, str):
        raise TypeError(f"find_companies reads text (str), not {type(text).__name__}")
    table = table or load_table()
    by_ticker, by_alias, watched = _with_watchlist(table, watchlist)
    t = _Text(text[:MAX_CHARS])
    _find_tickers(t, by_ticker)
    _find_names(t, by_alias, watched)
    extra = _find_suffixed(t, by_alias, table.by_stem)
    if extra:
        _find_names(t, extra, set(), how="short")
    _find_fuzzy(t, table)
    _find_followups(t, by_ticker)
    return sorted(t.mentions, key=lambda m: m.start)


def _with_watchlist(table: CompanyTable, watchlist: Iterable[str | Company]
                    ) -> tuple[dict[str, Company], dict[tuple[str, ...], Company], set[int]]:
    """The table's indexes overlaid with the watchlist's names and symbols, and the set of watched companies."""
    entries = list(watchlist)
    if len(entries) > MAX_WATCHLIST:
        raise ValueError(f"a watchlist of {len(entries)} entries; at most {MAX_WATCHLIST}")
    watched: list[Company] = []
    spelled: dict[tuple[str, ...], Company] = {}  # a name as the user wrote it, for a table company too
    for e in entries:
        if isinstance(e, str):
            name = " ".join(e.split())[:MAX_WATCH_CHARS]
            if not (key := words(name)[:MAX_NAME_TOKENS]):
                continue
            e = spelled[key] = table.by_alias.get(key) or Company(name, "")
        watched.append(e)
    if not watched:
        return table.by_ticker, table.by_alias, set()
    by_ticker, by_alias = _indexes(watched, everything=True)
    return table.by_ticker | by_ticker, table.by_alias | by_alias | spelled, {id(c) for c in watched}


def _find_tickers(t: _Text, by_ticker: dict[str, Company]) -> None:
    """Cashtags and exchange-prefixed symbols (a company even when unknown), and RICs of known companies."""
    for m in _CASHTAG.finditer(t.text):
        sym = m.group(1)
        t.add(by_ticker.get(sym) or Company(sym, sym), m.start(), m.end(), "ticker")
    for m in _PREFIXED.finditer(t.text):
        sym, suffix = m.group(2).upper(), _EXCHANGES[m.group(1).upper()]
        company = by_ticker.get(sym + suffix) or by_ticker.get(sym) or Company(sym, sym)
        t.add(company, m.start(), m.end(), "ticker")
    for m in _RIC.finditer(t.text):
        base, suffix = m.groups()
        company = by_ticker.get(base + _RIC_SUFFIXES[suffix]) or by_ticker.get(f"{base}.{suffix}")
        if company:
            t.add(company, m.start(), m.end(), "ticker")


def _find_names(t: _Text, by_alias: dict[tuple[str, ...], Company], watched: set[int], how: str = "name") -> None:
    """Exact aliases, longest first at each word, a trailing legal suffix and possessive "'s" taken along."""
    firsts = {k[0] for k in by_alias}
    n = len(t.words)
    i = 0
    while i < n:
        w = t.words[i]
        if t.covered[i] or (w not in firsts and _unpossessed(w) not in firsts):
            i += 1
            continue
        run = [w]
        while len(run) < MAX_NAME_TOKENS and i + len(run) < n \
                and t.joined(i + len(run) - 1, comma=t.words[i + len(run)] in LEGAL_SUFFIXES):
            run.append(t.words[i + len(run)])
        for k in range(len(run), 0, -1):
            key = tuple(run[:k])
            stripped = key[:-1] + (_unpossessed(key[-1]),)
            company = by_alias.get(key) or by_alias.get(stripped)
            if company is None:
                continue
            j = i + k - 1  # the last word
            end = t.ends[j] - (len(key[-1]) - len(stripped[-1]) if key not in by_alias else 0)
            if end == t.ends[j]:
                while j + 1 < n and t.words[j + 1] in LEGAL_SUFFIXES and t.joined(j, comma=True):
                    j += 1
                    end = t.ends[j]
                if t.words[j] in _ABBREVIATIONS and t.text[end:end + 1] == ".":
                    end += 1
            kind = "watchlist" if id(company) in watched else how
            if t.add(company, t.starts[i], end, kind):
                i = j
            break
        i += 1


def _unpossessed(word: str) -> str:
    return word[:-2] if word.endswith("'s") and len(word) > 2 else word


def _find_suffixed(t: _Text, by_alias: dict, by_stem: dict) -> dict[tuple[str, ...], Company]:
    """Unknown companies: a run of capitalised words that ends in a corporate suffix ("Harbor Bancorp"), unless its
    stem is a table company's ("Target Corp."). Returns their stems of two words or more, to find them again."""
    found: dict[tuple[str, ...], Company] = {}
    n = len(t.words)
    for j, w in enumerate(t.words):
        marks = w in _SUFFIX_MARKS or w == "Co" and j > 0 and t.words[j - 1] == "&"  # "Redfern & Co"
        if not marks or t.covered[j] or j + 1 < n and t.words[j + 1] in LEGAL_SUFFIXES and t.joined(j, comma=True):
            continue  # the last of "Holdings plc" ends the name
        i = j
        while i > 0 and j - i < MAX_NAME_TOKENS - 1 and not t.covered[i - 1] and t.joined(i - 1, comma=True) \
                and (t.words[i - 1][0].isupper() or t.words[i - 1] == "&"):
            i -= 1
        while i < j and (t.words[i] in _LEADING_NOISE or t.words[i] == "&"):
            i += 1
        stem = tuple(t.words[i:j + 1])
        while stem and stem[-1] in LEGAL_SUFFIXES:
            stem = stem[:-1]
        if not stem:
            continue
        end = t.ends[j] + (t.words[j] in _ABBREVIATIONS and t.text[t.ends[j]:t.ends[j] + 1] == ".")
        company = found.get(stem) or by_alias.get(stem) or by_stem.get(stem) \
            or Company(" ".join(t.text[t.starts[i]:end].split()), "")
        if len(stem) > 1:  # a one-word stem is found again as a short form, if it is no common word
            found.setdefault(stem, company)
        t.add(company, t.starts[i], end, "suffix")
    return found


@lru_cache(maxsize=4)
def _fuzzy_blocks(table: CompanyTable) -> dict[str, tuple[list[str], list[Company]]]:
    """The table's multi-word names, lowercased, grouped by their first three letters (the fuzzy match's block)."""
    blocks: dict[str, dict[str, Company]] = {}
    for c in table.companies:
        for a in (c.name, *c.aliases):
            key = _fuzzy_key(words(a))
            if " " in key:
                blocks.setdefault(key[:3], {}).setdefault(key, c)
    return {k: (list(b), list(b.values())) for k, b in blocks.items()}


def _fuzzy_key(toks: tuple[str, ...]) -> str:
    toks = tuple(w for w in toks if w not in LEGAL_SUFFIXES)
    return " ".join("&" if w == "and" else _unpossessed(w).lower() for w in toks)


def _find_fuzzy(t: _Text, table: CompanyTable) -> None:
    """Spans of two to four capitalised words close to a table name ("Deutsche Telecom", "Procter and Gamble")."""
    blocks = _fuzzy_blocks(table)
    n = len(t.words)
    i = 0
    while i < n - 1:
        if t.covered[i] or not t.words[i][0].isupper() or t.words[i] in _LEADING_NOISE:
            i += 1
            continue
        block = blocks.get(t.words[i][:3].lower())
        j = i
        while block and j + 1 < n and j - i < 3 and not t.covered[j + 1] and t.joined(j) \
                and (t.words[j + 1][0].isupper() or t.words[j + 1] in ("&", "and")):
            j += 1
        best = None
        for k in range(j, i, -1):
            hit = process.extractOne(_fuzzy_key(tuple(t.words[i:k + 1])), block[0], scorer=fuzz.ratio,
                                     score_cutoff=FUZZY_CUTOFF)
            if hit:
                best = k, block[1][hit[2]]
                break
        if best:
            k, company = best
            end = t.ends[k] - (len(t.words[k]) - len(_unpossessed(t.words[k])))
            t.add(company, t.starts[i], end, "fuzzy")
            i = k
        i += 1


def _find_followups(t: _Text, by_ticker: dict[str, Company]) -> None:
    """Bare tickers of companies the text names, and after a company's full name, its distinctive first word."""
    named = {m.company: m for m in t.mentions}
    symbols = {s: c for s, c in by_ticker.items() if c.name in named and s.isalpha() and s.isupper()
               and len(s) > 1 and s not in FALSE_FRIENDS}
    first_words: dict[str, list[tuple[int, Mention]]] = {}
    for m in sorted(t.mentions, key=lambda m: m.start):
        toks = words(m.surface)
        if m.how != "ticker" and len(toks) > 1 and len(toks[0]) > 2 and toks[0][0].isupper() \
                and toks[0].lower() not in COMMON_WORDS and toks[0] not in LEGAL_SUFFIXES:
            first_words.setdefault(toks[0], []).append((m.end, m))
    for i, w in enumerate(t.words):
        if t.covered[i]:
            continue
        if w in symbols:
            t.add(symbols[w], t.starts[i], t.ends[i], "ticker")
        elif (base := _unpossessed(w)) in first_words:
            earlier = [m for end, m in first_words[base] if end <= t.starts[i]]
            if earlier:
                m = earlier[-1]
                t.add(Company(m.company, m.ticker), t.starts[i], t.starts[i] + len(base), "short")


# --- building the table -----------------------------------------------------------------------------------------------

def rebuild_table(path: Path = TABLE_PATH) -> int:
    """Write the alias table from pytickersymbols' index members (imported only here) and return its row count:
    one row per company across indices, its listings, and the short names that are not ambiguous."""
    from pytickersymbols import PyTickerSymbols

    source = PyTickerSymbols()
    rows: dict[str, dict] = {}
    for index in source.get_all_indices():
        for stock in source.get_stocks_by_index(index):
            name = re.sub(r"\s*\([^)]*\)", "", stock["name"]).strip()
            row = rows.setdefault(name, {"name": name, "tickers": [], "countries": [], "indices": []})
            row["indices"].append(index)
            row["countries"].append(_country(stock))
            row["tickers"] += _listings(stock)
    claims: dict[str, set[str]] = {}
    for row in rows.values():
        row["tickers"] = list(dict.fromkeys(row["tickers"]))
        row["country"] = max(row["countries"], key=row["countries"].count)  # the index lists disagree at times
        row["ticker"] = row["tickers"][0] if row["tickers"] else ""
        row["aliases"] = _aliases(row["name"])
        for a in row["aliases"]:
            claims.setdefault(a, set()).add(row["name"])
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["name", "ticker", "tickers", "aliases", "country", "indices"])
        for name, row in sorted(rows.items()):
            aliases = [a for a in row["aliases"] if claims[a] == {name} and a not in rows]  # not ambiguous
            out.writerow([name, row["ticker"], ";".join(row["tickers"][1:]), ";".join(aliases), row["country"],
                          ";".join(dict.fromkeys(row["indices"]))])
    return len(rows)


_LISTING_COUNTRIES = {".DE": "Germany", ".PA": "France", ".L": "United Kingdom", ".AS": "Netherlands",
                      ".MC": "Spain", ".T": "Japan", ".SW": "Switzerland", ".BR": "Belgium", ".HE": "Finland",
                      ".ST": "Sweden", ".MI": "Italy"}


def _country(stock: dict) -> str:
    """The main listing's country (the source's own field misplaces a few: Deutsche Telekom in Russia)."""
    symbol = stock.get("symbol") or ""
    if (suffix := symbol[symbol.rfind("."):]) in _LISTING_COUNTRIES:
        return _LISTING_COUNTRIES[suffix]
    country = stock.get("country") or ""
    return "United States" if "," in country else country  # US members carry their headquarters' city, state


def _listings(stock: dict) -> list[str]:
    """The stock's symbols, main one first, without Frankfurt, OTC and London's international order book lines."""
    found = [stock.get("symbol") or ""]
    for s in stock.get("symbols") or ():
        yahoo, google = s.get("yahoo") or "", s.get("google") or ""
        if not (yahoo.endswith((".F", ".ME")) or google.startswith("OTC") or yahoo[:1] == "0" and yahoo.endswith(".L")):
            found.append(yahoo)
        if google.startswith(("NASDAQ:", "NYSE:")):
            found.append(google.split(":", 1)[1])
    return [s for s in found if s]


def _aliases(name: str) -> list[str]:
    """Short name, "and" for "&", and the hand-kept extras; a one-word short name only if it is no common word."""
    short = short_name(name)
    found = [short, short.replace(" & ", " and "), *EXTRA_ALIASES.get(name, ())]
    if name.startswith("The "):
        found.append(name[4:])
    return [a for a in dict.fromkeys(found) if a != name and len(a) > 1
            and (" " in a or _distinctive(a) or a in EXTRA_ALIASES.get(name, ()))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Find companies in a text, or rebuild the bundled alias table.")
    parser.add_argument("--rebuild", action="store_true", help=f"rewrite {TABLE_PATH.name} from pytickersymbols")
    parser.add_argument("text", nargs="?", help="a text to find companies in")
    args = parser.parse_args(argv)
    if args.rebuild:
        print(f"{rebuild_table()} companies written to {TABLE_PATH}")
    if args.text:
        for m in find_companies(args.text):
            print(f"{m.start}-{m.end} {m.how:9} {m.surface!r} -> {m.company} ({m.ticker or '-'})")


if __name__ == "__main__":
    main()
