"""Context for a chunk's indexed text: which document it is from, and the heading it sits under.

A page of a financial statement is figures under a title ("CONSOLIDATED STATEMENTS OF CASH FLOWS") that
only its first chunk holds, in a document whose company and period appear on page 1 only. Such a chunk
matches "Apple's capital expenditure in fiscal 2022" neither by its words (BM25) nor by its meaning
(dense). So each chunk is indexed as `context + "\n" + text`, where the context names the document (its
file name's words, and the company, form and period found on its first pages) and the headings above the
chunk on its page. Citations still quote `text` alone (rag.chunking.Chunk keeps both).

All of it is read from the document's own text, which is untrusted: it is only ever indexed, never
obeyed, and bounded (CONTEXT_CHARS) so a hostile first page cannot crowd out the chunk.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import PurePath

from rag.loaders import Page

IDENTITY_PAGES = 2  # the pages read for the document's company, form and period
HEADING_LINES = 6  # a page's first lines that may hold its headings
RUNNING_SHARE = 0.2  # a line on more than this share of a document's pages is a running header, not a heading
IDENTITY_CHARS = 160
CONTEXT_CHARS = 240  # ~50 tokens: a 200-token chunk and its context stay under the embedder's 256

_REGISTRANT = re.compile(r"\n([^\n]{2,80})\n\s*\(exact name of (?:the )?registrant", re.IGNORECASE)
_FORM = re.compile(r"\bFORM\s+(10-K|10-Q|20-F|40-F|8-K|6-K|S-1)\b", re.IGNORECASE)
_PERIOD = re.compile(r"\b((?:fiscal\s+)?(?:year|quarter|quarterly\s+period|period)\s+ended\s+"
                     r"[A-Z][a-z]{2,8}\.?\s+\d{1,2},\s+\d{4})", re.IGNORECASE)
_HEADLINE = re.compile(r"^[^\n]{0,60}\b(?:reports|announces)\b[^\n]{0,80}\b(?:results|quarter)\b[^\n]*$",
                       re.IGNORECASE | re.MULTILINE)


def document_identity(pages: list[Page], file_name: str) -> str:
    """The words that name a document: its file name's, then the company, form, period and headline that
    its first pages state (as SEC filings and earnings releases do; any other document keeps its title)."""
    stem = _name_words(file_name)
    first = "\n" + "\n".join(page.text for page in pages[:IDENTITY_PAGES])
    found = []
    if m := _REGISTRANT.search(first):
        found.append(m.group(1))
    if m := _FORM.search(first):
        found.append("Form " + m.group(1).upper())
    if m := _PERIOD.search(first):
        found.append(m.group(1))
    if m := _HEADLINE.search(first):
        found.append(m.group(0))
    if not found and pages:
        found.append(next(iter(_headings(pages[0].text, set())), ""))
    parts = [stem] + [" ".join(part.split()) for part in found if part.strip()]
    return " | ".join(parts)[:IDENTITY_CHARS]


def _name_words(file_name: str) -> str:
    """A file name's words; a quarter in it ("2023Q2", "Q2-2023") also in words, as questions say it ("the second
    quarter of 2023")."""
    words = re.sub(r"[_\-.]+", " ", PurePath(file_name).stem)
    words = re.sub(r"(?i)(\d{4})(Q[1-4])\b", r"\1 \2", words)
    quarters = {f"Q{n}": f"{word} quarter" for n, word in enumerate(("first", "second", "third", "fourth"), start=1)}
    spoken = [quarters[q.upper()] for q in re.findall(r"(?i)\bQ[1-4]\b", words)]
    return " ".join([words.strip(), *spoken])


def running_lines(pages: list[Page]) -> set[str]:
    """Lines that repeat on many pages (running headers and footers, "Table of Contents"): never headings."""
    tops = ({_norm(line) for line in _top_lines(page.text)} for page in pages)
    counts = Counter(line for top in tops for line in top)
    return {line for line, n in counts.items() if n >= 3 and n > RUNNING_SHARE * len(pages)}


def page_headings(page: Page, running: set[str]) -> list[str]:
    """The heading lines at the top of a page (short, mostly capitals, not running headers), in order."""
    return _headings(page.text, running)


def chunk_context(identity: str, headings: list[str]) -> str:
    """The context indexed before each chunk of a page (module doc)."""
    return " | ".join([identity, *headings])[:CONTEXT_CHARS]


def indexed_text(context: str, text: str) -> str:
    """What the retriever embeds and BM25 reads for a chunk; `text` alone is what is cited."""
    return f"{context}\n{text}" if context else text


def _headings(text: str, running: set[str]) -> list[str]:
    headings = []
    for line in _top_lines(text):
        line = _norm(line)
        if not line or line in running:
            continue
        if _is_heading(line):
            headings.append(line)
        elif headings:
            break
    return headings[:2]


def _top_lines(text: str) -> list[str]:
    """A page's first HEADING_LINES lines, without splitting the rest of it (a page may hold 100,000 characters)."""
    return text.split("\n", HEADING_LINES)[:HEADING_LINES]


def _is_heading(line: str) -> bool:
    letters = [c for c in line if c.isalpha()]
    if not 4 <= len(line) <= 80 or len(letters) < 4 or line.rstrip("\"'”’)").endswith((".", ",", ";")):
        return False
    words = line.split()
    capitalised = sum(w[0].isupper() for w in words if w[0].isalpha()) / max(1, sum(w[0].isalpha() for w in words))
    upper = sum(c.isupper() for c in letters) / len(letters)
    return upper > 0.6 or (capitalised > 0.7 and len(words) <= 8 and not re.search(r"\d{3}", line))


def _norm(line: str) -> str:
    return " ".join(line.split())
