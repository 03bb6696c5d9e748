"""Load documents into numbered pages of text, with a report for every file or text item.

The first stage of the RAG pipeline. PDF, plain text, Markdown and HTML files become `Page`s that keep their
1-based page number, so a chunk can later cite "guide.pdf, p. 3". Text that arrives as text (an email body, a
news item, a source file: a `TextItem`) becomes one page that is cited by the item's own locator or by line
range. Every input gets a `LoadReport`. Bad *input* (missing, empty, corrupt, truncated, encrypted, wrong type,
not UTF-8, too big) sets `report.error` instead of raising, so one bad upload never aborts a batch; bugs in this
module still raise.

PDFs: two extractors, each where it is the better tool.
- PDFium (pypdfium2) reads every page it can: ~20x faster than pypdf, and right where pypdf breaks words
  at ligatures ("Aus n", "cash \\x00ow"); it also repairs files pypdf refuses (a lost startxref). A page's
  text is `pdfium_text`: PDFium's own text with only the replacements listed there, so that a character
  offset in it still finds the character's box on the page.
- pypdf reads what PDFium does not: a file PDFium cannot open (damaged beyond its repair, encrypted with
  an empty owner password, no pages: pypdf's error then says why), a page PDFium fails on, a page PDFium
  reads worse (characters one per line, right-to-left script reversed: `_pypdf_reads_better`), and the rest
  of a file once a PDFium page ran past PDFIUM_PAGE_SECONDS.
- Pages with an empty text layer are recognised by OCR (`rag.ocr`, `ocr="auto"`), at most MAX_OCR_PAGES a
  file; the others are listed in `pages_needing_ocr`. A PDF with no text at all is an error.

What it deliberately does not do:
- Normalise text. Hyphenation and tabs come through as extracted (PDFium spells out ligatures; pypdf may
  keep U+FB01 "\ufb01"): that is the chunker's job.
- Read PDF form-field values, attachments or page labels, or follow an HTML `<meta charset>`.

Hostile PDFs: pypdf bounds what a stream may decompress to (its limits, hence the pyproject's lower bound),
but not the time a page's text takes: a content stream repeating one operator a million times deflates to
20 KB and takes pypdf 15 s (then its token limit ends it), and 2,000 pages may share it. So each page gets
PAGE_SECONDS and MAX_PAGE_CHARS, then is skipped with a warning, and after MAX_SLOW_PAGES such pages the rest
of the file is not read. PDFium, C code, takes ~1.5 s per million operators and cannot be stopped: it reads a file in a
thread of its own (`_Pdfium`) that the loader stops waiting for after PDFIUM_PAGE_SECONDS; then pypdf reads
that page and the rest of the file, under the bounds above (see `_extract_page` for how pypdf is stopped).
So PDFium adds at most PDFIUM_PAGE_SECONDS to a hostile file, but for pages that take it a little less each
(on the operator-heavy pages measured, pypdf takes ~10x as long as PDFium). PDFium does not bound
decompression: a file whose Flate streams inflate past MAX_INFLATED_BYTES is read by pypdf only
(`_inflates_too_much`). OCR renders pages with PDFium in the loader's thread, unbounded in time: only pages
without text, at most MAX_OCR_PAGES.
"""

import codecs
import contextlib
import ctypes
import hashlib
import io
import json
import logging
import queue
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal

import pypdf
import pypdfium2
import pypdfium2.raw as pdfium_c
from pypdf.errors import DependencyError

MAX_FILE_BYTES = 200 * 1024 * 1024  # refused before reading, so a huge upload cannot exhaust memory
MAX_PAGES = 2_000
PAGE_SECONDS = 10.0  # a PDF page's text extraction (~20 ms usually) is stopped after this and the page skipped
MAX_SLOW_PAGES = 3  # pages stopped at PAGE_SECONDS before the rest of the file is given up as hostile or broken
MAX_PAGE_CHARS = 100_000  # a page's text (the filings' densest page holds 8,584 characters); more is junk or hostile
PDFIUM_PAGE_SECONDS = 2.0  # a PDF page in PDFium (~5 ms usually) after which pypdf reads it and the rest of the file
MAX_INFLATED_BYTES = 512 * 1024 * 1024  # a PDF's Flate streams (images aside) inflating past this skip PDFium
MAX_OCR_PAGES = 50  # pages of one PDF recognised by OCR (~1 s each); the others stay in `pages_needing_ocr`
MAX_TEXT_CHARS = 2_000_000  # a text item: ~1,000 pages of prose; refused before it is hashed or chunked
MAX_NAME_CHARS = 200  # a text item's name and locator: both are printed in every citation of it
TEXT_KIND = "text"  # the `kind` of a text item's report
NEEDS_PASSWORD = "encrypted: this PDF needs a password"  # the error's start, for callers that give their own advice
SUFFIX_KINDS = {".pdf": "pdf", ".txt": "txt", ".md": "md", ".markdown": "md", ".html": "html", ".htm": "html"}
# What a file that is not a PDF most often turns out to be, for a clearer message.
_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"PK\x03\x04": "a ZIP archive (a .docx, .xlsx or .epub?)",
    b"\xd0\xcf\x11\xe0": "an old Microsoft Office file (.doc/.xls)",
}
PDFIUM_LOCK = threading.Lock()  # PDFium is not thread-safe: every call into it, in any thread, holds this


@dataclass
class Page:
    """The text of one page; `number` is 1-based in the source file.

    Its chunks are cited by page number ("p. 3") unless `locator` is set (every chunk is cited with it: an
    email's message id) or `by_lines` is (each chunk by the lines it spans in `text`: "L12-30").
    """

    number: int
    text: str
    locator: str | None = None
    by_lines: bool = False


@dataclass
class LoadReport:
    """What happened to one file. `kind` is the file's type, or its bare suffix when unsupported."""

    path: str
    name: str
    kind: str
    pages_total: int = 0
    pages_with_text: int = 0
    pages_needing_ocr: list[int] = field(default_factory=list)  # 1-based; empty text layer (a scan?), not OCR'd
    pages_ocr: list[int] = field(default_factory=list)  # 1-based; text layer empty, text recognised by OCR
    error: str | None = None  # one line for the user; None when the file loaded
    warnings: list[str] = field(default_factory=list)
    content_hash: str | None = None  # sha256 hex of the file bytes; None when they could not be read
    metadata: dict = field(default_factory=dict)  # a text item's own, stored with the document

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class TextItem:
    """A document that arrives as text: `name` is cited as a file name is, `metadata` (JSON-serialisable) is
    stored with it, `locator` (an email's "<message-id>") is how every chunk of it is cited; without one,
    each chunk is cited by the lines it spans ("L12-30").

    Two items are the same document when their text and locator are: the same message added twice is
    one document, two messages with the same body are two. Without a locator, the id is that of a file
    holding the text in UTF-8, so the text and such a file are one document.
    """

    name: str
    text: str
    metadata: dict = field(default_factory=dict)
    locator: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not isinstance(self.text, str):
            raise TypeError(f"a TextItem's name and text are str, got {type(self.name).__name__} and "
                            f"{type(self.text).__name__}")
        if self.locator is not None and not isinstance(self.locator, str):
            raise TypeError(f"a TextItem's locator is a str or None, got {type(self.locator).__name__}")
        if not isinstance(self.metadata, dict):
            raise TypeError(f"a TextItem's metadata is a dict, got {type(self.metadata).__name__}")
        try:
            json.dumps(self.metadata)
        except (TypeError, ValueError) as e:
            raise TypeError(f"a TextItem's metadata must be JSON-serialisable (it is stored as JSON): {e}") from e


class _BadInput(Exception):
    """A problem with the input itself; `load_file` and `load_text` turn it into `report.error`."""


class _PageTimeout(BaseException):
    """Raised inside a page's text extraction that ran past PAGE_SECONDS, and then by `_extract_page`. Not an
    Exception: pypdf catches those in many places and carries on."""


_SURROGATES = re.compile(r"[\ud800-\udfff]")
# A name or locator that a citation "[name locator]" can print: no brackets or line breaks to end it early, and
# nothing SQLite cannot store.
_CITABLE = re.compile(f"(?=.*\\S)[^\\[\\]\\r\\n\\ud800-\\udfff]{{1,{MAX_NAME_CHARS}}}")


def load_file(path: str | Path, password: str | None = None, on_page: Callable[[int, int], None] | None = None,
              ocr: Literal["auto", "off"] = "auto",
              on_ocr: Callable[[int, int], None] | None = None) -> tuple[list[Page], LoadReport]:
    """Read one file into its pages that have text, plus a report. Never raises for bad input.

    `password` is tried on encrypted PDFs (after the empty password) and ignored otherwise. `on_page(read,
    total)` is called after each PDF page, for a progress bar (PDFium takes ~5 ms a page, pypdf ~50).
    `ocr="auto"` recognises the PDF pages without a text layer (at most MAX_OCR_PAGES, ~1 s each: `on_ocr(done,
    total)` after each); "off" lists them in `report.pages_needing_ocr` only.
    """
    if ocr not in ("auto", "off"):
        raise ValueError(f"ocr must be 'auto' or 'off', got {ocr!r}")
    path = Path(path)
    suffix = path.suffix.lower()
    kind = SUFFIX_KINDS.get(suffix)
    report = LoadReport(path=str(path), name=path.name, kind=kind or suffix.lstrip("."))
    try:
        if kind is None:
            supported = ", ".join(SUFFIX_KINDS)
            raise _BadInput(f"unsupported file type {suffix or '(no extension)'!r}: supported types are {supported}")
        data = _read_bytes(path)
        report.content_hash = hashlib.sha256(data).hexdigest()
        recognised = 0  # pages that OCR read, whether it found text or not
        if kind == "pdf":
            with _pypdf_quiet():
                pages = _load_pdf(data, password, report, on_page)
            if ocr == "auto":
                recognised = _recognise(data, password, pages, report, on_ocr)
        else:
            text = _decode_text(data, report)
            pages = _split_pages(_html_to_text(text) if kind == "html" else text, report)
    except _BadInput as e:
        report.error = str(e)
        return [], report

    with_text = [page for page in pages if page.text.strip()]
    report.pages_with_text = len(with_text)
    if kind == "pdf":
        report.pages_needing_ocr = [page.number for page in pages if not page.text.strip()]
    if not with_text:
        if report.pages_needing_ocr:
            done = "OCR found no text on it" if recognised else "it needs OCR"
            report.error = f"no page has a text layer (a scanned document?): {done}"
        elif kind == "pdf":
            report.error = "no page could be extracted (see warnings)"
        else:
            report.error = "the file contains no text"
    elif report.pages_needing_ocr:
        numbers = ", ".join(map(str, report.pages_needing_ocr))
        report.warnings.append(f"page(s) {numbers} have no text layer (scanned?): they need OCR and are not indexed")
    return with_text, report


def load_files(
    paths: Iterable[str | Path],
    password: str | None = None,
    progress: Callable[[float, int, str], None] | None = None,
    ocr: Literal["auto", "off"] = "auto",
    on_ocr: Callable[[int, int, str], None] | None = None,
) -> list[tuple[list[Page], LoadReport]]:
    """Load a batch; a bad file gets an error in its report and the batch goes on.

    Calls `progress(done, total, name)` after each file, and after each page of a PDF with `done` a fraction
    (2.25: two files and a quarter of the third), for a progress bar; `on_ocr(done, total, name)` after each
    page recognised by OCR (see `load_file`).
    """
    paths = list(paths)
    results = []
    for done, path in enumerate(paths):
        name = Path(path).name

        def on_page(read: int, pages: int, done: int = done, name: str = name) -> None:
            progress(done + read / pages, len(paths), name)

        def on_page_ocr(read: int, pages: int, name: str = name) -> None:
            on_ocr(read, pages, name)

        results.append(load_file(path, password, on_page if progress is not None else None, ocr,
                                 on_page_ocr if on_ocr is not None else None))
        if progress is not None:
            progress(done + 1, len(paths), name)
    return results


def load_text(item: TextItem) -> tuple[list[Page], LoadReport]:
    """A text item as one page, plus a report, as `load_file` gives a file's. Never raises for bad input.

    Characters UTF-8 cannot hold (lone surrogates, which `surrogateescape` decoding leaves) become U+FFFD,
    with a warning.
    """
    report = LoadReport(path="", name=item.name, kind=TEXT_KIND, metadata=dict(item.metadata))
    try:
        for what, value in (("name", item.name), ("locator", item.locator)):
            if value is not None and not _CITABLE.fullmatch(value):
                raise _BadInput(f"the {what} {value[:MAX_NAME_CHARS]!r} cannot be cited: give 1 to {MAX_NAME_CHARS} "
                                "characters, not all blank, without square brackets or line breaks")
        if len(item.text) > MAX_TEXT_CHARS:
            raise _BadInput(f"the text is {len(item.text):,} characters long; the limit is {MAX_TEXT_CHARS:,}")
        text, replaced = _SURROGATES.subn("\ufffd", item.text)
        if replaced:
            report.warnings.append(f"{replaced} character(s) that are not valid Unicode (undecoded bytes?) were "
                                   "replaced by U+FFFD")
        digest = hashlib.sha256(text.encode("utf-8"))
        if item.locator is not None:
            digest.update(b"\0" + item.locator.encode("utf-8"))
        report.content_hash = digest.hexdigest()
        report.pages_total = 1
        if not text.strip():
            raise _BadInput("the text is empty")
    except _BadInput as e:
        report.error = str(e)
        return [], report
    report.pages_with_text = 1
    return [Page(1, text, item.locator, by_lines=item.locator is None)], report


@contextlib.contextmanager
def _pypdf_quiet() -> Iterator[None]:
    """pypdf logs each repair it makes ("Ignoring wrong pointing object": an xref offset off by a few bytes,
    common in real PDFs) on the terminal. The text comes out right, so neither the user nor the report
    hears of it; what does go wrong reaches the report as an error or a page warning."""
    logger = logging.getLogger("pypdf")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _read_bytes(path: Path) -> bytes:
    try:
        if not path.is_file():
            raise _BadInput(f"not a file: {path}" if path.exists() else f"file not found: {path}")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise _BadInput(f"the file is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES / 2**20:.0f} MB")
        if size == 0:
            raise _BadInput("the file is empty (0 bytes)")
        return path.read_bytes()
    except OSError as e:  # permission denied, a file that vanished mid-read, an I/O error
        raise _BadInput(f"cannot read the file: {e.strerror or e}") from e


def _describe(e: Exception) -> str:
    """One line naming the exception, e.g. "PdfReadError: startxref not found"."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:200]}" if lines else type(e).__name__


def _load_pdf(data: bytes, password: str | None, report: LoadReport,
              on_page: Callable[[int, int], None] | None) -> list[Page]:
    """All pages that extracted, empty ones included; a page whose extraction raises becomes a warning.
    PDFium reads each page it can, pypdf the others (see the module doc)."""
    # Acrobat accepts junk before the header within the first 1024 bytes, so pypdf does and so do we.
    if b"%PDF-" not in data[:1024]:
        what = next((name for magic, name in _MAGIC.items() if data.startswith(magic)), None)
        raise _BadInput(f"not a PDF: the file is {what}" if what else "not a PDF: it has no '%PDF-' header")
    pdfium = None if _inflates_too_much(data) else _Pdfium.open(data, password)
    if pdfium is None:
        reader, n_pages = _open_pdf(data, password)
    else:
        reader, n_pages = None, pdfium.n_pages  # pypdf's reader is opened when a page needs it
    report.pages_total = n_pages
    if pdfium is not None and not 0 < n_pages <= MAX_PAGES:
        pdfium.close()  # before the errors below
    if n_pages == 0:
        raise _BadInput("the PDF has no pages")
    if n_pages > MAX_PAGES:
        raise _BadInput(f"the PDF has {n_pages} pages; the limit is {MAX_PAGES}")

    pages, slow = [], 0
    for number in range(1, n_pages + 1):
        if slow == MAX_SLOW_PAGES:
            report.warnings.append(f"pages {number}-{n_pages}: not read, as {slow} pages took over {PAGE_SECONDS:g} s "
                                   f"or held over {MAX_PAGE_CHARS:,} characters each (a damaged or hostile file?)")
            break
        text, by_pypdf = None, pdfium is None
        try:
            if pdfium is not None:
                try:
                    text = pdfium.text(number - 1)
                    by_pypdf = _pypdf_reads_better(text)
                except pypdfium2.PdfiumError:
                    by_pypdf = True
                except _PageTimeout:  # PDFium finishes the page in its thread; pypdf reads it and the rest
                    pdfium, by_pypdf = pdfium.close(wait=False), True
            if by_pypdf and reader is None:
                try:
                    reader = _open_pdf(data, password)[0]
                except _BadInput:  # a file only PDFium repairs (a lost startxref): PDFium's text stands
                    reader = False
            if by_pypdf and reader:
                text = _extract_page(reader, number - 1)
            elif pdfium is None and reader is False:
                report.warnings.append(f"pages {number}-{n_pages}: not read, as PDFium took over "
                                       f"{PDFIUM_PAGE_SECONDS:g} s on page {number} and pypdf cannot open the file")
                break
            elif text is None:
                report.warnings.append(f"page {number}: text extraction failed, page skipped (PDFium cannot read it)")
        # pypdf failed where PDFium read (worse) text: that text stands; where PDFium read none, the page is skipped
        except _PageTimeout:
            slow += 1
            if text is None:
                report.warnings.append(f"page {number}: text extraction took over {PAGE_SECONDS:g} s, page skipped")
            reader = _open_pdf(data, password)[0]  # a stopped extraction may have left the reader half-updated
        except Exception as e:  # one broken content stream must not lose the other pages (see _open_pdf)
            if text is None:
                report.warnings.append(f"page {number}: text extraction failed, page skipped ({_describe(e)})")
        if text is not None and len(text) > MAX_PAGE_CHARS:  # PDFium reads a million operators in ~1 s
            slow += 1
            report.warnings.append(f"page {number}: {len(text):,} characters of text, over the limit of "
                                   f"{MAX_PAGE_CHARS:,}: page skipped")
        elif text is not None:
            pages.append(Page(number, text))
        if on_page is not None:
            on_page(number, n_pages)
    if pdfium is not None:
        pdfium.close()
    return pages


def pdfium_text(textpage: pypdfium2.PdfTextPage) -> str:
    """A page's text as the loader keeps it: PDFium's `get_text_range()` with "\\r\\n" line ends made "\\n",
    and U+FFFE, PDFium's mark for a character without Unicode, made "-" where PDFium flags it as a hyphen
    (one that ended a line, joined to the next: "third-party", "Appli-cation") and U+FFFD otherwise (a
    ligature its font does not map). So offset i in it is PDFium's character i plus the "\\r"s before it,
    except after a character outside the BMP (two UTF-16 units, two PDFium characters, one here).
    The caller holds `PDFIUM_LOCK`."""
    text = textpage.get_text_range(errors="replace")  # a lone surrogate becomes one U+FFFD: offsets stay
    if "\ufffe" in text:
        chars = list(text)
        for i, char in enumerate(chars):
            if char == "\ufffe":
                chars[i] = "-" if pdfium_c.FPDFText_IsHyphen(textpage, i) else "\ufffd"
        text = "".join(chars)
    return text.replace("\r\n", "\n")


def _pypdf_reads_better(text: str) -> bool:
    """Whether pypdf reads this page better than PDFium did, going by PDFium's text:
    - PDFium put most characters on a line of their own: pages whose glyphs are placed one by one, a little off
      the baseline (4 of the filings' ~1,100 pages, 62-92% one-character lines; no other page over 25%);
    - right-to-left script: PDFium gave Arabic in visual order, reversed ("يبيبَح" for "حَبيبي"), pypdf in
      logical order (data/pdfs/robustness/rotated-pages-arabic-rtl.pdf)."""
    if _RIGHT_TO_LEFT.search(text):
        return True
    lines = [line for line in text.splitlines() if line.strip()]
    single = sum(len(line.strip()) == 1 for line in lines)
    return single >= 10 and 2 * single > len(lines)


_RIGHT_TO_LEFT = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefe]")  # Hebrew, Arabic, Syriac, Thaana, ...
_STREAM = re.compile(rb">>\s*stream\r?\n")  # a stream's data starts after its dictionary


def _inflates_too_much(data: bytes) -> bool:
    """Whether the file's Flate streams (page contents, fonts, forms, object streams) inflate past
    MAX_INFLATED_BYTES together: PDFium would inflate them in memory without a limit (a 2.5 MB file
    inflating to 2.5 GB takes it 3.6 GB), pypdf stops each at 75 MB. Images are not counted: text extraction
    does not decode them. zlib inflates ~0.5 GB/s, so a legitimate file costs milliseconds."""
    total = 0
    for match in _STREAM.finditer(data):
        start = data.rfind(b"obj", max(0, match.start() - 4096), match.start())
        dictionary = data[start:match.start()] if start >= 0 else b""
        if b"/FlateDecode" not in dictionary or b"/Image" in dictionary:
            continue
        inflater = zlib.decompressobj()
        try:
            total += len(inflater.decompress(data[match.end():match.end() + MAX_FILE_BYTES],
                                             MAX_INFLATED_BYTES - total + 1))
        except zlib.error:
            continue  # damaged or not Flate after all: PDFium and pypdf deal with it
        if total > MAX_INFLATED_BYTES:
            return True
    return False


def _open_pdfium(data: bytes, password: str | None) -> pypdfium2.PdfDocument | None:
    """The document open in PDFium with the password, else with none; None when neither opens it. The caller
    holds PDFIUM_LOCK."""
    for candidate in [password, None] if password else [None]:
        try:
            return pypdfium2.PdfDocument(data, password=candidate)
        except pypdfium2.PdfiumError:
            continue
    return None


def _recognise(data: bytes, password: str | None, pages: list[Page], report: LoadReport,
               on_ocr: Callable[[int, int], None] | None) -> int:
    """Replaces the empty text of up to MAX_OCR_PAGES pages by what OCR reads on them (`rag.ocr`), lists the
    pages where it read something in `report.pages_ocr`, and returns how many it read. PDFium renders them, so a
    file only pypdf opens is not read."""
    empty = [page for page in pages if not page.text.strip()][:MAX_OCR_PAGES]
    if not empty:
        return 0
    try:
        from rag import ocr

        ocr.engine()  # OpenCV and onnxruntime load only when a file has a page to read
    except ImportError as e:
        report.warnings.append(f"OCR is not available ({e}): pip install rapidocr-onnxruntime (Python < 3.13)")
        return 0
    with PDFIUM_LOCK:
        document = _open_pdfium(data, password)
    if document is None:
        report.warnings.append("OCR skipped: PDFium cannot open this file to render its pages")
        return 0
    try:
        for done, page in enumerate(empty, start=1):
            try:
                with PDFIUM_LOCK:
                    pdf_page = document[page.number - 1]
                    try:
                        image = ocr.render(pdf_page)
                    finally:
                        pdf_page.close()
            except pypdfium2.PdfiumError as e:
                report.warnings.append(f"page {page.number}: cannot be rendered for OCR ({_describe(e)})")
            else:
                page.text = ocr.recognise(image)
                if page.text.strip():
                    report.pages_ocr.append(page.number)
            if on_ocr is not None:
                on_ocr(done, len(empty))
    finally:
        with PDFIUM_LOCK:
            document.close()
    return len(empty)


class _Pdfium:
    """One PDF open in PDFium, in a thread of its own that holds PDFIUM_LOCK until `close`: PDFium is not
    thread-safe, and its C code cannot be stopped, so the loader waits for a page at most PAGE_SECONDS."""

    def __init__(self) -> None:
        self._requests: queue.Queue[int | None] = queue.Queue()
        self._results: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.n_pages = 0

    @classmethod
    def open(cls, data: bytes, password: str | None) -> "_Pdfium | None":
        """The document open, or None when PDFium cannot open it (pypdf then says why) or is still busy
        with another file after PAGE_SECONDS (a hostile page's that it cannot be stopped in)."""
        pdfium = cls()
        pdfium._thread = threading.Thread(target=pdfium._serve, args=(data, password), name="llmkit-pdfium",
                                          daemon=True)
        pdfium._thread.start()
        try:
            result = pdfium._results.get(timeout=2 * PAGE_SECONDS)
        except queue.Empty:
            pdfium.close(wait=False)
            return None
        if not isinstance(result, int):
            return None
        pdfium.n_pages = result
        return pdfium

    def text(self, index: int) -> str:
        """The text of page `index` (`pdfium_text`); raises _PageTimeout after PDFIUM_PAGE_SECONDS, PdfiumError."""
        self._requests.put(index)
        try:
            result = self._results.get(timeout=PDFIUM_PAGE_SECONDS)
        except queue.Empty:
            raise _PageTimeout from None
        if isinstance(result, Exception):
            raise result
        return result

    def close(self, wait: bool = True) -> None:
        """Closes the document and ends the thread, waiting for it unless `wait` is False (a page that ran past
        PAGE_SECONDS: the thread ends when PDFium is done with it). Returns None, for `pdfium = pdfium.close()`."""
        self._requests.put(None)
        if wait:
            self._thread.join()

    def _serve(self, data: bytes, password: str | None) -> None:
        if not PDFIUM_LOCK.acquire(timeout=PAGE_SECONDS):
            self._results.put(None)
            return
        try:
            document = _open_pdfium(data, password)
            if document is None:
                self._results.put(None)
                return
            self._results.put(len(document))
            while (index := self._requests.get()) is not None:
                try:
                    page = document[index]
                except pypdfium2.PdfiumError as e:
                    self._results.put(e)
                    continue
                try:
                    textpage = page.get_textpage()
                    self._results.put(pdfium_text(textpage))
                    textpage.close()
                except pypdfium2.PdfiumError as e:
                    self._results.put(e)
                finally:
                    page.close()
            document.close()
        finally:
            PDFIUM_LOCK.release()


def _open_pdf(data: bytes, password: str | None) -> tuple[pypdf.PdfReader, int]:
    """A reader of the PDF, decrypted, and its number of pages."""
    # pypdf raises more than its own PyPdfError on broken files: a builtin AttributeError on a trailer
    # that is not a dictionary (data/pdfs/robustness/broken-trailer-attributeerror.pdf), and
    # DependencyError derives from Exception directly. So every pypdf call is wrapped in `except Exception`.
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        unlocked = not reader.is_encrypted or _decrypt(reader, password)
        n_pages = len(reader.pages) if unlocked else 0
    except DependencyError as e:  # AES without the `cryptography` package
        raise _BadInput(f"this PDF needs an extra package to open ({e}): pip install cryptography") from e
    except Exception as e:
        raise _BadInput(f"cannot read the PDF, it is damaged or truncated ({_describe(e)})") from e
    if not unlocked:
        if password:
            raise _BadInput("encrypted: the password given does not open this PDF")
        raise _BadInput(f"{NEEDS_PASSWORD} (pass it with --password)")
    return reader, n_pages


def _extract_page(reader: pypdf.PdfReader, index: int) -> str:
    """The text of page `index` (0-based); raises _PageTimeout when it takes over PAGE_SECONDS.

    The extraction runs in a worker thread, so that the caller can stop waiting from any thread: a Gradio handler
    runs in a worker thread, where `signal.alarm` cannot be used. Waiting alone would leave the worker running on
    for minutes, so it is stopped too: CPython's PyThreadState_SetAsyncExc raises _PageTimeout in it at its next
    bytecode, which in pypdf (pure Python) comes within microseconds; a single C call (zlib inflating a stream,
    bounded by pypdf's limits) finishes first. One that lands in a `__del__` or a weakref callback is printed
    ("Exception ignored in ...") and dropped there, so it is raised again until the worker stops, for up to
    PAGE_SECONDS more; a worker still running then (stuck in a C call) is left behind, a daemon thread.
    """
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["text"] = reader.pages[index].extract_text()
        except BaseException as e:  # _PageTimeout included: reported by the caller, never by the thread
            outcome["error"] = e

    worker = threading.Thread(target=work, name=f"llmkit-pdf-page-{index + 1}", daemon=True)
    worker.start()
    worker.join(PAGE_SECONDS)
    deadline = time.monotonic() + PAGE_SECONDS
    while worker.is_alive() and not outcome and time.monotonic() < deadline:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident), ctypes.py_object(_PageTimeout))
        worker.join(0.05)
    if "text" in outcome:
        return outcome["text"]
    error = outcome.pop("error", None)  # popped: the error's frames hold `outcome`, a cycle that would keep the reader
    if error is not None and not isinstance(error, _PageTimeout):
        raise error
    raise _PageTimeout


def _decrypt(reader: pypdf.PdfReader, password: str | None) -> bool:
    """Try the given password, then the empty one: many PDFs are encrypted only to restrict printing."""
    candidates = [password, ""] if password else [""]
    return any(reader.decrypt(candidate) != pypdf.PasswordType.NOT_DECRYPTED for candidate in candidates)


def _decode_text(data: bytes, report: LoadReport) -> str:
    """UTF-8 (BOM or not), UTF-16 with a BOM, else Windows-1252 with a warning: never a crash."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    if b"\x00" in data:
        raise _BadInput("not a text file: it contains NUL bytes (binary data?)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        report.warnings.append(
            f"not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}): "
            "read as Windows-1252, so some characters may be wrong"
        )
        return data.decode("cp1252", errors="replace")


def _split_pages(text: str, report: LoadReport) -> list[Page]:
    """One page per file, or one per form feed (\\f) when the text has them; page numbers follow them."""
    if text.endswith("\f"):  # pdftotext and printers end the last page with one too
        text = text[:-1]
    pages = [Page(number, part) for number, part in enumerate(text.split("\f"), start=1)]
    report.pages_total = len(pages)
    if len(pages) > MAX_PAGES:
        raise _BadInput(f"the file has {len(pages)} pages (form feeds); the limit is {MAX_PAGES}")
    return pages


class _VisibleText(HTMLParser):
    """Collects the text a browser would show: skips script/style/template/noscript, breaks lines at blocks."""

    SKIP = {"script", "style", "template", "noscript"}
    BLOCKS = {"address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "footer",
              "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
              "table", "td", "th", "title", "tr", "ul"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0  # depth inside skipped elements

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self._skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def _html_to_text(html: str) -> str:
    parser = _VisibleText()
    try:
        parser.feed(html)
        parser.close()
    except Exception as e:  # html.parser raises AssertionError on some malformed markup, e.g. "<![foo[ ]]>"
        raise _BadInput(f"cannot parse the HTML ({_describe(e)})") from e
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)
