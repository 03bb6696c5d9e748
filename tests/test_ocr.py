"""rag.ocr and load_file(ocr=...): a scanned page becomes text in reading order; "off" keeps it listed as needing
OCR; the work per file is bounded. Real PDFium and RapidOCR (its models ship in its wheel) on the scan in
data/pdfs/robustness."""

import subprocess
import sys
from pathlib import Path

import pypdfium2
import pytest

from rag import loaders, ocr
from rag.loaders import load_file, load_files

SCAN = Path(__file__).resolve().parents[1] / "data" / "pdfs" / "robustness" / "scanned-image-only-congress.pdf"


def box(left: float, top: float, width: float, height: float) -> list[list[float]]:
    return [[left, top], [left + width, top], [left + width, top + height], [left, top + height]]


def test_boxes_become_lines_top_to_bottom_and_left_to_right():
    """RapidOCR's boxes come in no fixed order; a line's boxes overlap in height even when the scan is skewed."""
    boxes = [(box(300, 52, 80, 20), "No. 25.", 0.9), (box(40, 100, 200, 20), "second line", 0.9),
             (box(40, 50, 120, 20), "41st CONGRESS,", 0.9), (box(170, 48, 90, 20), "SENATE.", 0.9),
             (box(250, 103, 60, 18), "goes on", 0.9)]
    assert ocr._lines(boxes) == [[(40, "41st CONGRESS,"), (170, "SENATE."), (300, "No. 25.")],
                                 [(40, "second line"), (250, "goes on")]]


def test_ocr_off_lists_the_scan_as_needing_ocr_and_bad_values_are_refused():
    pages, report = load_file(SCAN, ocr="off")
    assert pages == [] and report.pages_needing_ocr == [1] and report.pages_ocr == []
    assert report.error == "no page has a text layer (a scanned document?): it needs OCR"
    with pytest.raises(ValueError, match="'auto' or 'off'"):
        load_file(SCAN, ocr="on")


@pytest.mark.slow
def test_ocr_reads_the_scanned_page():
    """The 1871 Senate document: words printed on it, in reading order, and the file is no longer an error."""
    calls = []
    [(pages, report)] = load_files([SCAN], on_ocr=lambda *args: calls.append(args))
    assert report.ok and report.warnings == [] and calls == [(1, 1, SCAN.name)]
    assert report.pages_ocr == [1] and report.pages_needing_ocr == [] and report.pages_with_text == 1
    text = pages[0].text
    assert "SENATE" in text.splitlines()[0]  # the header line: "41ST CONGRESS, SENATE. Ex.Doc."
    for words in ["MESSAGE", "PRESIDENT OF THE UNITED STATES", "HAMILTON FISH", "consular courts"]:
        assert words in text, words
    assert text.index("MESSAGE") < text.index("PRESIDENT OF") < text.index("HAMILTON FISH")


@pytest.mark.slow
def test_ocr_reads_at_most_max_ocr_pages_a_file(tmp_path, monkeypatch):
    """Blank pages: OCR reads two (finding nothing), the third is not read; all three still need OCR."""
    document = pypdfium2.PdfDocument.new()
    for _ in range(3):
        document.new_page(300, 400).close()
    document.save(tmp_path / "blank.pdf")
    document.close()
    monkeypatch.setattr(loaders, "MAX_OCR_PAGES", 2)
    calls = []
    pages, report = load_file(tmp_path / "blank.pdf", on_ocr=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)] and pages == [] and report.pages_ocr == []
    assert report.pages_needing_ocr == [1, 2, 3]
    assert report.error == "no page has a text layer (a scanned document?): OCR found no text on it"


def test_a_render_is_rgb_at_the_ocr_resolution():
    document = pypdfium2.PdfDocument(SCAN.read_bytes())
    try:
        image = ocr.render(document[0])
    finally:
        document.close()
    width, height = 200, 304  # the page in points
    assert image.shape[2] == 3 and image.shape[:2] == pytest.approx((height * ocr.RENDER_DPI / 72,
                                                                     width * ocr.RENDER_DPI / 72), abs=1)
    assert image.dtype.name == "uint8" and image.mean() > 100  # paper, not a black (BGRA misread) page


def test_without_the_ocr_package_a_scan_still_says_it_needs_ocr():
    """rapidocr-onnxruntime has no wheel for Python 3.13+: there OCR is off, with a warning that names the package."""
    code = ("import sys; sys.modules['rapidocr_onnxruntime'] = None\n"
            "from rag.loaders import load_file\n"
            f"report = load_file({str(SCAN)!r})[1]\n"
            "print(report.error); print(report.warnings)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    error, warnings = out.stdout.splitlines()
    assert error == "no page has a text layer (a scanned document?): it needs OCR"
    assert "OCR is not available" in warnings and "pip install rapidocr-onnxruntime" in warnings
