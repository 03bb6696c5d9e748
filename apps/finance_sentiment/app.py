"""The financial news sentiment app's handlers: news in (pasted, a file, a feed URL, the bundled sample), scored,
stored, listed, explained sentence by sentence, charted per company over time, exported as CSV.

`SentimentApp` holds what every browser session shares (the store, the analyzer, whose classifier loads once) and its
methods are the handlers, on plain data, so tests call them without a server; `apps.finance_sentiment.ui.build_demo`
only wires them to Gradio components. Messages are the web page's: they name its controls, never the command line's.

A scored article is stored with its sentences' details (`scored_json`), so selecting it later shows the same colours
and reasons without scoring it again, and re-reading a file or feed scores only the stories not in the store yet
(found by `timeseries.article_key`). A pasted article is scored again each time (its watchlist may have changed).

Outside text (articles, titles, sources, file names, reasons quoting sentences) is HTML-escaped wherever it becomes
HTML, and bounded before it is scored: the pasted text by MAX_PASTE_CHARS, files by news.MAX_FILE_BYTES, items by
news' own limits, the watchlist by companies.MAX_WATCHLIST.
"""

from __future__ import annotations

import datetime
import html
import json
import math
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from apps.finance_sentiment import news
from apps.finance_sentiment.analysis import Analyzer, Article
from apps.finance_sentiment.companies import LEGAL_SUFFIXES, MAX_WATCH_CHARS, MAX_WATCHLIST, words
from apps.finance_sentiment.timeseries import CompanyScore as StoredCompany
from apps.finance_sentiment.timeseries import (
    DailyPoint,
    SentimentStore,
    StoredArticle,
    article_key,
    company_index,
    export_csv,
)

STORE_FILE = Path("sentiment") / "news.sqlite3"  # under the data dir, as timeseries.default_path()
SAMPLE_CSV = Path(__file__).resolve().parent / "samples" / "news.csv"
ARTICLE_COLUMNS = ["date", "title", "source", "score", "label", "companies"]
MAX_PASTE_CHARS = news.MAX_HTML_CHARS  # pasted text or markup; news cuts the text to MAX_ARTICLE_CHARS with a note
MAX_WATCHLIST_CHARS = MAX_WATCHLIST * (MAX_WATCH_CHARS + 2)
MAX_SHOWN_CHARS = 120  # of a date, URL or half-life as typed, quoted back in a message
TITLE_CELL_CHARS = 140
CHART_COMPANIES = 10  # at most on one chart: more lines are unreadable
DEFAULT_CHART_COMPANIES = 3  # the most named, when none are chosen
DETAILS_VERSION = 1  # of the scored_json written here
NEUTRAL_LABELS = ("neutral", "uncertain")
RGB = {"negative": (220, 38, 38), "positive": (22, 163, 74), "neutral": (115, 115, 115), "uncertain": (115, 115, 115)}
PALETTE = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#2ca02c",
           "#d62728")
EMPTY_VIEW = "<p class='sentiment-empty'>Paste an article, or click one in the table, to see its sentences here.</p>"

Progress = Callable[[float, str], None]  # (fraction done, what is happening)


@dataclass
class Outcome:
    """What adding news did: the status line for the page, whether nothing could be added, the articles added or
    found (their keys, in input order)."""

    status: str
    error: bool = False
    keys: list[str] = field(default_factory=list)


@dataclass
class ArticleTable:
    """The articles table: a row per article (ARTICLE_COLUMNS), newest first; `keys[i]` is row i's article."""

    rows: list[list]
    keys: list[str]
    status: str = ""  # why the filters could not be applied, else ""


@dataclass
class Chart:
    figure: object  # a plotly Figure
    companies: list[str]  # those drawn
    status: str = ""


@dataclass
class Export:
    path: Path | None
    status: str


# --- reading what the page sends ------------------------------------------------------------------------------------

def parse_watchlist(text: str | None) -> list[str]:
    """Company names separated by commas, semicolons or new lines; a piece that is only a legal form ("Inc." of
    "Harbor Bancorp, Inc.") is dropped. ValueError for more than MAX_WATCHLIST names."""
    text = text or ""
    if len(text) > MAX_WATCHLIST_CHARS:
        raise ValueError(f"The watchlist is {len(text):,} characters long; the limit is {MAX_WATCHLIST_CHARS:,}.")
    names = []
    for piece in re.split(r"[,;\n]", text):
        name = " ".join(piece.split())
        if name and not set(words(name)) <= LEGAL_SUFFIXES:
            names.append(name[:MAX_WATCH_CHARS])
    names = list(dict.fromkeys(names))
    if len(names) > MAX_WATCHLIST:
        raise ValueError(f"The watchlist names {len(names)} companies; the limit is {MAX_WATCHLIST}.")
    return names


def parse_day(value: str | None, what: str = "date") -> datetime.date | None:
    """A date as typed (2026-03-04, 4 Mar 2026, ...: news.parse_date), None when empty; ValueError when it is not
    one."""
    value = (value or "").strip()
    if not value:
        return None
    day = news.parse_date(value[:MAX_SHOWN_CHARS])
    if day is None:
        raise ValueError(f"The {what} {value[:MAX_SHOWN_CHARS]!r} is not a date: write it as YYYY-MM-DD.")
    return day


def parse_half_life(value) -> float | None:
    """Days, or None for no decay (empty or 0); ValueError for a negative or non-finite number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        days = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"The half-life {str(value)[:MAX_SHOWN_CHARS]!r} is not a number of days.") from None
    if days == 0:
        return None
    if not 0 < days < math.inf:
        raise ValueError(f"The half-life must be a positive number of days (or 0 for none), not {days:g}.")
    return days


def sentence_case(message: str) -> str:
    return message[:1].upper() + message[1:]


# --- what is stored with an article, and how it is shown ------------------------------------------------------------

def clip(value: float, low: float = -1.0, high: float = 1.0) -> float:
    """Into the store's range: a weighted mean of values in range can leave it by a rounding error."""
    return min(high, max(low, float(value)))


def details_json(article: Article, item: news.NewsItem, watchlist: list[str]) -> str:
    """The sentences, companies and notes of a scored article, for `article_html` (the store keeps it opaque)."""
    sentences = []
    previous_end = None
    for index, sentence in enumerate(article.sentences):
        headline = bool(article.title) and index == 0
        paragraph = not headline and (previous_end is None or "\n" in article.text[previous_end:sentence.start])
        if not headline:
            previous_end = sentence.end
        sentences.append({"text": sentence.text, "label": sentence.label, "probabilities": sentence.probabilities,
                          "score": sentence.score, "confidence": sentence.confidence, "reasons": sentence.reasons,
                          "companies": sentence.companies, "weight": sentence.weight, "headline": headline,
                          "paragraph": paragraph})
    return json.dumps({"version": DETAILS_VERSION, "title": article.title, "score": article.score,
                       "label": article.label, "confidence": article.confidence, "sources": item.sources,
                       "url": item.url, "watchlist": watchlist, "notes": [*item.notes, *article.notes],
                       "sentences": sentences, "companies": [asdict(c) for c in article.companies]},
                      ensure_ascii=False)


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def colour(label: str, confidence: float) -> str:
    """A sentence's background: red, grey or green by its label, more opaque the more confident (1/3, a uniform
    guess, is the faintest)."""
    r, g, b = RGB.get(label, RGB["neutral"])
    strength = clip((confidence - 1 / 3) / (2 / 3), 0.0, 1.0)
    alpha = (0.06 + 0.2 * strength) if label in NEUTRAL_LABELS else (0.12 + 0.5 * strength)
    return f"rgba({r}, {g}, {b}, {alpha:.2f})"


def probabilities_text(probabilities: dict) -> str:
    return ", ".join(f"{name} {float(p):.2f}" for name, p in probabilities.items())


def explanation(sentence: dict) -> str:
    """A sentence's outcome in words: the hover text and the line of the details list (plain text)."""
    parts = [f"{sentence['label']} ({float(sentence['confidence']):.0%} sure), score {float(sentence['score']):+.2f}",
             f"probabilities: {probabilities_text(sentence['probabilities'])}"]
    parts += sentence.get("reasons") or ["no rule or lexicon word fired: the classifier's reading alone"]
    if sentence.get("companies"):
        parts.append("names " + ", ".join(sentence["companies"]))
    return "; ".join(parts)


def source_names(source: str) -> str:
    """The stored sources ("name <url>" per line) as the table shows them: the names, once each."""
    names = (re.sub(r"\s*<[^<>]*>$", "", line).strip() for line in source.split("\n"))
    return ", ".join(dict.fromkeys(name for name in names if name))


def _score_span(score: float, label: str) -> str:
    return (f"<span class='sentiment-score' style='background-color: {colour(label, 0.5 + abs(score) / 2)}'>"
            f"{score:+.2f} {_e(label)}</span>")


def article_html(stored: StoredArticle, details: dict) -> str:
    """The article's view: its score, each company's score with its reason, the text with every sentence coloured by
    sentiment (its explanation on hover), and the list of explanations. All outside text is escaped."""
    sentences = details.get("sentences", [])
    meta = [stored.date.isoformat() if stored.date else "undated", source_names(stored.source)]
    parts = [f"<div class='sentiment-article'><h3>{_e(stored.title or 'Untitled')}</h3>",
             f"<p class='sentiment-meta'>{_e(' · '.join(m for m in meta if m))} · article "
             f"{_score_span(stored.score, stored.label)}</p>"]
    companies = details.get("companies", [])
    if companies:
        parts.append("<table class='sentiment-companies'><thead><tr><th>company</th><th>score</th><th>sentences</th>"
                     "<th>reason</th></tr></thead><tbody>")
        for c in companies:
            name = c["company"] + (f" ({c['ticker']})" if c.get("ticker") else "")
            parts.append(f"<tr><td>{_e(name)}</td><td>{_score_span(float(c['score']), c['label'])}</td>"
                         f"<td>{int(c['sentences'])}</td><td>{_e(c['reason'])}</td></tr>")
        parts.append("</tbody></table>")
    else:
        parts.append("<p class='sentiment-meta'>No company found: add names to the watchlist and paste it again.</p>")
    parts.append("<div class='sentiment-text'>")
    body_open = False
    for number, s in enumerate(sentences, start=1):
        span = (f"<span class='sentiment-sentence sentiment-{_e(s['label'])}' data-label='{_e(s['label'])}' "
                f"style='background-color: {colour(s['label'], float(s['confidence']))}' "
                f"title='{_e(explanation(s))}'>{_e(s['text'])}<sup>{number}</sup></span>")
        if s.get("headline"):
            parts.append(f"<p class='sentiment-headline'>{span}</p>")
            continue
        if s.get("paragraph") or not body_open:
            parts.append(("</p>" if body_open else "") + "<p>")
            body_open = True
        parts.append(span + " ")
    parts.append(("</p>" if body_open else "") + "</div>")
    parts.append(f"<details class='sentiment-explanations' open><summary>Why: each sentence's label, probabilities "
                 f"and reasons ({len(sentences)})</summary><ol>")
    parts += [f"<li><span class='sentiment-sentence' style='background-color: "
              f"{colour(s['label'], float(s['confidence']))}'>{_e(s['text'])}</span><br>{_e(explanation(s))}</li>"
              for s in sentences]
    parts.append("</ol></details>")
    notes = details.get("notes") or []
    if notes:
        parts.append("<p class='sentiment-meta'>Notes: " + _e("; ".join(notes)) + "</p>")
    return "".join(parts) + "</div>"


# --- the app --------------------------------------------------------------------------------------------------------

class SentimentApp:
    def __init__(self, store: SentimentStore | str | Path | None = None, analyzer: Analyzer | None = None):
        """`store`: a SentimentStore, or the data dir whose STORE_FILE to open (None: env LLMKIT_HOME, else the
        user's data dir). `analyzer`: default, the shipped classifier (loaded on first use: see `warm_up`)."""
        if not isinstance(store, SentimentStore):
            store = SentimentStore(Path(store).expanduser() / STORE_FILE if store is not None else None)
        self.store = store
        self.analyzer = analyzer or Analyzer()

    def warm_up(self) -> None:
        """Load the classifier (the first time: export its int8 ONNX, ~30 s) before the first user waits for it."""
        self.analyzer.score(["Operating profit rose to EUR 13.1 mn from EUR 8.7 mn."])

    # --- news in ------------------------------------------------------------------------------------------------

    def add_text(self, text: str | None, watchlist: str | None = "", date: str | None = "") -> Outcome:
        """Score a pasted article (HTML is converted; a short first line without a full stop is its title), store it
        under `date` (optional), and say what was found."""
        text = text or ""
        if len(text) > MAX_PASTE_CHARS:
            return Outcome(f"The text is {len(text):,} characters long; the limit is {MAX_PASTE_CHARS:,}. Paste one "
                           "article, or upload a file.", error=True)
        if not text.strip():
            return Outcome("Paste an article first.", error=True)
        try:
            names = parse_watchlist(watchlist)
            day = parse_day(date)
            item = news.from_text(text)
        except ValueError as e:  # news.NewsInputError too
            return Outcome(sentence_case(str(e)), error=True)
        item.date = day
        try:
            key, stored = self._score(item, names)
        except Exception as e:  # whatever broke, the page shows a line, not a trace
            return Outcome(f"Could not score the article: {str(e)[:200]}", error=True)
        companies = "; ".join(f"{c.company} {c.score:+.2f}" for c in stored.companies) or "no company found"
        notes = f" Notes: {'; '.join(item.notes)}." if item.notes else ""
        return Outcome(f"Scored “{stored.title}”: {stored.score:+.2f} ({stored.label}); {companies}.{notes}",
                       keys=[key])

    def add_file(self, path: str | Path, watchlist: str | None = "", progress: Progress | None = None) -> Outcome:
        """Read a CSV, JSONL, RSS/Atom, HTML or text file (news.read_file: bounded, bad rows skipped), merge syndicated
        copies and score each story not in the store yet."""
        try:
            names = parse_watchlist(watchlist)
            report = news.read_file(path)
        except ValueError as e:  # its message starts with the file's name, as it is spelled
            return Outcome(str(e), error=True)
        return self._add_report(Path(path).name[:news.MAX_NAME_CHARS], report, names, progress)

    def add_feed(self, url: str | None, watchlist: str | None = "", progress: Progress | None = None) -> Outcome:
        """Fetch an RSS/Atom feed from an http(s) URL (bounded in size and time) and score its new stories."""
        url = (url or "").strip()
        if not url:
            return Outcome("Type a feed's URL first.", error=True)
        if not re.match(r"https?://", url, re.IGNORECASE):  # never a path: read_feed reads files too
            return Outcome(f"{url[:MAX_SHOWN_CHARS]!r} is not a web address: give one starting with http:// or "
                           "https://.", error=True)
        try:
            names = parse_watchlist(watchlist)
            report = news.read_feed(url)
        except ValueError as e:  # its message starts with the URL
            return Outcome(str(e), error=True)
        return self._add_report(url[:news.MAX_NAME_CHARS], report, names, progress)

    def load_sample(self, progress: Progress | None = None) -> Outcome:
        """The bundled fictional news (samples/news.csv), so the chart has something to show."""
        return self.add_file(SAMPLE_CSV, "", progress)

    def _add_report(self, name: str, report: news.ReadReport, watchlist: list[str],
                    progress: Progress | None) -> Outcome:
        items = news.merge_duplicates(report.items)
        merged = len(report.items) - len(items)
        keys, failed, known, scored = [], [], 0, 0
        for number, item in enumerate(items):
            if progress:
                progress(number / len(items), f"Scoring {number + 1} of {len(items)}")
            key = article_key(item.title, item.text, item.url)
            if self.store.get(key) is not None:
                known += 1
                keys.append(key)
                continue
            try:
                keys.append(self._score(item, watchlist)[0])
                scored += 1
            except Exception as e:  # one story's failure stays in that story: the rest are scored
                failed.append(f"“{(item.title or item.text)[:60]}”: {str(e)[:120]}")
        if progress:
            progress(1.0, "Done")
        lines = [f"{name}: {len(report.items)} item{'s' if len(report.items) != 1 else ''} read"
                 + (f", {merged} syndicated cop{'ies' if merged != 1 else 'y'} merged" if merged else "")
                 + f"; {scored} scored, {known} already in the store."]
        if report.skipped:
            lines.append(f"Skipped {len(report.skipped)}: " + "; ".join(report.skipped[:5])
                         + ("; …" if len(report.skipped) > 5 else ""))
        if failed:
            lines.append(f"Failed {len(failed)}: " + "; ".join(failed[:5]) + ("; …" if len(failed) > 5 else ""))
        item_notes = [f"“{(item.title or item.text)[:40]}”: {note}" for item in items for note in item.notes]
        notes = [*report.notes, *item_notes]
        if notes:
            lines.append("Notes: " + "; ".join(notes[:5]) + ("; …" if len(notes) > 5 else ""))
        return Outcome("\n".join(lines), error=not keys, keys=keys)

    def _score(self, item: news.NewsItem, watchlist: list[str]) -> tuple[str, StoredArticle]:
        article = self.analyzer.article(item.text, item.title, watchlist)
        key = article_key(item.title, item.text, item.url)
        title = item.title or (article.sentences[0].text if article.sentences else "")
        stored = StoredArticle(
            key, title[:news.MAX_TITLE_CHARS], item.date, "\n".join(item.sources), item.url, clip(article.score),
            article.label, tuple(StoredCompany(c.company, clip(c.score), clip(c.confidence, 0.0), c.sentences)
                                 for c in article.companies))
        self.store.put(stored, details_json(article, item, watchlist))
        return key, stored

    # --- what the page shows --------------------------------------------------------------------------------------

    def companies(self) -> list[str]:
        """The companies in the store, most named first."""
        return [name for name, _ in self.store.companies()]

    def articles(self, company: str | None = "", start: str | None = "", end: str | None = "") -> ArticleTable:
        """The table, newest first (undated articles, pasted ones, first): those naming `company` (all when empty),
        dated within [start, end] when given."""
        try:
            first, last = parse_day(start, "start date"), parse_day(end, "end date")
        except ValueError as e:
            return ArticleTable([], [], str(e))
        found = list(reversed(self.store.articles(company or None, first, last)))
        rows = [[a.date.isoformat() if a.date else "", _cut(a.title, TITLE_CELL_CHARS), source_names(a.source),
                 f"{a.score:+.2f}", a.label,
                 "; ".join(f"{c.company} {c.score:+.2f}" for c in a.companies)] for a in found]
        return ArticleTable(rows, [a.key for a in found])

    def article_view(self, key: str | None) -> str:
        """The HTML of a stored article (its sentences coloured, its companies' scores), from the store's details:
        nothing is scored again."""
        stored = self.store.get(key) if key else None
        if stored is None:
            return EMPTY_VIEW
        try:
            details = json.loads(self.store.details(key) or "{}")
        except ValueError:
            details = {}
        if details.get("version") != DETAILS_VERSION:
            details = {"notes": ["this article was stored without its sentences' details: load it again to see them"]}
        return article_html(stored, details)

    def chart(self, companies: list[str] | None = None, half_life=None, start: str | None = "",
              end: str | None = "") -> Chart:
        """Each company's daily index (timeseries.company_index): its mean line, the 95% interval of each day's
        mean, the count of mentions on hover and as the marker's size. Without companies chosen, the
        DEFAULT_CHART_COMPANIES most named."""
        import plotly.graph_objects as go  # here: only the chart needs it

        figure = go.Figure()
        figure.update_layout(yaxis={"range": [-1.05, 1.05], "title": "sentiment (mean score)", "zeroline": True},
                             xaxis={"title": "day"}, hovermode="closest", margin={"l": 50, "r": 20, "t": 40, "b": 40},
                             legend={"orientation": "h", "y": 1.12}, template="plotly_white", height=420)
        try:
            days = parse_half_life(half_life)
            first, last = parse_day(start, "start date"), parse_day(end, "end date")
        except ValueError as e:
            return Chart(_empty(figure, str(e)), [], str(e))
        names = list(dict.fromkeys(companies or self.companies()[:DEFAULT_CHART_COMPANIES]))
        status = ""
        if len(names) > CHART_COMPANIES:
            status = f"Showing the first {CHART_COMPANIES} of the {len(names)} companies chosen."
            names = names[:CHART_COMPANIES]
        drawn = []
        for n, name in enumerate(names):
            points = company_index(self.store, name, first, last, days)
            if points:
                _add_series(figure, name, points, PALETTE[n % len(PALETTE)])
                drawn.append(name)
        if not drawn:
            message = ("No dated articles about these companies yet: load the sample news, or a CSV or feed with "
                       "dates." if names else "No companies yet: load the sample news, or a CSV or feed with dates.")
            return Chart(_empty(figure, message), [], message)
        decay = f", half-life {days:g} days" if days else ""
        figure.update_layout(title={"text": f"Daily sentiment index{decay}", "x": 0.01, "font": {"size": 15}})
        return Chart(figure, drawn, status)

    def export(self, companies: list[str] | None = None, half_life=None, start: str | None = "",
               end: str | None = "") -> Export:
        """The daily index of the chosen companies (all, when none are chosen) as a CSV file in a new temp folder:
        company, date, count, mean, low, high."""
        try:
            days = parse_half_life(half_life)
            first, last = parse_day(start, "start date"), parse_day(end, "end date")
        except ValueError as e:
            return Export(None, str(e))
        names = list(dict.fromkeys(companies or self.companies()))
        if not names:
            return Export(None, "Nothing to export yet: add some news first.")
        series = {name: company_index(self.store, name, first, last, days) for name in names}
        path = Path(tempfile.mkdtemp(prefix="llmkit-sentiment-")) / "sentiment-index.csv"
        export_csv(series, path)
        rows = sum(len(points) for points in series.values())
        return Export(path, f"Exported {rows} daily point{'s' if rows != 1 else ''} of {len(names)} "
                            f"compan{'ies' if len(names) != 1 else 'y'}.")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _add_series(figure, name: str, points: list[DailyPoint], line_colour: str) -> None:
    """The company's mean per day, its 95% interval as whiskers and the mentions as the marker's size. A day whose
    interval is all of [-1, 1] (a single mention: no spread to measure) has no whisker, and its hover says why: a
    band spanning the whole chart would hide the days that have one."""
    import plotly.graph_objects as go

    informative = [not (p.low <= -1.0 and p.high >= 1.0) for p in points]
    band = [f"{p.low:+.2f} to {p.high:+.2f}" if shown else "none (one mention)"
            for p, shown in zip(points, informative, strict=True)]
    figure.add_trace(go.Scatter(
        x=[p.day for p in points], y=[p.mean for p in points], mode="lines+markers", name=name,
        line={"color": line_colour, "width": 2},
        marker={"size": [6 + 3 * math.sqrt(p.count) for p in points], "color": line_colour},
        error_y={"type": "data", "symmetric": False, "color": line_colour, "thickness": 1.2, "width": 4,
                 "array": [p.high - p.mean if shown else 0 for p, shown in zip(points, informative, strict=True)],
                 "arrayminus": [p.mean - p.low if shown else 0 for p, shown in zip(points, informative, strict=True)]},
        customdata=[[p.count, text] for p, text in zip(points, band, strict=True)],
        hovertemplate=("<b>%{fullData.name}</b><br>%{x|%d %b %Y}: mean %{y:+.2f}<br>95% interval %{customdata[1]}"
                       "<br>%{customdata[0]} mention(s)<extra></extra>")))


def _empty(figure, message: str):
    figure.add_annotation(text=_e(message), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return figure
