"""OCR for PDF pages without a text layer: PDFium renders the page, RapidOCR reads it.

RapidOCR (`rapidocr-onnxruntime`) runs PaddleOCR's PP-OCRv4 detection and recognition models with onnxruntime on
the CPU; the models ship inside its wheel, so nothing is downloaded. The engine loads once per process, on the
first page (~1 s), and reads a page in ~1-3 s. `rag.loaders` decides which pages to read (`ocr="auto"`: those
whose text layer is empty) and holds PDFium's lock while `render` runs.

What it deliberately does not do:
- Read images on pages that have a text layer, or pick a language: PP-OCRv4 reads Latin letters, digits and
  Chinese; other scripts come out wrong.
- Keep the layout beyond lines: boxes whose middles are at one height form a line, read left to right, so two
  columns side by side are read across, line by line.
- Map its text back to character boxes on the page (a later viewer shows such a page without highlights).
"""

import threading

import numpy as np
import pypdfium2

RENDER_DPI = 200  # PP-OCRv4 reads body text well from ~150 dpi; more costs time and finds no more
MAX_SIDE_PX = 2000  # the rendered page's longer side at most, as the detector resizes to at most this anyway

_engine = None
_engine_lock = threading.Lock()


def render(page: pypdfium2.PdfPage) -> np.ndarray:
    """The page as an RGB image (height, width, 3) at RENDER_DPI, its longer side at most MAX_SIDE_PX.
    The caller holds `rag.loaders.PDFIUM_LOCK`."""
    width, height = page.get_size()  # points, 1/72 inch
    scale = min(RENDER_DPI / 72, MAX_SIDE_PX / max(width, height, 1))
    bitmap = page.render(scale=scale)
    try:
        return np.array(bitmap.to_numpy()[:, :, 2::-1])  # PDFium's BGR(A) to RGB, copied out of the bitmap
    finally:
        bitmap.close()


def recognise(image: np.ndarray) -> str:
    """The text on an RGB image (height, width, 3), one line per text line, top to bottom (see the module doc)."""
    result, _ = engine()(image)
    return "\n".join(" ".join(text for _, text in line) for line in _lines(result or []))


def engine():
    """The process's RapidOCR engine, created on first use. ImportError when rapidocr-onnxruntime is not
    installed (it needs Python < 3.13)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            from rapidocr_onnxruntime import RapidOCR  # imports OpenCV and onnxruntime: only when a page needs it
            _engine = RapidOCR()
        return _engine


def _lines(boxes: list) -> list[list[tuple[float, str]]]:
    """RapidOCR's boxes ([4 corner points], text, score) grouped into lines of (left x, text), top to bottom.

    A box joins the line whose vertical middle lies within it (boxes of one line overlap in height), and each line
    reads left to right."""
    lines: list[tuple[float, list[tuple[float, str]]]] = []  # (middle y of the first box, its boxes)
    for corners, text, _score in sorted(boxes, key=lambda box: min(y for _, y in box[0])):
        ys = [y for _, y in corners]
        top, bottom, left = min(ys), max(ys), min(x for x, _ in corners)
        line = next((boxes for middle, boxes in lines if top <= middle <= bottom), None)
        if line is None:
            lines.append(((top + bottom) / 2, [(left, text)]))
        else:
            line.append((left, text))
    return [sorted(line) for _, line in sorted(lines, key=lambda item: item[0])]
