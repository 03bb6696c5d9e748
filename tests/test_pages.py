"""rag.pages and the PDF chat's page view: a cited page rendered by PDFium with the passage highlighted where its
words are (turned and cropped pages too), the passage matched across extractors' whitespace, hyphens and ligatures,
bounds and errors; the page view shows the image for a PDF and the text for the rest (toy embedder)."""

from __future__ import annotations

import base64
import io
import re
import shutil

import numpy as np
import pypdf
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageChops

from apps.pdf_chat import PdfChat
from rag import samples
from rag.answer import Source
from rag.pages import HIGHLIGHT, PageError, PageTimeoutError, find_passage, render_page

from conftest import ROBUSTNESS_PDFS, scripted_llm

SRX = samples.FOLDER / "nist-srx-proxy-protocol-3.0.pdf"  # 34 pages of US Letter (612 x 792 pt)
PAGE = 30
PASSAGE = "The Keep Window field of the goodbye message specifies a time in seconds the data should be held."
WIDTH, HEIGHT = 1000, round(792 * 1000 / 612)


def first_word_box(path, page_number: int, word: str) -> tuple[float, float, float, float]:
    """PDFium's box of the first character of `word` on the page, in PDF points (left, bottom, right, top)."""
    pdf = pdfium.PdfDocument(str(path))
    try:
        textpage = pdf[page_number - 1].get_textpage()
        index = textpage.get_text_range().index(word)
        return textpage.get_charbox(index)
    finally:
        pdf.close()


def union(boxes) -> tuple[int, int, int, int]:
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


def test_a_page_renders_at_the_width_bound_keeping_its_proportions():
    rendered = render_page(SRX, PAGE)
    assert rendered.image.size == (WIDTH, HEIGHT) and rendered.image.mode == "RGB"
    assert rendered.page_count == 34 and rendered.boxes == []
    assert render_page(SRX, PAGE, max_width=500).image.size == (500, round(792 * 500 / 612))
    assert Image.open(io.BytesIO(rendered.png())).size == (WIDTH, HEIGHT)


def test_the_passage_is_highlighted_where_its_words_are():
    plain, lit = render_page(SRX, PAGE), render_page(SRX, PAGE, PASSAGE)
    assert len(lit.boxes) == 3  # "The" ends one line, then two lines: one box per line, in reading order
    assert [b[1] for b in lit.boxes] == sorted(b[1] for b in lit.boxes)
    left, bottom, right, top = first_word_box(SRX, PAGE, "Keep Window")  # independent: points to pixels by hand
    scale = WIDTH / 612
    x, y = (left + right) / 2 * scale, (792 - (bottom + top) / 2) * scale
    assert any(b[0] <= x < b[2] and b[1] <= y < b[3] for b in lit.boxes), (x, y, lit.boxes)
    before, after = np.asarray(plain.image), np.asarray(lit.image)
    for x0, y0, x1, y1 in lit.boxes:  # the page's white became the highlight's colour; the print stayed dark
        was, now = before[y0:y1, x0:x1], after[y0:y1, x0:x1]
        white, dark = (was == 255).all(axis=-1), was.max(axis=-1) < 60
        assert white.mean() > 0.3 and (now[white] == HIGHLIGHT).all()
        assert dark.any() and (now[dark] < 60).all()
    x0, y0, x1, y1 = union(lit.boxes)
    changed = ImageChops.difference(plain.image, lit.image).getbbox()  # nothing outside the boxes
    assert x0 <= changed[0] and y0 <= changed[1] and changed[2] <= x1 and changed[3] <= y1


def test_a_passage_extracted_by_pypdf_is_found_line_by_line():
    text = pypdf.PdfReader(SRX).pages[PAGE - 1].extract_text()  # other spaces and line ends than PDFium's
    start = text.index("Once the goodbye message is sent out, the proxy")
    passage = text[start:text.index("should be held.") + len("should be held.")]
    assert "\n" in passage and "  " in passage
    assert len(render_page(SRX, PAGE, passage).boxes) == 5  # the paragraph's five lines


def test_a_passage_not_on_the_page_gives_no_boxes():
    other = render_page(SRX, PAGE - 1, PASSAGE)
    assert other.boxes == [] and other.image == render_page(SRX, PAGE - 1).image


@pytest.mark.parametrize("rotation", [90, 270])
def test_on_a_turned_page_the_highlight_turns_with_it(rotation, tmp_path):
    pdf = pdfium.PdfDocument(str(SRX))
    pdf[PAGE - 1].set_rotation(rotation)
    pdf.save(tmp_path / "turned.pdf")
    pdf.close()
    upright, turned = render_page(SRX, PAGE, PASSAGE), render_page(tmp_path / "turned.pdf", PAGE, PASSAGE)
    assert turned.image.size == (WIDTH, round(612 * WIDTH / 792))
    assert len(turned.boxes) == len(upright.boxes)  # lines are still lines: upright in the image now
    x0, y0, x1, y1 = np.array(union(upright.boxes)) / [WIDTH, HEIGHT, WIDTH, HEIGHT]
    expected = (1 - y1, x0, 1 - y0, x1) if rotation == 90 else (y0, 1 - x1, y1, 1 - x0)  # clockwise, as /Rotate
    width, height = turned.image.size
    got = np.array(union(turned.boxes)) / [width, height, width, height]
    assert np.allclose(got, expected, atol=0.01), (got, expected)


def test_on_a_cropped_page_the_highlight_stays_on_its_words(tmp_path):
    pdf = pdfium.PdfDocument(str(SRX))
    pdf[PAGE - 1].set_cropbox(50, 100, 562, 692)
    pdf.save(tmp_path / "cropped.pdf")
    pdf.close()
    full, cropped = render_page(SRX, PAGE, PASSAGE), render_page(tmp_path / "cropped.pdf", PAGE, PASSAGE)
    scale = WIDTH / 512
    assert cropped.image.size == (WIDTH, round(592 * scale))

    def in_points(box, scale, left, top):
        return np.array([left + box[0] / scale, top - box[1] / scale, left + box[2] / scale, top - box[3] / scale])

    for a, b in zip(full.boxes, cropped.boxes, strict=True):
        assert np.allclose(in_points(a, WIDTH / 612, 0, 792), in_points(b, scale, 50, 692), atol=2), (a, b)


def test_matching_ignores_whitespace_hyphens_case_and_ligatures():
    page = "Intro.\r\nThe e\ufb03cient proto-\r\ncol   is used.\r\nMore."
    span = find_passage(page, "the efficient\nprotocol is used")
    assert span is not None and page[slice(*span)] == "The e\ufb03cient proto-\r\ncol   is used"
    assert find_passage(page, "a sentence that is not there") is None
    assert find_passage(page, " \n ") is None


def test_a_reflowed_passage_is_found_by_its_start_and_end():
    head, tail = "Consolidated Statements of Cash Flows for the year", "net cash provided by operating activities 123"
    page = f"Other text. {head} 2022 2021 2020 depreciation 11 10 9 {tail} Later text."
    reflowed = f"{head} depreciation 2022 11 2021 10 2020 9 {tail}"  # a table read in another order
    span = find_passage(page, reflowed)
    assert span is not None and page[slice(*span)] == page[page.index(head):page.index(tail) + len(tail)]
    only_start = find_passage(page, f"{head} and then words the page does not have at all, none of them")
    assert only_start is not None and page[slice(*only_start)].replace(" ", "") == head.replace(" ", "")[:40]


def test_bad_files_pages_and_passwords_are_errors(tmp_path, bad_files):
    with pytest.raises(FileNotFoundError):
        render_page(tmp_path / "gone.pdf", 1)
    for path in bad_files:
        if path.name != "corrupt.pdf":  # PDFium repairs this one (pypdf cannot read it)
            with pytest.raises(PageError):
                render_page(path, 1)
    for page in (0, 35):
        with pytest.raises(PageError, match="has 34 pages"):
            render_page(SRX, page)
    locked = ROBUSTNESS_PDFS / "encrypted-aes256-userpw-foo.pdf"
    for password in (None, "wrong"):
        with pytest.raises(PageError, match="password"):
            render_page(locked, 1, password=password)
    assert render_page(locked, 1, password="foo").image.size[0] == WIDTH


def test_rendering_stops_at_its_timeout():
    with pytest.raises(PageTimeoutError):
        render_page(SRX, PAGE, timeout=0)


# --- the PDF chat's page view ----------------------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path, toy_embedder):
    notes = tmp_path / "notes.txt"
    notes.write_text("The Keep Window is also discussed in these notes, kept as plain text.")
    chat = PdfChat(tmp_path / "home", llm=scripted_llm("unused"), embedder=toy_embedder)
    report = chat.upload("docs", [SRX, notes])
    assert report.count("added") == 2, report
    return chat


def source_on(app: PdfChat, file: str, page: int, words: str, shown_page: int | None = None) -> Source:
    """The Source of the passage of `file` on `page` that holds `words`, as the retriever would give it (shown on
    `shown_page` when given)."""
    with app.open_collections.use("docs") as entry:
        record = entry.collection.find(file)
        chunks = entry.collection.store.chunks_by_ids(entry.collection.store.chunk_ids(record.doc_id))
    chunk = next(c for c in chunks if c.page == page and words in c.text)
    return Source(1, file, shown_page or page, chunk.text, 0.0, 0.0, doc_id=record.doc_id)


def image_in(view: str) -> Image.Image:
    data = re.search(r"src='data:image/png;base64,([^']+)'", view).group(1)
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_the_page_view_shows_a_pdf_page_as_an_image_with_the_text_folded(app):
    view = app.page_view("docs", source_on(app, SRX.name, PAGE, "Keep Window"))
    assert view.startswith(f"<h4>{SRX.name}, page {PAGE}</h4><div class='page-image'")
    assert image_in(view).size == (WIDTH, HEIGHT) and "class='page-passage'" in view
    folded = view.split("<details><summary>Show text</summary>")[1]
    assert folded.count("<mark>") == 1 and "Keep Window" in folded.split("<mark>")[1].split("</mark>")[0]


def test_the_page_view_shows_text_when_there_is_no_page_to_render(app):
    text_view = app.page_view("docs", source_on(app, "notes.txt", 1, "Keep Window"))
    assert "<img" not in text_view and text_view.count("<mark>") == 1

    elsewhere = app.page_view("docs", source_on(app, SRX.name, PAGE, "Keep Window", shown_page=PAGE - 1))
    assert elsewhere.index("<div class='page-text'") < elsewhere.index("<summary>Show the page</summary>")
    assert "page-passage" not in elsewhere and image_in(elsewhere).size == (WIDTH, HEIGHT)

    directory = app.data_dir / "collections" / "docs"
    shutil.rmtree(directory / "pdfs")  # the kept PDF and the app's copy of the upload gone: the text stays
    shutil.rmtree(directory / "files")
    gone = app.page_view("docs", source_on(app, SRX.name, PAGE, "Keep Window"))
    assert "<img" not in gone and gone.count("<mark>") == 1 and f"{SRX.name}, page {PAGE}" in gone


def test_the_app_upload_is_kept_once_on_disk(app):
    directory = app.data_dir / "collections" / "docs"
    [kept] = (directory / "pdfs").iterdir()
    [upload] = directory.glob(f"files/*/{SRX.name}")
    assert kept.samefile(upload)  # a hard link to the app's own copy, not a second copy
    app.remove("docs", SRX.name)
    assert not kept.exists() and not upload.exists()
