"""Page images for the source viewer: one PDF page rendered with PDFium, the cited passage highlighted on it.

The passage is found in PDFium's text of the page whitespace-, hyphen-, case- and ligature-insensitively (the
stored passage may come from another extractor, with other line ends and spaces), else by its first and last
PROBE_CHARS; the characters found give PDFium's text rectangles, merged into one box per line and drawn in
translucent yellow (multiplied, so the print stays black).

Bounds, as documents come from outside: the image is at most `max_width` pixels wide and MAX_PIXELS in all
(a huge page renders smaller), rendering stops after `timeout` seconds (PDFium's progressive rendering asks
between page objects, so one enormous object can still overrun it), and the passage is not searched on a page
with more than MAX_PAGE_CHARS characters. Measured on 47 pages of four filings (10-Ks, an earnings release), 1000 px
wide, on a busy 2-core machine: render and highlight ~30 ms a page (the slowest 0.5 s), PNG ~30 ms and 50-110 KB;
passages cut from pypdf's text of those pages were all found (52 of 54 whole, 2 by their start and end).

PDFium is not thread-safe, even across documents: every call here holds rag.loaders.PDFIUM_LOCK, as the loaders'
calls do (an upload read in one session while another's page is shown).

Does not: render documents other than PDFs, OCR, or cache images (the viewer renders one page per click).
"""

from __future__ import annotations

import io
import math
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.internal as pdfium_i
import pypdfium2.raw as pdfium_c
from PIL import Image, ImageChops, ImageDraw

from rag.loaders import PDFIUM_LOCK

MAX_WIDTH = 1000  # px: ~3x the page column on a desktop, enough to read a filing's small print when zoomed
MAX_PIXELS = 3_000_000  # a tall or odd-sized page renders smaller rather than taking ~10 MB+ per image
MAX_SCALE = 3.0  # a small page (a label, a slide) is not blown up beyond 216 dpi
MAX_PAGE_CHARS = 200_000  # pages with more characters are shown without a highlight (a hostile text layer)
MAX_PASSAGE_CHARS = 20_000  # of the passage searched for; a passage is a chunk of ~1,000 characters
PROBE_CHARS = 40  # the passage's start and end looked for when the whole passage is not on the page
RENDER_SECONDS = 10.0
HIGHLIGHT = (255, 221, 87)  # the colour a white pixel takes under the highlight
PAD = 2  # px around each highlighted line

Box = tuple[int, int, int, int]  # left, top, right, bottom in image pixels (right and bottom exclusive)
Rect = tuple[float, float, float, float]  # left, bottom, right, top in PDF points (origin bottom left)
_IGNORED = frozenset("-\u00ad\u2010\u2011\x02")  # hyphens: one extractor keeps a line-end hyphen, another drops it


class PageError(ValueError):
    """The page cannot be shown: not a PDF, damaged, encrypted without the right password, or no such page."""


class PageTimeoutError(TimeoutError):
    """Rendering the page took longer than its timeout."""


@dataclass
class PageImage:
    image: Image.Image  # RGB, the passage highlighted
    boxes: list[Box]  # one per line of the passage, in reading order; [] when the passage was not found
    page_count: int

    def png(self) -> bytes:
        """The image as a PNG of 256 colours: ~40 KB for a filing's page where full colour takes ~250 KB (and as
        long to encode), with no difference to see on text and tables (a photo on the page may show banding)."""
        out = io.BytesIO()
        self.image.quantize(256, method=Image.Quantize.FASTOCTREE).save(out, format="PNG")
        return out.getvalue()


def render_page(path: str | Path, page_number: int, passage: str | None = None, password: str | None = None,
                max_width: int = MAX_WIDTH, timeout: float = RENDER_SECONDS) -> PageImage:
    """Page `page_number` (1-based) of the PDF at `path` as an image at most `max_width` px wide (and MAX_PIXELS),
    with `passage` highlighted where it is found on the page.

    Raises FileNotFoundError, PageError (not a PDF, damaged, encrypted without the right `password`, no such
    page), PageTimeoutError (rendering ran past `timeout` seconds).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(str(path), password=password)
        except pdfium.PdfiumError as e:
            raise PageError(f"{path}: {e}") from e
        try:
            page_count = len(pdf)
            if not 1 <= page_number <= page_count:
                raise PageError(f"{path} has {page_count} pages; there is no page {page_number}")
            page = pdf[page_number - 1]
            try:
                scale = _scale(*page.get_size(), max_width)
                image, size = _render(page, scale, timeout)
                rects = _passage_rects(page, passage) if passage else []
                boxes = [_to_pixels(page, size, line) for line in _lines(rects)]
            except pdfium.PdfiumError as e:
                raise PageError(f"{path}, page {page_number}: {e}") from e
            finally:
                page.close()
        finally:
            pdf.close()
    return PageImage(highlight(image, boxes), boxes, page_count)


def highlight(image: Image.Image, boxes: list[Box], color: tuple[int, int, int] = HIGHLIGHT) -> Image.Image:
    """`image` with `boxes` painted as a highlighter does: white becomes `color`, black stays black."""
    if not boxes:
        return image
    layer = Image.new("RGB", image.size, (255, 255, 255))
    draw = ImageDraw.Draw(layer)
    for left, top, right, bottom in boxes:
        draw.rectangle((left, top, right - 1, bottom - 1), fill=color)
    return ImageChops.multiply(image, layer)


def find_passage(page_text: str, passage: str) -> tuple[int, int] | None:
    """The span [start, end) of `page_text` that holds `passage`, matched ignoring whitespace, hyphens, case and
    ligatures; else the span from its first PROBE_CHARS to its last (when both are found, in order, within twice
    the passage's length), else the span of whichever of the two is found; None when neither is."""
    keys, sources = _normalise(page_text)
    wanted = "".join(_normalise(passage[:MAX_PASSAGE_CHARS])[0])
    text = "".join(keys)
    if not wanted:
        return None
    at = text.find(wanted)
    if at >= 0:
        return sources[at], sources[at + len(wanted) - 1] + 1
    if len(wanted) <= 2 * PROBE_CHARS:
        return None
    head, tail = wanted[:PROBE_CHARS], wanted[-PROBE_CHARS:]
    start = text.find(head)
    end = text.find(tail, start + PROBE_CHARS) if start >= 0 else -1
    if start >= 0 and end >= 0 and end + PROBE_CHARS - start <= 2 * len(wanted):
        return sources[start], sources[end + PROBE_CHARS - 1] + 1
    if start >= 0:
        return sources[start], sources[start + PROBE_CHARS - 1] + 1
    end = text.find(tail)
    if end >= 0:
        return sources[end], sources[end + PROBE_CHARS - 1] + 1
    return None


def _normalise(text: str) -> tuple[list[str], list[int]]:
    """The characters matching compares (NFKC, lower case, no whitespace or hyphens), and for each the index of
    the character of `text` it came from (a ligature gives several)."""
    keys, sources = [], []
    for i, char in enumerate(text):
        for part in unicodedata.normalize("NFKC", char).lower():
            if not part.isspace() and part not in _IGNORED and part.isprintable():
                keys.append(part)
                sources.append(i)
    return keys, sources


def _scale(width: float, height: float, max_width: int) -> float:
    """Pixels per PDF point: the page `max_width` px wide, within MAX_PIXELS and MAX_SCALE."""
    return min(max_width / width, math.sqrt(MAX_PIXELS / (width * height)), MAX_SCALE)


def _render(page: pdfium.PdfPage, scale: float, timeout: float) -> tuple[Image.Image, tuple[int, int]]:
    """The page at `scale` (its /Rotate applied, annotations drawn) on white, by PDFium's progressive renderer,
    which asks between page objects whether to pause: after `timeout` seconds it stops (PageTimeoutError)."""
    deadline = time.monotonic() + timeout
    width, height = max(1, round(page.get_width() * scale)), max(1, round(page.get_height() * scale))
    bitmap = pdfium.PdfBitmap.new_native(width, height, pdfium_c.FPDFBitmap_BGR)
    try:
        bitmap.fill_rect((255, 255, 255, 255), 0, 0, width, height)
        pause = pdfium_c.IFSDK_PAUSE(version=1)
        pdfium_i.set_callback(pause, "NeedToPauseNow", lambda _: time.monotonic() > deadline)
        status = pdfium_c.FPDF_RenderPageBitmap_Start(bitmap, page, 0, 0, width, height, 0, pdfium_c.FPDF_ANNOT,
                                                      pause)
        while status == pdfium_c.FPDF_RENDER_TOBECONTINUED and time.monotonic() <= deadline:
            status = pdfium_c.FPDF_RenderPage_Continue(page, pause)
        pdfium_c.FPDF_RenderPage_Close(page)
        if status == pdfium_c.FPDF_RENDER_TOBECONTINUED:
            raise PageTimeoutError(f"rendering the page took over {timeout:g} s")
        image = bitmap.to_pil().convert("RGB")  # a copy: the bitmap's buffer is freed below
    finally:
        bitmap.close()
    return image, (width, height)


def _passage_rects(page: pdfium.PdfPage, passage: str) -> list[Rect]:
    """PDFium's text rectangles (left, bottom, right, top in PDF points) of the passage's characters on the page."""
    textpage = page.get_textpage()
    try:
        count = textpage.count_chars()
        if count > MAX_PAGE_CHARS:
            return []
        text = "".join(chr(pdfium_c.FPDFText_GetUnicode(textpage, i)) for i in range(count))
        span = find_passage(text, passage)
        if span is None:
            return []
        start, end = span
        return [textpage.get_rect(i) for i in range(textpage.count_rects(start, end - start))]
    finally:
        textpage.close()


def _to_pixels(page: pdfium.PdfPage, size: tuple[int, int], rect: Rect) -> Box:
    """A rectangle in PDF points (origin bottom left, before /Rotate and the crop box) as pixels of the image
    `_render` made (origin top left), by PDFium's own transform; padded by PAD, within the image."""
    convert = pdfium.PdfPosConv(page, (0, 0, *size, 0))
    left, bottom, right, top = rect
    (x0, y0), (x1, y1) = convert.to_bitmap(left, bottom), convert.to_bitmap(right, top)
    width, height = size
    return (max(0, min(x0, x1) - PAD), max(0, min(y0, y1) - PAD), min(width, max(x0, x1) + PAD),
            min(height, max(y0, y1) + PAD))


def _lines(rects: list[Rect]) -> list[Rect]:
    """Rectangles (PDF points) that share most of their height merged into one per line (a table row's cells, the
    words PDFium splits at font changes), top of the page first. In page space, before /Rotate: there the lines
    of a page's ordinary text are horizontal, however the page is turned."""
    lines: list[list[float]] = []
    for left, bottom, right, top in sorted(rects, key=lambda r: (-r[3], r[0])):
        if top - bottom < 0.5 or right <= left:  # the spaces and line ends PDFium adds have no height
            continue
        line = lines[-1] if lines else None
        if line and min(top, line[3]) - max(bottom, line[1]) >= 0.5 * min(top - bottom, line[3] - line[1]):
            line[:] = min(left, line[0]), min(bottom, line[1]), max(right, line[2]), max(top, line[3])
        else:
            lines.append([left, bottom, right, top])
    return [(left, bottom, right, top) for left, bottom, right, top in lines]
