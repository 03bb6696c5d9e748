"""Scored articles kept in SQLite, and each company's daily sentiment index computed from them (issue 15).

A feed is re-read often: an article already scored is found by `article_key` (the sha256 of its normalised title,
text and URL) and shown from the store, not scored again. The store (`<LLMKIT_HOME>/sentiment/news.sqlite3` unless
given a path) holds one row per article, its per-company scores, and the scorer's per-sentence details as an opaque
JSON string for the UI. The file's `PRAGMA application_id` marks it as ours and `PRAGMA user_version` is its schema
version. Several connections may use one file: WAL lets readers go on while one writes; each put is one transaction.

The index (`daily_index`) has one point per day with mentions: how many, their confidence-weighted mean score and a
95% band for that mean; with a half-life, the mean runs over all mentions so far, older ones decayed. Articles
without a date are stored and listed, but left out of every index: they have no day to fall on.

Does not: score text or find the companies an article names (the other modules of this app do), order writers
beyond SQLite's locking (the last put of a key wins), or migrate a store of another schema version (it refuses it).
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import math
import sqlite3
import threading
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from core.settings import data_dir
from core.sqlite import immediate_transaction, set_wal

SCHEMA_VERSION = 1  # PRAGMA user_version
APPLICATION_ID = 0x4C4B4653  # PRAGMA application_id, "LKFS": an llmkit finance-sentiment store
BUSY_SECONDS = 30.0  # how long a statement waits for another connection's write (as in rag.store)
Z_95 = 1.96  # the band is mean ± Z_95 standard errors
CSV_COLUMNS = ("company", "date", "count", "mean", "low", "high")
_SCHEMA = """
CREATE TABLE articles (
    key TEXT PRIMARY KEY,          -- article_key(): sha256 hex
    title TEXT NOT NULL,
    day TEXT,                      -- ISO 8601 date, NULL when the article has none
    source TEXT NOT NULL,
    url TEXT NOT NULL,
    score REAL NOT NULL,
    label TEXT NOT NULL,
    details TEXT NOT NULL          -- the scorer's per-sentence JSON, opaque here
);
CREATE TABLE mentions (
    key TEXT NOT NULL REFERENCES articles(key) ON DELETE CASCADE,
    position INTEGER NOT NULL,     -- the order of StoredArticle.companies
    company TEXT NOT NULL,
    score REAL NOT NULL,
    confidence REAL NOT NULL,
    sentences INTEGER NOT NULL,
    PRIMARY KEY (key, position),
    UNIQUE (key, company)
);
CREATE INDEX mentions_by_company ON mentions(company);
CREATE INDEX articles_by_day ON articles(day);
"""


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:  # NaN fails too
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class CompanyScore:
    """One company's sentiment in one article: score = p(positive) - p(negative), averaged over its sentences."""

    company: str
    score: float  # [-1, 1]
    confidence: float  # [0, 1]: the weight of this mention in the index
    sentences: int  # how many sentences about the company were scored

    def __post_init__(self):
        _check_range("score", self.score, -1.0, 1.0)
        _check_range("confidence", self.confidence, 0.0, 1.0)
        if self.sentences < 0:
            raise ValueError(f"sentences must be >= 0, got {self.sentences!r}")


@dataclass(frozen=True)
class StoredArticle:
    key: str  # article_key(title, text, url)
    title: str
    date: datetime.date | None  # None: kept and listed, but in no daily index
    source: str
    url: str
    score: float  # the whole article's, [-1, 1]
    label: str
    companies: tuple[CompanyScore, ...]

    def __post_init__(self):
        if isinstance(self.date, datetime.datetime):
            raise ValueError(f"date must be a datetime.date, got the datetime {self.date}: pass its .date()")
        _check_range("score", self.score, -1.0, 1.0)
        object.__setattr__(self, "companies", tuple(self.companies))
        names = [c.company for c in self.companies]
        if len(set(names)) != len(names):
            raise ValueError(f"article {self.key}: a company is listed twice in {names}")


@dataclass(frozen=True)
class DailyPoint:
    day: datetime.date
    count: int  # mentions on this day (with decay too)
    mean: float  # the weighted mean score, [-1, 1]
    low: float  # the 95% band of the mean, clipped to [-1, 1]; [-1, 1] when one mention is all there is
    high: float


def _normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _normalise_url(url: str) -> str:
    """Without the fragment and utm_* tracking parameters, which a feed may vary between reads of one article."""
    parts = urlsplit(url.strip())
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not k.lower().startswith("utm_")]
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, urlencode(query), ""))


def article_key(title: str, text: str, url: str = "") -> str:
    """The sha256 hex of the article's normalised title, text and URL (Unicode NFKC, runs of whitespace as one
    space): the same article read again from a feed has the same key; an edited one is a new article."""
    content = json.dumps([_normalise(title), _normalise(text), _normalise_url(url)], ensure_ascii=False)
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def default_path() -> Path:
    return data_dir() / "sentiment" / "news.sqlite3"


class SentimentStoreError(ValueError):
    """The file is not a sentiment store this llmkit reads: damaged, another program's, or another version."""


class SentimentStore:
    """Scored articles by key. Any thread may use one store (a web app's workers do): a lock serialises them."""

    def __init__(self, path: Path | None = None):
        """Open the store at `path` (default: `default_path()`), creating it and its folder when missing.

        A file that is not SQLite, or is another program's, or another schema version, raises SentimentStoreError
        naming it; a locked one, sqlite3.OperationalError naming it.
        """
        self.path = Path(path) if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # Autocommit mode: every transaction is an explicit BEGIN ... COMMIT (core.sqlite.immediate_transaction).
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_SECONDS)
        try:
            with self._using() as db:
                set_wal(db, self.path, BUSY_SECONDS)
                # NORMAL, not FULL: a power cut may lose the last puts, which a re-read of the feed scores again.
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA foreign_keys=ON")
                self._create_or_check()
        except sqlite3.OperationalError as e:  # locked, or cannot be opened: the file itself may be fine
            self._db.close()
            raise sqlite3.OperationalError(f"{self.path}: {e}") from e
        except BaseException:
            self._db.close()
            raise

    @contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        """The connection, for one thread at a time; a damaged file raises SentimentStoreError naming it."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.DatabaseError as e:
                if type(e) is not sqlite3.DatabaseError:  # its subclasses: locked, constraint, misuse
                    raise
                raise SentimentStoreError(f"{self.path} is not a readable SQLite file ({e}): move it away, and a "
                                          "new store is created in its place (its articles are scored again)") from e

    def _create_or_check(self) -> None:
        """Create the schema in an empty file (two connections creating one store: the second finds it done)."""
        if self._db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0:
            with immediate_transaction(self._db) as db:
                if db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        application_id = self._db.execute("PRAGMA application_id").fetchone()[0]
        if application_id != APPLICATION_ID:
            raise SentimentStoreError(f"{self.path} is an SQLite file of another program (application_id "
                                      f"{application_id}), not an llmkit sentiment store: give another path")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise SentimentStoreError(f"{self.path} is a sentiment store of schema version {version}; this llmkit "
                                      f"reads version {SCHEMA_VERSION}: upgrade llmkit, or move the file away")

    def put(self, article: StoredArticle, scored_json: str = "") -> None:
        """Store the article under its key, replacing what that key held: putting one article twice stores it once.
        `scored_json` (JSON, or "") holds the per-sentence details that `details(key)` gives back."""
        if scored_json:
            json.loads(scored_json)  # a ValueError here, not a broken page in the UI later
        row = (article.key, article.title, article.date.isoformat() if article.date else None, article.source,
               article.url, article.score, article.label, scored_json)
        mentions = [(article.key, i, c.company, c.score, c.confidence, c.sentences)
                    for i, c in enumerate(article.companies)]
        with self._using(), immediate_transaction(self._db) as db:
            db.execute("INSERT INTO articles (key, title, day, source, url, score, label, details) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET title = excluded.title, "
                       "day = excluded.day, source = excluded.source, url = excluded.url, score = excluded.score, "
                       "label = excluded.label, details = excluded.details", row)
            db.execute("DELETE FROM mentions WHERE key = ?", (article.key,))
            db.executemany("INSERT INTO mentions VALUES (?, ?, ?, ?, ?, ?)", mentions)

    def get(self, key: str) -> StoredArticle | None:
        found = self._select("a.key = ?", [key])
        return found[0] if found else None

    def details(self, key: str) -> str:
        """The scored_json given to `put` for this key; KeyError when no article has it."""
        with self._using() as db:
            row = db.execute("SELECT details FROM articles WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(f"no article with key {key!r} in {self.path}")
        return row[0]

    def articles(self, company: str | None = None, start: datetime.date | None = None,
                 end: datetime.date | None = None) -> list[StoredArticle]:
        """Articles naming `company` (exactly), dated within [start, end] (both included), oldest first, undated
        ones last; with `start` or `end` given, undated articles are left out."""
        conditions, params = ["1"], []
        if company is not None:
            conditions.append("a.key IN (SELECT key FROM mentions WHERE company = ?)")
            params.append(company)
        if start is not None:
            conditions.append("a.day >= ?")
            params.append(start.isoformat())
        if end is not None:
            conditions.append("a.day <= ?")
            params.append(end.isoformat())
        return self._select(" AND ".join(conditions), params)

    def _select(self, where: str, params: list) -> list[StoredArticle]:
        """Articles with their companies, read in one statement (one consistent view)."""
        with self._using() as db:
            rows = db.execute(
                "SELECT a.key, a.title, a.day, a.source, a.url, a.score, a.label, "
                "m.company, m.score, m.confidence, m.sentences "
                f"FROM articles a LEFT JOIN mentions m ON m.key = a.key WHERE {where} "
                "ORDER BY a.day IS NULL, a.day, a.rowid, m.position", params).fetchall()
        grouped: dict[str, tuple[tuple, list[CompanyScore]]] = {}
        for row in rows:
            head, mention = row[:7], row[7:]
            companies = grouped.setdefault(head[0], (head, []))[1]
            if mention[0] is not None:
                companies.append(CompanyScore(*mention))
        return [StoredArticle(key, title, datetime.date.fromisoformat(day) if day else None, source, url, score,
                              label, tuple(companies))
                for (key, title, day, source, url, score, label), companies in grouped.values()]

    def companies(self) -> list[tuple[str, int]]:
        """(company, articles naming it), most named first, then by name."""
        with self._using() as db:
            return db.execute("SELECT company, COUNT(*) AS n FROM mentions GROUP BY company "
                                    "ORDER BY n DESC, company").fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SentimentStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class _Moments:
    """Running sums over mentions: Σw, Σw², Σws, Σws². Enough for a weighted mean and its standard error."""

    w: float = 0.0
    w2: float = 0.0
    ws: float = 0.0
    ws2: float = 0.0

    def add(self, score: float, weight: float) -> None:
        self.w += weight
        self.w2 += weight * weight
        self.ws += weight * score
        self.ws2 += weight * score * score

    def scaled(self, factor: float) -> _Moments:
        """Every weight times `factor`."""
        return _Moments(self.w * factor, self.w2 * factor * factor, self.ws * factor, self.ws2 * factor)


def _point(day: datetime.date, count: int, m: _Moments) -> DailyPoint:
    mean = min(1.0, max(-1.0, m.ws / m.w))
    n_eff = m.w * m.w / m.w2  # Kish's effective sample size
    if n_eff < 1 + 1e-9:
        # One mention (or one that outweighs the rest to rounding): no spread to measure, so the honest band is all
        # a score can be. A narrow one would claim certainty from a single sentence.
        return DailyPoint(day, count, mean, -1.0, 1.0)
    # The unbiased variance for reliability weights: the sample variance (n - 1) when all weights are equal.
    variance = max(m.ws2 - m.w * mean * mean, 0.0) / (m.w - m.w2 / m.w)
    half = Z_95 * math.sqrt(variance / n_eff)
    return DailyPoint(day, count, mean, max(-1.0, mean - half), min(1.0, mean + half))


def daily_index(points: Iterable[tuple[datetime.date, float, float]],
                half_life_days: float | None = None) -> list[DailyPoint]:
    """One DailyPoint per day with mentions, oldest first, from (day, score, weight) per mention.

    Without a half-life, a day's mean is the weighted mean of its mentions' scores; with `half_life_days` h, the
    weighted mean over every mention up to and including the day, each weight times 0.5 ** (days ago / h). The
    band is mean ± 1.96 standard errors: the weighted standard deviation over sqrt(effective n), effective
    n = (Σw)² / Σw², clipped to [-1, 1]; [-1, 1] when effective n is 1. Weights that are all zero (or decayed to
    nothing) count as equal weights.
    """
    if half_life_days is not None and not 0 < half_life_days < math.inf:
        raise ValueError(f"half_life_days must be a positive number, got {half_life_days!r}")
    by_day: dict[datetime.date, list[tuple[float, float]]] = defaultdict(list)
    for day, score, weight in points:
        if isinstance(day, datetime.datetime) or not isinstance(day, datetime.date):
            raise ValueError(f"day must be a datetime.date, got {day!r}")
        _check_range("score", score, -1.0, 1.0)
        if not 0 <= weight < math.inf:
            raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
        by_day[day].append((score, weight))
    index: list[DailyPoint] = []
    weighted, equal, last = _Moments(), _Moments(), None
    for day in sorted(by_day):
        # Without a half-life nothing carries from one day to the next.
        carry = 0.0 if half_life_days is None or last is None else 0.5 ** ((day - last).days / half_life_days)
        weighted, equal = weighted.scaled(carry), equal.scaled(carry)
        for score, weight in by_day[day]:
            weighted.add(score, weight)
            equal.add(score, 1.0)
        index.append(_point(day, len(by_day[day]), weighted if weighted.w2 > 0 else equal))
        last = day
    return index


def company_index(store: SentimentStore, company: str, start: datetime.date | None = None,
                  end: datetime.date | None = None, half_life_days: float | None = None) -> list[DailyPoint]:
    """`daily_index` of the company's mentions in the store's dated articles, weighted by confidence, for days
    in [start, end]. With a half-life, mentions before `start` still carry into it: a day's value does not depend on
    where the window begins."""
    since = start if half_life_days is None else None
    points = [(article.date, c.score, c.confidence) for article in store.articles(company, since, end)
              if article.date is not None for c in article.companies if c.company == company]
    return [p for p in daily_index(points, half_life_days) if start is None or p.day >= start]


def _text_cell(text: str) -> str:
    """A company name as a CSV cell a spreadsheet shows as text: one starting like a formula gets a quote mark."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def export_csv(store_or_points: SentimentStore | Mapping[str, Sequence[DailyPoint]], out: TextIO | Path,
               companies: list[str] | None = None, half_life_days: float | None = None) -> None:
    """Write CSV_COLUMNS, one row per company per day, to a text stream or a file (UTF-8).

    From a store: the index of each of `companies` (default: all, most named first), with `half_life_days`. From
    indexes already computed (company -> points): those of `companies` (default: all), as they are.
    """
    if isinstance(store_or_points, SentimentStore):
        store = store_or_points
        names = companies if companies is not None else [name for name, _ in store.companies()]
        series = {name: company_index(store, name, half_life_days=half_life_days) for name in names}
    else:
        if half_life_days is not None:
            raise ValueError("half_life_days applies to a store's articles; these points are an index already")
        names = companies if companies is not None else list(store_or_points)
        series = {name: store_or_points.get(name, ()) for name in names}
    if isinstance(out, Path):
        with out.open("w", newline="", encoding="utf-8") as f:
            _write_csv(f, series)
    else:
        _write_csv(out, series)


def _write_csv(out: TextIO, series: Mapping[str, Sequence[DailyPoint]]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for name, points in series.items():
        for p in points:
            writer.writerow([_text_cell(name), p.day.isoformat(), p.count, f"{p.mean:.6f}", f"{p.low:.6f}",
                             f"{p.high:.6f}"])
