"""Read financial news in: pasted text, CSV and JSONL files, RSS/Atom feeds, HTML pages; merge syndicated copies.

Every reader returns a `ReadReport`: the `NewsItem`s it read, the items it skipped with the reason ("row 7: no
text") and notes on what it changed (a text truncated, bytes that were not UTF-8). A bad item is skipped and the
rest of the file is read; a bad *file* (missing, empty, binary, too big, not what its suffix says, no item in it)
raises `NewsInputError`, one line naming the file and the problem. Outside text stays text, and is bounded
(MAX_FILE_BYTES, MAX_FEED_BYTES, MAX_ITEMS, MAX_HTML_CHARS) before it is parsed or hashed.

HTML: a whole page goes through trafilatura, which finds the article among menus and footers; a fragment (a feed
entry's summary, pasted markup) only loses its tags, because trafilatura takes a fragment for boilerplate (it
returns None for one short paragraph and drops list items).

Dates are the publisher's own: a story filed at 22:30 in New York on 3 March is dated 3 March, not 4 March UTC.
In a CSV column, numeric day/month order comes from any value that shows it (13/03/2026); else slashes are read
month first and dots day first, with a note.

Syndicated copies: `merge_duplicates` compares MinHash signatures of word 3-shingles (datasketch LSH), so a copy
with a reworded lead is found while another story in the same template (next quarter's results) is not; a copy
cut to half its story or less is not found either.

What it does not do: translate or reject non-English text (it is read, with a note when plainly not English,
because the sentiment models are English), follow a feed's links to the full articles, run a page's JavaScript.
"""

import codecs
import csv
import dataclasses
import datetime
import email.utils
import http.client
import io
import json
import re
import time
import unicodedata
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

MAX_FILE_BYTES = 20 * 1024 * 1024  # a file is refused above this, before it is read
MAX_FEED_BYTES = 5 * 1024 * 1024  # a fetched feed (a busy wire feed is ~1 MB)
FETCH_SECONDS = 20.0  # a feed URL's whole download, not only each socket read
MAX_ITEMS = 5_000  # items read from one file; the rest are skipped with one reason
MAX_HTML_CHARS = 2_000_000  # markup (or pasted text) cut here before it is parsed
MAX_ARTICLE_CHARS = 100_000  # an item's text, cut here with a note (~15,000 words; news stories are 300-2,000)
MAX_TITLE_CHARS = 300
MAX_LABEL_CHARS = 300  # a source name or URL
MAX_HEADLINE_CHARS = 200  # a pasted first line up to this long, not ending like a sentence, is the title
MAX_NAME_CHARS = 120  # a file name or URL as printed in messages
SHINGLE_WORDS = 3
# Word 3-shingle Jaccard of a wire story and its copy with a reworded lead: 0.69; of the same company's results one
# quarter apart, in the same template: 0.15 (tests/fixtures/feeds/syndicated.csv). 0.7 would miss such copies.
DUPLICATE_JACCARD = 0.5
NUM_PERM = 128  # MinHash permutations: the Jaccard estimate's standard error is sqrt(J(1-J)/128), 0.04 at J = 0.7
MAX_FINGERPRINT_CHARS = 20_000  # text hashed per item for duplicate search: a copy agrees with its original early

TEXT_KEYS = ("text", "body", "content", "article", "story")  # CSV columns / JSON keys holding the body, in priority
TITLE_KEYS = ("title", "headline")  # also the body when no body column exists (headline-only data)
SUFFIX_KINDS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".xml": "feed", ".rss": "feed", ".atom": "feed",
                ".html": "html", ".htm": "html", ".txt": "txt"}


class NewsInputError(ValueError):
    """Input that cannot be read at all; the message is one line naming the file (or URL, or text) and the fault."""


class _Skip(ValueError):
    """One item that cannot be read; the reader records the message and goes on."""


@dataclass
class NewsItem:
    title: str  # may be "": then the first sentence acts as headline downstream
    text: str  # plain text (HTML already converted), never empty
    date: datetime.date | None
    source: str  # a feed's title, a CSV row's source, the file name, "pasted"
    url: str = ""
    sources: list[str] = field(default_factory=list)  # `source_label`s of every copy merged into this item, in order
    notes: list[str] = field(default_factory=list)  # what reading changed or doubts: "text truncated ..."

    def __post_init__(self) -> None:
        if not self.sources:
            self.sources = [source_label(self.source, self.url)]


@dataclass
class ReadReport:
    items: list[NewsItem]
    skipped: list[str]  # one reason per item not read: "row 7: no text", "line 3: not JSON (...)"
    notes: list[str] = field(default_factory=list)  # about the whole file: its encoding, ambiguous dates


def source_label(source: str, url: str = "") -> str:
    """How one copy of a story is named in `NewsItem.sources`."""
    return f"{source} <{url}>" if url else source


def from_text(text: str, source: str = "pasted") -> NewsItem:
    """A pasted article: HTML is converted; the first line is the title when it is short, does not end like a
    sentence (headlines have no full stop) and more text follows."""
    if "\x00" in text:
        raise NewsInputError("the pasted text contains NUL characters (binary data?)")
    notes: list[str] = []
    body = _body(text, _looks_like_html(text), notes)
    if not body:
        raise NewsInputError("the pasted text is empty")
    first, _, rest = body.partition("\n")
    title = ""
    if rest.strip() and len(first) <= MAX_HEADLINE_CHARS and not first.endswith((".", ",", ";", ":")):
        title, body = first, rest.strip()
    return _item(title, body, None, source, "", notes)


def html_to_text(html: str) -> str:
    """Plain text of HTML: a whole page's main text by trafilatura; a fragment, or a page trafilatura finds no
    text in, by dropping the tags (script and style contents too) and keeping block breaks as new lines."""
    html = html[:MAX_HTML_CHARS]
    if _WHOLE_PAGE.search(html[:4096]):
        import trafilatura  # imported here: ~0.5 s, and only HTML pages need it

        text = trafilatura.extract(html, include_comments=False, include_tables=True, favor_recall=True)
        if text and text.strip():
            return _clean(text)
    return _strip_tags(html)


def read_csv(path_or_bytes: str | Path | bytes, source: str = "") -> ReadReport:
    """Rows of a CSV file: a body column (TEXT_KEYS, else TITLE_KEYS) is required; title, date, source, url are
    optional (`source` names rows without one; default: the file's name). The delimiter (, ; or tab) is the one the
    header line holds most of; a UTF-8 BOM is dropped; row numbers count the header as row 1, like a spreadsheet."""
    name, data = _load(path_or_bytes, "CSV")
    notes: list[str] = []
    text = _decode(data, name, notes)
    header_line = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=header_line.count)
    csv.field_size_limit(max(csv.field_size_limit(), MAX_FILE_BYTES))  # the file is bounded; a long article is fine
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [cell.strip().lower() for cell in next(reader)]
    columns = {key: header.index(key) for key in reversed(header) if key}
    if not set(columns) & set(TEXT_KEYS + TITLE_KEYS):
        found = ", ".join(repr(cell[:30]) for cell in header[:8])
        raise NewsInputError(f"{name}: no text column (one of {', '.join(TEXT_KEYS + TITLE_KEYS)}); found {found}")
    rows: list[tuple[int, dict[str, str]]] = []
    skipped: list[str] = []
    try:
        for number, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(rows) == MAX_ITEMS:
                skipped.append(f"row {number} and after: not read (the limit is {MAX_ITEMS} items)")
                break
            rows.append((number, {key: row[i] if i < len(row) else "" for key, i in columns.items()}))
    except csv.Error as e:  # cannot resynchronise inside a broken quoted field: the rest is lost, and said so
        skipped.append(f"row {reader.line_num} and after: not CSV ({e})")
    day_first = _day_first(row.get("date", "") for _, row in rows)
    if day_first is None and any(_NUMERIC_DATE.match(row.get("date", "").strip()) for _, row in rows):
        notes.append("dates like 03/04/2026 are ambiguous: read month first (03.04.2026: day first)")
    items = []
    for number, row in rows:
        try:
            items.append(_from_fields(row, source or name, day_first))
        except _Skip as e:
            skipped.append(f"row {number}: {e}")
    return _report(name, items, skipped, notes)


def read_jsonl(path_or_bytes: str | Path | bytes, source: str = "") -> ReadReport:
    """One JSON object per line with the fields of `read_csv`; a line that is not one is skipped with its number."""
    name, data = _load(path_or_bytes, "JSONL")
    notes: list[str] = []
    items: list[NewsItem] = []
    skipped: list[str] = []
    for number, line in enumerate(_decode(data, name, notes).split("\n"), start=1):
        if not line.strip():
            continue
        if len(items) == MAX_ITEMS:
            skipped.append(f"line {number} and after: not read (the limit is {MAX_ITEMS} items)")
            break
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as e:  # RecursionError: "[[[[..." nested past the parser's stack
            skipped.append(f"line {number}: not JSON ({str(e)[:80]})")
            continue
        if not isinstance(value, dict):
            skipped.append(f"line {number}: not a JSON object")
            continue
        fields = {str(key).strip().lower(): field_value for key, field_value in value.items()}
        try:
            items.append(_from_fields(fields, source or name, None))
        except _Skip as e:
            skipped.append(f"line {number}: {e}")
    return _report(name, items, skipped, notes)


def read_feed(url_or_path_or_bytes: str | Path | bytes) -> ReadReport:
    """Entries of an RSS (0.9x, 1.0, 2.0) or Atom feed, by feedparser; a URL (http/https only) is fetched here,
    bounded by MAX_FEED_BYTES and FETCH_SECONDS. An entry's longest content (or its summary) is its text; an entry
    with only a title has the title as its text. The date is the entry's published, else updated, date."""
    import feedparser  # imported here: only feeds need it

    source = url_or_path_or_bytes
    if isinstance(source, str) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source):
        name, data = source[:MAX_NAME_CHARS], _fetch(source)
    else:
        name, data = _load(source, "feed")
    if not data.strip():
        raise NewsInputError(f"{name} is empty")
    if b"\x00" in data and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise NewsInputError(f"{name} is not a text file (it contains NUL bytes)")
    # A stream, never bytes or str: feedparser opens a str as a URL or a path, and bytes as a path.
    parsed = feedparser.parse(io.BytesIO(data))
    if not parsed.get("version") and not parsed.entries:
        problem = f" ({str(parsed.get('bozo_exception', ''))[:80]})" if parsed.get("bozo") else ""
        raise NewsInputError(f"{name} is not an RSS or Atom feed{problem}")
    if not parsed.entries:
        raise NewsInputError(f"{name}: the feed has no entries")
    notes = [f"{name}: not well-formed XML, read leniently ({str(parsed.bozo_exception)[:80]})"] if parsed.bozo else []
    feed_title = _one_line(parsed.feed.get("title", "")) or name
    items: list[NewsItem] = []
    skipped: list[str] = []
    for number, entry in enumerate(parsed.entries, start=1):
        if number > MAX_ITEMS:
            skipped.append(f"entry {number} and after: not read (the limit is {MAX_ITEMS} items)")
            break
        try:
            items.append(_from_entry(entry, feed_title))
        except _Skip as e:
            skipped.append(f"entry {number}: {e}")
    return _report(name, items, skipped, notes)


def read_html(path_or_bytes: str | Path | bytes) -> ReadReport:
    """One article from a saved web page: trafilatura's main text, title, date, site name and canonical URL."""
    import trafilatura

    name, data = _load(path_or_bytes, "HTML")
    notes: list[str] = []
    html = _decode(data, name, notes)
    if not _looks_like_html(html):
        raise NewsInputError(f"{name} is not HTML (no tags such as <p> or <body> in it)")
    item_notes: list[str] = []
    html = _cut(html, MAX_HTML_CHARS, "markup", item_notes)
    page = trafilatura.bare_extraction(html, with_metadata=True, include_comments=False, include_tables=True,
                                       favor_recall=True)
    title = _one_line(getattr(page, "title", None) or "")
    text = _clean(getattr(page, "text", None) or "") or _strip_tags(html)
    if title and text.startswith(title + "\n"):  # trafilatura keeps the <h1> as the text's first line
        text = text[len(title) + 1:].strip()
    try:
        item = _item(title, _cut(text, MAX_ARTICLE_CHARS, "text", item_notes),
                     parse_date(getattr(page, "date", None) or ""), getattr(page, "sitename", None) or name,
                     getattr(page, "url", None) or "", item_notes)
    except _Skip as e:
        raise NewsInputError(f"{name}: {e}") from e
    return ReadReport([item], [], notes)


def read_file(path: str | Path) -> ReadReport:
    """Read a file by its suffix (SUFFIX_KINDS); a .txt file is one article, as if pasted."""
    path = Path(path)
    kind = SUFFIX_KINDS.get(path.suffix.lower())
    if kind is None:
        raise NewsInputError(f"{path.name[:MAX_NAME_CHARS]}: unknown kind of file; expected one of "
                             f"{', '.join(sorted(SUFFIX_KINDS))}")
    if kind == "txt":
        name, data = _load(path, "text")
        notes: list[str] = []
        try:
            item = from_text(_decode(data, name, notes), source=name)
        except NewsInputError as e:
            raise NewsInputError(f"{name}: {e}") from e
        return ReadReport([item], [], notes)
    reader = {"csv": read_csv, "jsonl": read_jsonl, "feed": read_feed, "html": read_html}[kind]
    return reader(path)


def merge_duplicates(items: list[NewsItem], threshold: float = DUPLICATE_JACCARD) -> list[NewsItem]:
    """One item per story: items whose texts' word 3-shingles have a Jaccard similarity of at least `threshold`
    (MinHash estimate, candidates from LSH) are merged, transitively, into the longest text among them, with the
    earliest date, a title if any had one, and every copy's labels in `sources`. The result keeps the order of each
    story's first copy; the inputs are not changed."""
    assert 0 < threshold < 1, threshold
    from datasketch import MinHash, MinHashLSH

    parent = list(range(len(items)))  # union-find over item indices; a root is its group's first index

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    signatures: list[MinHash | None] = []
    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    for i, item in enumerate(items):
        shingles = _shingles(item.text)
        signature = None
        if shingles:
            signature = MinHash(num_perm=NUM_PERM, seed=1)
            signature.update_batch([shingle.encode() for shingle in shingles])
            for j in lsh.query(signature):  # LSH finds candidates; the estimate decides
                if signature.jaccard(signatures[j]) >= threshold:
                    a, b = sorted((root(i), root(j)))
                    parent[b] = a
            lsh.insert(i, signature)
        signatures.append(signature)
    groups: dict[int, list[NewsItem]] = {}
    for i, item in enumerate(items):
        groups.setdefault(root(i), []).append(item)
    return [_merge(group) for _, group in sorted(groups.items())]


def parse_date(value: str, day_first: bool | None = None) -> datetime.date | None:
    """The calendar date in `value` as written (ISO 8601 / RFC 3339, RFC 822, "4 Mar 2026", "March 4, 2026",
    "2026/03/04", "04/03/2026"), or None. Numeric day/month order: a part over 12 decides, else `day_first`, else
    month first after slashes and dashes, day first after dots."""
    value = " ".join(value.split())[:80]
    if not value:
        return None
    numeric = _NUMERIC_DATE.match(value)
    if numeric:
        first, separator, second, year = numeric.groups()
        a, b, y = int(first), int(second), int(year) + (2000 if len(year) == 2 else 0)
        if a > 12 or (b <= 12 and (day_first if day_first is not None else separator == ".")):
            a, b = b, a
        return _date(y, a, b)
    year_first = _YEAR_FIRST.match(value)
    if year_first:
        return _date(*(int(part) for part in year_first.groups()))
    try:
        return datetime.datetime.fromisoformat(value).date()
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(value).date()
    except (TypeError, ValueError, IndexError):
        pass
    words = _WEEKDAY.sub("", value.replace(",", " ").replace(".", " ")).replace("Sept ", "Sep ").split()
    for layout in ("%d %B %Y", "%d %b %Y", "%B %d %Y", "%b %d %Y"):
        try:
            return datetime.datetime.strptime(" ".join(words[:3]), layout).date()
        except ValueError:
            pass
    return None


_HTTP = re.compile(r"^https?://", re.IGNORECASE)
_WHOLE_PAGE = re.compile(r"<(?:!doctype\s+html|html|body|head)\b", re.IGNORECASE)
_TAG = re.compile(r"<(?:!doctype\s+html|html|body|p|div|br|article|section|span|a|h[1-6]|table|li|ul|em|strong|b|i)"
                  r"(?:\s[^<>]*)?/?>", re.IGNORECASE)
_BLOCKS = ("address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "footer",
           "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
           "table", "td", "th", "title", "tr", "ul")
_INVISIBLE = ("script", "style", "noscript", "template")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff]")  # after \r and \u2028/9 became \n; \t and \n stay
_NUMERIC_DATE = re.compile(r"^(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})\b")
_YEAR_FIRST = re.compile(r"^(\d{4})[/.](\d{1,2})[/.](\d{1,2})\b")
_WEEKDAY = re.compile(r"^(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\s+", re.IGNORECASE)
_ENGLISH = frozenset(("the", "a", "an", "of", "to", "in", "and", "or", "for", "on", "at", "by", "with", "from", "as",
                      "is", "are", "was", "were", "be", "been", "has", "have", "had", "it", "its", "that", "this",
                      "which", "said", "says", "will", "would", "not", "but", "than", "after", "over"))


def _looks_like_html(text: str) -> bool:
    return bool(_TAG.search(text[:20_000]))


def _strip_tags(html: str) -> str:
    import lxml.etree
    import lxml.html

    try:  # bytes: lxml refuses a str that declares its encoding (<?xml ... encoding="utf-8"?>)
        root = lxml.html.fromstring(html.encode("utf-8", "replace"), parser=lxml.html.HTMLParser(encoding="utf-8"))
    except lxml.etree.LxmlError:  # "Document is empty": only comments or nothing
        return ""
    if root.tag in _INVISIBLE:
        return ""
    for element in list(root.iter(*_INVISIBLE)):
        element.drop_tree()
    for element in root.iter(*_BLOCKS):
        element.text = "\n" + (element.text or "")
        element.tail = "\n" + (element.tail or "")
    return _clean(root.text_content())


def _clean(text: str) -> str:
    """NFC, no control characters, single spaces, at most one blank line between paragraphs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
    text = _CONTROL.sub("", unicodedata.normalize("NFC", text))
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _one_line(text: str) -> str:
    return " ".join(_clean(_strip_tags(text) if _looks_like_html(text) else text).split())


def _cut(text: str, limit: int, what: str, notes: list[str]) -> str:
    if len(text) <= limit:
        return text
    notes.append(f"{what} truncated to {limit:,} characters (it had {len(text):,})")
    return text[:limit]


def _body(raw: str, is_html: bool, notes: list[str]) -> str:
    raw = _cut(raw, MAX_HTML_CHARS, "markup" if is_html else "text", notes)
    return _cut(html_to_text(raw) if is_html else _clean(raw), MAX_ARTICLE_CHARS, "text", notes)


def _item(title: str, text: str, date: datetime.date | None, source: str, url: str, notes: list[str]) -> NewsItem:
    if not text:
        raise _Skip("no text")
    if not _looks_english(text):
        notes.append("does not look like English: the sentiment models read English only")
    return NewsItem(_one_line(title)[:MAX_TITLE_CHARS], text, date, _one_line(source)[:MAX_LABEL_CHARS] or "unknown",
                    _one_line(url)[:MAX_LABEL_CHARS], notes=notes)


def _looks_english(text: str) -> bool:
    """False only for text that is plainly not English: mostly non-Latin letters, or 20+ words with almost none of
    English's commonest words (they are ~30% of English news prose, under 5% of German or Spanish)."""
    sample = text[:5000]
    letters = [c for c in sample if c.isalpha()]
    if len(letters) >= 50 and sum(c.isascii() for c in letters) < 0.5 * len(letters):
        return False
    words = re.findall(r"[^\W\d_]+", sample.lower())
    return len(words) < 20 or sum(word in _ENGLISH for word in words) >= 0.08 * len(words)


def _from_fields(fields: dict, default_source: str, day_first: bool | None) -> NewsItem:
    """An item from a CSV row or a JSON object whose keys are lower-case."""
    def text_of(key: str) -> str:
        value = fields.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise _Skip(f"{key!r} is not text but {type(value).__name__}")
        return value

    body_key = next((key for key in TEXT_KEYS if text_of(key).strip()), None)
    title_key = next((key for key in TITLE_KEYS if text_of(key).strip()), None)
    if body_key is None and title_key is None:
        raise _Skip("no text")
    notes: list[str] = []
    raw = text_of(body_key or title_key)
    text = _body(raw, _looks_like_html(raw), notes)
    date_value = fields.get("date")
    date = parse_date(date_value, day_first) if isinstance(date_value, str) else None
    if date is None and date_value not in (None, ""):
        notes.append(f"date {str(date_value)[:40]!r} not understood: left empty")
    title = text_of(title_key) if body_key and title_key else ""
    return _item(title, text, date, text_of("source") or default_source, text_of("url"), notes)


def _from_entry(entry: dict, feed_title: str) -> NewsItem:
    """An item from a feedparser entry; a headline-only entry has its title as text and no title."""
    notes: list[str] = []
    details = [*entry.get("content", []), entry.get("summary_detail") or {}]
    detail = max(details, key=lambda d: len(d.get("value", "")))
    raw = detail.get("value", "")
    text = _body(raw, detail.get("type") in ("text/html", "application/xhtml+xml"), notes)
    title = entry.get("title", "")
    if (entry.get("title_detail") or {}).get("type") in ("text/html", "application/xhtml+xml"):
        title = _strip_tags(title)  # also resolves its entities: "AT&amp;T" is "AT&T"
    if not text:
        text, title = _one_line(title), ""
    link = entry.get("link", "")  # feedparser falls back on the entry's id, which may be a "tag:" URI
    return _item(title, text, _entry_date(entry), feed_title, link if _HTTP.match(link) else "", notes)


def _entry_date(entry: dict) -> datetime.date | None:
    """The date as the feed wrote it; feedparser's own parse (in UTC) for the forms `parse_date` does not read."""
    for key in ("published", "updated", "created"):
        date = parse_date(entry.get(key) or "")
        if date is None and entry.get(f"{key}_parsed"):
            date = _date(*entry[f"{key}_parsed"][:3])
        if date is not None:
            return date
    return None


def _date(year: int, month: int, day: int) -> datetime.date | None:
    try:
        return datetime.date(year, month, day)
    except ValueError:
        return None


def _day_first(values) -> bool | None:
    """True or False when some numeric date in the column has a day over 12 in one place only, else None."""
    firsts = seconds = False
    for value in values:
        match = _NUMERIC_DATE.match(value.strip())
        if match:
            firsts |= int(match.group(1)) > 12
            seconds |= int(match.group(3)) > 12
    return firsts if firsts != seconds else None


def _load(source: str | Path | bytes, kind: str) -> tuple[str, bytes]:
    """(a name for messages, the bytes), refusing what is over MAX_FILE_BYTES before reading it."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, data = f"the {kind} data", bytes(source)
    else:
        path = Path(source)
        name = path.name[:MAX_NAME_CHARS] or str(path)[:MAX_NAME_CHARS]
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise NewsInputError(f"{name} is too big ({size / 2**20:.1f} MB; the limit is "
                                     f"{MAX_FILE_BYTES // 2**20} MB)")
            data = path.read_bytes()
        except IsADirectoryError as e:
            raise NewsInputError(f"{name} is a folder, not a file") from e
        except OSError as e:
            raise NewsInputError(f"{name}: cannot read it ({e.strerror or e})") from e
    if len(data) > MAX_FILE_BYTES:
        raise NewsInputError(f"{name} is too big (the limit is {MAX_FILE_BYTES // 2**20} MB)")
    if not data.strip():
        raise NewsInputError(f"{name} is empty")
    return name, data


def _decode(data: bytes, name: str, notes: list[str]) -> str:
    """UTF-8 (BOM or not) or UTF-16 with a BOM; other bytes are replaced by U+FFFD with a note; binary is refused."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    if b"\x00" in data:
        raise NewsInputError(f"{name} is not a text file (it contains NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        text = data.decode("utf-8-sig", errors="replace")
        bad = text.count("\ufffd")
        if bad > 0.1 * len(text):
            raise NewsInputError(f"{name} is not a text file ({bad:,} of {len(text):,} characters undecodable)") from e
        notes.append(f"{name} is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}): "
                     f"{bad:,} undecodable bytes shown as \ufffd")
        return text


def _fetch(url: str) -> bytes:
    """A feed URL's bytes: http/https only (redirects too), at most MAX_FEED_BYTES within FETCH_SECONDS."""
    name = url[:MAX_NAME_CHARS]
    if not _HTTP.match(url):
        raise NewsInputError(f"{name}: only http and https URLs are fetched")
    opener = urllib.request.OpenerDirector()  # not build_opener: it adds file:// and ftp:// handlers
    for handler in (urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                    urllib.request.HTTPRedirectHandler(), urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    request = urllib.request.Request(url, headers={
        "User-Agent": "llmkit-finance-news/1", "Accept": "application/rss+xml, application/atom+xml, */*;q=0.5"})
    deadline = time.monotonic() + FETCH_SECONDS
    chunks: list[bytes] = []
    size = 0
    try:
        with opener.open(request, timeout=FETCH_SECONDS) as response:
            while chunk := response.read(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_FEED_BYTES:
                    raise NewsInputError(f"{name}: larger than {MAX_FEED_BYTES:,} bytes, not read")
                if time.monotonic() > deadline:
                    raise NewsInputError(f"{name}: not downloaded within {FETCH_SECONDS:.0f} s")
    except urllib.error.HTTPError as e:
        raise NewsInputError(f"{name}: HTTP {e.code} {str(e.reason)[:60]}") from e
    except urllib.error.URLError as e:
        raise NewsInputError(f"{name}: cannot fetch it ({str(e.reason)[:80]})") from e
    except (OSError, http.client.HTTPException, ValueError) as e:
        if isinstance(e, NewsInputError):
            raise
        raise NewsInputError(f"{name}: cannot fetch it ({str(e)[:80] or type(e).__name__})") from e
    return b"".join(chunks)


def _report(name: str, items: list[NewsItem], skipped: list[str], notes: list[str]) -> ReadReport:
    if not items:
        raise NewsInputError(f"{name}: no news item in it ({skipped[0] if skipped else 'no rows'})")
    return ReadReport(items, skipped, notes)


def _shingles(text: str) -> set[str]:
    words = re.findall(r"\w+", text[:MAX_FINGERPRINT_CHARS].lower())
    if len(words) < SHINGLE_WORDS:
        return {" ".join(words)} if words else set()
    return {" ".join(words[k:k + SHINGLE_WORDS]) for k in range(len(words) - SHINGLE_WORDS + 1)}


def _merge(group: list[NewsItem]) -> NewsItem:
    if len(group) == 1:
        return group[0]
    keep = max(group, key=lambda item: len(item.text))  # the first of the longest
    dates = [item.date for item in group if item.date is not None]
    sources = list(dict.fromkeys(label for item in group for label in item.sources))
    return dataclasses.replace(keep, title=keep.title or next((item.title for item in group if item.title), ""),
                               date=min(dates, default=None), sources=sources, notes=list(keep.notes))
