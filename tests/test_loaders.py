"""rag.loaders: every kind of bad input ends up as a clear error in its report, never as an exception,
and good files keep their 1-based page numbers. Real PDFium and pypdf on the PDFs in data/pdfs (see its README):
each robustness file is read as the loader reads it (PDFium, pypdf where PDFium fails) and by pypdf alone, the
reference and fallback."""

import hashlib
import re
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rag import loaders, samples
from rag.loaders import MAX_TEXT_CHARS, LoadReport, Page, TextItem, load_file, load_files, load_text

DATA = Path(__file__).resolve().parents[1] / "data" / "pdfs"
ROBUSTNESS = DATA / "robustness"
DEMO = samples.FOLDER

# What pypdf 7.1.1 does with each file (data/pdfs/README.md) and what the loader must report.
# error: a substring of report.error, or None; text: (page number, a phrase expected on that page).
# ocr="off" here: tests/test_ocr.py reads the scan.
EXPECTED = {
    "acroform-libreoffice.pdf": dict(error=None, total=1, with_text=1, text=(1, "First Name")),
    "broken-trailer-attributeerror.pdf": dict(error="damaged or truncated (AttributeError", total=0, with_text=0),
    "content-stream-error-on-page3.pdf": dict(error=None, total=4, with_text=3, text=(4, "Potato"),
                                              warning="page 3: text extraction failed"),
    "damaged-startxref.pdf": dict(error="startxref not found", total=0, with_text=0),
    "embedded-attachment.pdf": dict(error=None, total=1, with_text=1, text=(1, "Lorem ipsum")),
    # The trap: an empty *owner* password opens it without the user password.
    "encrypted-aes256-userpw-but-empty-ownerpw.pdf": dict(error=None, total=1, with_text=1,
                                                          text=(1, "password: asdfzxcv")),
    "encrypted-aes256-userpw-foo.pdf": dict(error="needs a password", total=0, with_text=0),
    "encrypted-emptypw-xfa-form-dd0293.pdf": dict(error=None, total=4, with_text=4, text=(1, "DISCHARGE")),
    "encrypted-rc4-userpw-openpassword.pdf": dict(error="needs a password", total=0, with_text=0),
    "ligatures-two-column-latex.pdf": dict(error=None, total=3, with_text=3, text=(1, "Two-Column Document")),
    "many-pages-51.pdf": dict(error=None, total=51, with_text=51, text=(51, "Potato")),
    "multilingual-unicode-libreoffice.pdf": dict(error=None, total=1, with_text=1, text=(1, "Привет, мир")),
    "not-a-pdf-5-bytes.pdf": dict(error="not a PDF", total=0, with_text=0),
    "rotated-pages-arabic-rtl.pdf": dict(error=None, total=4, with_text=4, text=(4, "habibi")),
    "scanned-image-only-congress.pdf": dict(error="needs OCR", total=1, with_text=0, ocr=[1]),
    "zero-pages.pdf": dict(error="no pages", total=0, with_text=0),
}
# Where PDFium (pypdfium2 5.15.2) does better than pypdf: it rebuilds a lost xref, as qpdf does (the file is a
# 30-page document whose startxref was overwritten), and reads page 3's text in spite of its broken stream.
PDFIUM_BETTER = {
    "damaged-startxref.pdf": dict(error=None, total=30, with_text=30, text=(30, "Potato 29")),
    "content-stream-error-on-page3.pdf": dict(error=None, total=4, with_text=4, text=(3, "Potato")),
}
PASSWORDS = {
    "encrypted-aes256-userpw-foo.pdf": "foo",
    "encrypted-rc4-userpw-openpassword.pdf": "openpassword",
    "encrypted-aes256-userpw-but-empty-ownerpw.pdf": "asdfzxcv",
}


def tiny_png() -> bytes:
    """A valid 1x1 grey PNG."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x80")  # filter byte 0, one grey pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_every_robustness_file_has_an_expectation():
    assert sorted(p.name for p in ROBUSTNESS.glob("*.pdf")) == sorted(EXPECTED)


@pytest.fixture(params=["pdfium", "pypdf"])
def extractor(request, monkeypatch):
    """The loader as it is ("pdfium": PDFium, and pypdf where PDFium cannot read), or pypdf alone."""
    if request.param == "pypdf":
        monkeypatch.setattr(loaders._Pdfium, "open", lambda data, password: None)
    return request.param


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_robustness_pdf_outcome(name, extractor):
    """Each tricky PDF gives the listed error or page counts, and never raises."""
    expected = PDFIUM_BETTER.get(name, EXPECTED[name]) if extractor == "pdfium" else EXPECTED[name]
    pages, report = load_file(ROBUSTNESS / name, ocr="off")
    assert report.kind == "pdf" and report.name == name
    if expected["error"] is None:
        assert report.ok, report.error
    else:
        assert expected["error"] in report.error
        assert "\n" not in report.error
    assert report.pages_total == expected["total"]
    assert report.pages_with_text == expected["with_text"] == len(pages)
    assert report.pages_needing_ocr == expected.get("ocr", []) and report.pages_ocr == []
    if "warning" in expected:
        assert any(expected["warning"] in w for w in report.warnings), report.warnings
    else:
        assert report.warnings == []
    if "text" in expected:
        number, phrase = expected["text"]
        assert phrase in {p.number: p.text for p in pages}[number]
    assert report.content_hash == hashlib.sha256((ROBUSTNESS / name).read_bytes()).hexdigest()


def test_pdfium_and_pypdf_read_the_same_words_where_both_read():
    """The robustness files both extractors open give the same words (lines joined at hyphens aside)."""
    for name in ["acroform-libreoffice.pdf", "embedded-attachment.pdf", "encrypted-emptypw-xfa-form-dd0293.pdf",
                 "many-pages-51.pdf", "multilingual-unicode-libreoffice.pdf", "rotated-pages-arabic-rtl.pdf"]:
        pdfium_pages = load_file(ROBUSTNESS / name)[0]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(loaders._Pdfium, "open", lambda data, password: None)
            pypdf_pages = load_file(ROBUSTNESS / name)[0]
        assert [p.number for p in pdfium_pages] == [p.number for p in pypdf_pages], name
        for a, b in zip(pdfium_pages, pypdf_pages, strict=True):
            words_a, words_b = (Counter(re.findall(r"\w+", p.text.replace("-\n", "-"))) for p in (a, b))
            differ = (words_a - words_b) + (words_b - words_a)  # pypdf's "4DD" is PDFium's "4 DD"
            assert words_a and differ.total() <= words_a.total() // 50, (name, a.number, differ)


def test_pdfium_spells_out_ligatures_and_joins_hyphenated_lines():
    """pypdf loses "fi" in this LaTeX file ("lled", "O cial"); PDFium's text has the words, and a line-end
    hyphen (U+FFFE in PDFium, which joins the lines) is a plain "-"."""
    pages, report = load_file(ROBUSTNESS / "ligatures-two-column-latex.pdf")
    text = "\n".join(p.text for p in pages)
    assert report.ok and "filled" in text and "Official" in text
    assert "adip-iscing" in text and "\ufffe" not in text and "\r" not in text


def test_page_text_is_pdfium_text_with_its_line_ends_and_hyphens_replaced():
    """Offsets in a page's text find PDFium's characters: only "\r\n" -> "\n" and U+FFFE -> "-" or U+FFFD."""
    import pypdfium2

    path = ROBUSTNESS / "ligatures-two-column-latex.pdf"
    pages = load_file(path)[0]
    document, hyphens = pypdfium2.PdfDocument(path.read_bytes()), 0
    try:
        for page in pages:
            textpage = document[page.number - 1].get_textpage()
            raw = textpage.get_text_range()
            hyphens += raw.count("\ufffe")
            assert page.text == raw.replace("\r\n", "\n").replace("\ufffe", "-")
            assert len(page.text) + page.text.count("\n") == textpage.count_chars()
            for i in range(0, len(page.text), 97):  # character i is PDFium's i + the "\r"s dropped before it
                index = i + page.text.count("\n", 0, i)
                assert textpage.get_text_range(index, 1) == raw[index]
    finally:
        document.close()
    assert hyphens == 30


def test_pages_that_pdfium_reads_worse_are_read_by_pypdf():
    """One-letter lines (glyphs placed one by one) and right-to-left script (PDFium reverses it)."""
    assert loaders._pypdf_reads_better("T\nh\ni\nr\nd\n\nS\nu\np\np\nl\ne\nm\nent\n")
    table = "Revenue\n$\n1,204\n%\n3\nTotal\n$\n9\nx\ny\nz\nItem 7. Management's Discussion\n" + "prose line\n" * 8
    assert not loaders._pypdf_reads_better(table)  # 10 of 21 lines: single-character cells, not one per line
    assert loaders._pypdf_reads_better("habibi يبيبَح") and not loaders._pypdf_reads_better("Привет, мир")
    pages, report = load_file(ROBUSTNESS / "rotated-pages-arabic-rtl.pdf")
    assert report.ok and [p.text.strip() for p in pages] == ["حَبيبي habibi حَبيبي"] * 4


def test_a_broken_page_is_skipped_and_the_others_keep_their_numbers(monkeypatch):
    monkeypatch.setattr(loaders._Pdfium, "open", lambda data, password: None)  # pypdf alone fails on page 3
    pages, _ = load_file(ROBUSTNESS / "content-stream-error-on-page3.pdf")
    assert [p.number for p in pages] == [1, 2, 4]


@pytest.mark.parametrize("name", sorted(PASSWORDS))
def test_encrypted_pdf_opens_with_the_right_password(name):
    pages, report = load_file(ROBUSTNESS / name, password=PASSWORDS[name])
    assert report.ok, report.error
    assert [p.number for p in pages] == [1] and pages[0].text.strip()


def test_encrypted_pdf_without_or_with_a_wrong_password_says_so():
    name = "encrypted-rc4-userpw-openpassword.pdf"
    assert load_file(ROBUSTNESS / name)[1].error == "encrypted: this PDF needs a password (pass it with --password)"
    pages, report = load_file(ROBUSTNESS / name, password="wrong")
    assert pages == [] and report.error == "encrypted: the password given does not open this PDF"


def test_aes_pdf_without_the_cryptography_package_names_the_fix():
    """A plain `pip install pypdf` cannot open AES files; the report must say what to install. PDFium opens them
    without it, so this is about the files only pypdf reads."""
    code = (
        "import sys; sys.modules['cryptography'] = sys.modules['Crypto'] = None\n"
        "from rag import loaders\n"
        f"path = {str(ROBUSTNESS / 'encrypted-emptypw-xfa-form-dd0293.pdf')!r}\n"
        "print(loaders.load_file(path)[1].error)\n"
        "loaders._Pdfium.open = lambda data, password: None\n"
        "print(loaders.load_file(path)[1].error)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=DATA.parents[1])
    by_pdfium, by_pypdf = out.stdout.splitlines()
    assert by_pdfium == "None" and "pip install cryptography" in by_pypdf and out.stderr == ""


def test_demo_pdf_pages_and_a_phrase_on_its_known_page():
    pages, report = load_file(DEMO / "nist-sp800-90b-entropy-suite-user-guide.pdf")
    assert report.ok and report.pages_total == report.pages_with_text == 9
    assert [p.number for p in pages] == list(range(1, 10))
    assert [p.number for p in pages if "Markov estimate method" in p.text] == [3]
    assert "K. McKay" in pages[0].text

    pages, report = load_file(DEMO / "nist-srx-proxy-protocol-3.0.pdf")
    assert report.ok and report.pages_total == 34 and len(pages) == 34
    assert [p.number for p in pages if "Secure Routing Extension, a framework" in p.text] == [5]


def test_truncated_pdf_is_reported_as_damaged(tmp_path):
    data = (DEMO / "nist-srx-proxy-protocol-3.0.pdf").read_bytes()
    pages, report = load_file(write(tmp_path / "half.pdf", data[: len(data) // 2]))
    assert pages == [] and "damaged or truncated" in report.error


def test_image_renamed_pdf_is_named_as_an_image(tmp_path):
    pages, report = load_file(write(tmp_path / "photo.pdf", tiny_png()))
    assert pages == [] and report.error == "not a PDF: the file is a PNG image"


@pytest.mark.parametrize("suffix", [".pdf", ".txt", ".html"])
def test_zero_byte_file(tmp_path, suffix):
    pages, report = load_file(write(tmp_path / f"empty{suffix}", b""))
    assert pages == [] and report.error == "the file is empty (0 bytes)"
    assert report.content_hash is None


def test_missing_file_and_a_directory(tmp_path):
    _, report = load_file(tmp_path / "nope.pdf")
    assert report.error.startswith("file not found") and not report.ok
    (tmp_path / "folder.txt").mkdir()
    assert load_file(tmp_path / "folder.txt")[1].error.startswith("not a file")


def test_unsupported_extension_lists_the_supported_types(tmp_path):
    _, report = load_file(write(tmp_path / "report.docx", b"PK\x03\x04"))
    assert report.kind == "docx"
    assert report.error.startswith("unsupported file type '.docx'") and ".pdf" in report.error and ".md" in report.error
    assert "no extension" in load_file(write(tmp_path / "README", b"hi"))[1].error


def test_latin1_text_is_decoded_with_a_warning(tmp_path):
    pages, report = load_file(write(tmp_path / "old.txt", "Café crème à la française".encode("latin-1")))
    assert report.ok
    assert pages == [Page(1, "Café crème à la française")]
    assert len(report.warnings) == 1 and "not valid UTF-8" in report.warnings[0]


def test_utf8_bom_is_dropped_and_utf16_is_read(tmp_path):
    pages, report = load_file(write(tmp_path / "bom.md", b"\xef\xbb\xbf# Title\n\nbody"))
    assert pages[0].text == "# Title\n\nbody" and report.kind == "md" and report.warnings == []
    pages, report = load_file(write(tmp_path / "notepad.txt", "Grüße".encode("utf-16")))
    assert pages[0].text == "Grüße" and report.ok


def test_binary_data_named_txt_is_an_error(tmp_path):
    assert "not a text file" in load_file(write(tmp_path / "blob.txt", tiny_png()))[1].error


def test_form_feeds_split_pages_and_numbers_follow_them(tmp_path):
    text = "first page\fsecond page\f\ffourth page\f"  # page 3 is blank; a final \f ends page 4
    pages, report = load_file(write(tmp_path / "printed.txt", text.encode()))
    assert [(p.number, p.text) for p in pages] == [(1, "first page"), (2, "second page"), (4, "fourth page")]
    assert report.pages_total == 4 and report.pages_with_text == 3 and report.pages_needing_ocr == []


def test_whitespace_only_text_is_an_error(tmp_path):
    assert load_file(write(tmp_path / "blank.txt", b" \n\t\n"))[1].error == "the file contains no text"


def test_html_keeps_visible_text_and_drops_script_and_style(tmp_path):
    html = (b"<html><head><title>Doc</title><style>p { color: red }</style>"
            b"<script>var secret = 1 < 2;</script></head>"
            b"<body><h1>Heading</h1><p>Fish &amp; chips</p><noscript>enable JS</noscript><p>Last</p></body></html>")
    pages, report = load_file(write(tmp_path / "page.htm", html))
    assert report.ok and report.kind == "html"
    assert pages == [Page(1, "Doc\nHeading\nFish & chips\nLast")]


def test_malformed_html_is_an_error_not_a_crash(tmp_path):
    # html.parser raises AssertionError on an unknown marked section
    _, report = load_file(write(tmp_path / "bad.html", b"<p>hi <![foo[ x ]]></p>"))
    assert report.error.startswith("cannot parse the HTML")


def test_limits_are_errors_in_the_report(tmp_path, monkeypatch):
    monkeypatch.setattr(loaders, "MAX_PAGES", 50)
    _, report = load_file(ROBUSTNESS / "many-pages-51.pdf")
    assert report.error == "the PDF has 51 pages; the limit is 50" and report.pages_total == 51
    assert "limit is 50" in load_file(write(tmp_path / "many.txt", b"x\f" * 60 + b"x"))[1].error
    monkeypatch.setattr(loaders, "MAX_FILE_BYTES", 1024)
    _, report = load_file(ROBUSTNESS / "many-pages-51.pdf")
    assert report.error.startswith("the file is") and "the limit is" in report.error


def test_same_bytes_same_hash_whatever_the_name(tmp_path):
    a = load_file(write(tmp_path / "a.txt", b"same"))[1]
    b = load_file(write(tmp_path / "b.md", b"same"))[1]
    assert a.content_hash == b.content_hash == hashlib.sha256(b"same").hexdigest()


def test_batch_goes_on_past_bad_files_and_reports_progress(tmp_path):
    paths = [
        write(tmp_path / "good.txt", b"hello"),
        ROBUSTNESS / "broken-trailer-attributeerror.pdf",
        ROBUSTNESS / "multilingual-unicode-libreoffice.pdf",
        tmp_path / "missing.pdf",
        write(tmp_path / "image.pdf", tiny_png()),
        ROBUSTNESS / "encrypted-rc4-userpw-openpassword.pdf",
        write(tmp_path / "good.html", b"<p>world</p>"),
    ]
    calls = []
    results = load_files(paths, password="openpassword", progress=lambda *args: calls.append(args))
    assert [report.ok for _, report in results] == [True, False, True, False, False, True, True]
    assert all(isinstance(report, LoadReport) for _, report in results)
    assert results[0][0] == [Page(1, "hello")] and results[6][0] == [Page(1, "world")]
    assert [done for done, _, _ in calls] == sorted(done for done, _, _ in calls), "progress never goes back"
    files_done = dict.fromkeys(call for call in calls if call[0] == int(call[0]))  # a PDF's last page ends it too
    assert list(files_done) == [(i, len(paths), Path(p).name) for i, p in enumerate(paths, start=1)]


def test_a_pdf_reports_each_page_read():
    pages_read = []
    pages, report = load_file(DEMO / "nist-sp800-90b-entropy-suite-user-guide.pdf",
                              on_page=lambda read, total: pages_read.append((read, total)))
    assert report.ok and pages_read == [(n, 9) for n in range(1, 10)]
    calls = []
    load_files([DEMO / "nist-sp800-90b-entropy-suite-user-guide.pdf"], progress=lambda *args: calls.append(args))
    assert [done for done, _, _ in calls[:2]] == pytest.approx([1 / 9, 2 / 9]) and calls[-1][0] == 1


def test_a_text_item_is_one_page_cited_by_its_locator_or_by_lines():
    pages, report = load_text(TextItem("Re: invoice", "Please pay by Friday.\n", {"from": "a@b.c"}, "<m1@b.c>"))
    assert report.ok and not report.warnings
    assert (report.name, report.kind, report.pages_total, report.pages_with_text) == ("Re: invoice", "text", 1, 1)
    assert report.metadata == {"from": "a@b.c"}
    assert pages == [Page(1, "Please pay by Friday.\n", "<m1@b.c>")]
    assert load_text(TextItem("app.py", "x = 1\n"))[0] == [Page(1, "x = 1\n", by_lines=True)]


def test_a_text_item_is_identified_by_its_text_and_locator(tmp_path):
    plain = load_text(TextItem("a", "same"))[1].content_hash
    assert plain == load_file(write(tmp_path / "b.txt", b"same"))[1].content_hash  # the file of that text
    assert load_text(TextItem("renamed", "same", {"other": 1}))[1].content_hash == plain
    located = {load_text(TextItem("a", "same", locator=f"<{n}@x>"))[1].content_hash for n in (1, 2, 1)}
    assert len(located) == 2 and plain not in located


def test_bad_text_items_are_errors_in_their_report():
    too_long = load_text(TextItem("big", "x" * (MAX_TEXT_CHARS + 1)))[1]
    assert too_long.error == f"the text is {MAX_TEXT_CHARS + 1:,} characters long; the limit is {MAX_TEXT_CHARS:,}"
    assert too_long.content_hash is None  # refused before any work on it
    assert load_text(TextItem("blank", " \n\t "))[1].error == "the text is empty"
    for name, locator in [("[PATCH] fix", None), ("two\nlines", None), ("   ", None), ("n" * 201, None),
                          ("ok", "<a]b>"), ("ok", ""), ("caf\udce9", None)]:
        pages, report = load_text(TextItem(name, "some text", locator=locator))
        assert pages == [] and "cannot be cited" in report.error, (name, locator)
    with pytest.raises(TypeError, match="JSON-serialisable"):
        TextItem("a", "b", {"when": object()})
    with pytest.raises(TypeError, match="name and text are str"):
        TextItem("a", b"bytes")


def test_undecodable_characters_in_a_text_item_become_replacement_characters():
    raw = "Caf\xc3\xa9 and na\xefve".encode("latin-1").decode("utf-8", "surrogateescape")  # one byte fails
    assert "\udcef" in raw
    pages, report = load_text(TextItem("mail", raw))
    assert report.ok and report.warnings == ["1 character(s) that are not valid Unicode (undecoded bytes?) were "
                                             "replaced by U+FFFD"]
    assert pages[0].text == "Café and na\ufffdve"
    assert report.content_hash == hashlib.sha256("Café and na\ufffdve".encode()).hexdigest()


def pdf_of(contents: list[bytes]) -> bytes:
    """A PDF whose page n shows contents[n] (a content stream, stored deflated) in Helvetica."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % (4 + 2 * i)
                                                                      for i in range(len(contents))), len(contents)),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for i, content in enumerate(contents):
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Resources << /Font << /F1 3 0 R >> >> "
                       b"/Contents %d 0 R >>" % (5 + 2 * i))
        deflated = zlib.compress(content)
        objects.append(b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(deflated), deflated))
    pdf, offsets = bytearray(b"%PDF-1.7\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(pdf))
        pdf += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(pdf)
    pdf += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    pdf += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    pdf += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(pdf)


def fine(n: int) -> bytes:
    return b"BT /F1 12 Tf 10 100 Td (page %d is fine) Tj ET" % n


SLOW = b"BT /F1 12 Tf 10 10 Td " + b"(a) Tj " * 300_000 + b"ET"  # 2 MB of operators, 6 KB deflated: seconds a page


def test_a_page_that_takes_too_long_is_stopped_and_skipped(tmp_path, monkeypatch):
    path = write(tmp_path / "slow.pdf", pdf_of([fine(1), SLOW, fine(3)]))
    monkeypatch.setattr(loaders, "PAGE_SECONDS", 0.3)
    monkeypatch.setattr(loaders, "PDFIUM_PAGE_SECONDS", 0.1)  # PDFium takes ~0.4 s on the slow page, pypdf ~4 s
    threads = threading.active_count()
    start = time.monotonic()
    with ThreadPoolExecutor(1) as pool:  # from a worker thread, as a Gradio handler runs: no signals there
        pages, report = pool.submit(load_file, path).result()
    assert time.monotonic() - start < 2.5  # extracting the slow page alone takes ~4 s on an idle core
    assert report.ok and [(page.number, page.text) for page in pages] == [(1, "page 1 is fine"), (3, "page 3 is fine")]
    assert report.warnings == ["page 2: text extraction took over 0.3 s, page skipped"]
    # PDFium's C code cannot be stopped: its thread ends when it is done with the page (~0.4 s on an idle core)
    deadline = time.monotonic() + 5
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == threads, "the stopped extraction's thread runs on"


def test_after_max_slow_pages_the_rest_of_the_file_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(loaders, "PAGE_SECONDS", 0.2)
    monkeypatch.setattr(loaders, "PDFIUM_PAGE_SECONDS", 0.1)
    monkeypatch.setattr(loaders, "MAX_SLOW_PAGES", 2)
    pages, report = load_file(write(tmp_path / "slow.pdf", pdf_of([fine(1), SLOW, SLOW, SLOW, fine(5)])))
    assert [page.number for page in pages] == [1]
    assert report.warnings[-1] == ("pages 4-5: not read, as 2 pages took over 0.2 s or held over 100,000 characters "
                                   "each (a damaged or hostile file?)")


def test_pages_with_too_much_text_are_skipped_and_count_as_hostile(tmp_path, monkeypatch):
    """PDFium reads a million one-letter operators in ~1 s: a megabyte of junk that must not reach the embedder."""
    monkeypatch.setattr(loaders, "MAX_PAGE_CHARS", 1_000)
    monkeypatch.setattr(loaders, "MAX_SLOW_PAGES", 2)
    junk = b"BT /F1 12 Tf 10 10 Td " + b"(a) Tj " * 2_000 + b"ET"
    pages, report = load_file(write(tmp_path / "junk.pdf", pdf_of([fine(1), junk, fine(3), junk, fine(5)])))
    assert [page.number for page in pages] == [1, 3]
    assert report.warnings == ["page 2: 2,000 characters of text, over the limit of 1,000: page skipped",
                               "page 4: 2,000 characters of text, over the limit of 1,000: page skipped",
                               "pages 5-5: not read, as 2 pages took over 10 s or held over 1,000 characters each "
                               "(a damaged or hostile file?)"]


def test_pdfium_is_used_by_one_thread_at_a_time_and_loads_in_threads_agree():
    """PDFium is not thread-safe: concurrent loads (two uploads in a web app) take turns and read the same text."""
    path = DEMO / "nist-srx-proxy-protocol-3.0.pdf"
    alone = load_file(path)[0]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(load_file, [path] * 4))
    assert all(pages == alone for pages, _ in results)


def test_a_pdf_waiting_for_a_busy_pdfium_is_read_by_pypdf(monkeypatch):
    """PDFium still busy (a hostile page it cannot be stopped in): the next file goes to pypdf, not into a queue."""
    monkeypatch.setattr(loaders, "PAGE_SECONDS", 0.2)
    with loaders.PDFIUM_LOCK:
        start = time.monotonic()
        pages, report = load_file(ROBUSTNESS / "ligatures-two-column-latex.pdf")
        assert time.monotonic() - start < 2
    assert report.ok and report.pages_with_text == 3 and "lled" in pages[0].text  # pypdf's broken "filled"


def test_a_pdf_whose_streams_inflate_too_much_is_read_by_pypdf_only(tmp_path, monkeypatch):
    """PDFium inflates a stream in memory whatever its size; pypdf has limits. A bomb never reaches PDFium."""
    path = write(tmp_path / "inflates.pdf", pdf_of([fine(1) + b" " * 100_000]))  # 100 KB inflated, ~200 B deflated
    monkeypatch.setattr(loaders, "MAX_INFLATED_BYTES", 50_000)
    monkeypatch.setattr(loaders._Pdfium, "open", lambda data, password: pytest.fail("PDFium opened it"))
    pages, report = load_file(path)
    assert report.ok and [p.text for p in pages] == ["page 1 is fine"]
    monkeypatch.setattr(loaders, "MAX_INFLATED_BYTES", 200_000)
    assert not loaders._inflates_too_much(path.read_bytes())


def test_a_page_pdfium_is_slow_on_is_read_by_pypdf_with_the_rest_of_the_file(tmp_path, monkeypatch):
    """PDFium cannot be stopped, so the loader stops waiting for it and pypdf reads the page: no page is lost."""
    monkeypatch.setattr(loaders, "PDFIUM_PAGE_SECONDS", 0.01)
    busy = b"BT /F1 12 Tf 10 10 Td " + b"(b) Tj " * 50_000 + b"ET"  # ~0.07 s in PDFium, ~0.7 s in pypdf
    pages, report = load_file(write(tmp_path / "busy.pdf", pdf_of([fine(1), busy, fine(3)])))
    assert report.ok and report.warnings == [] and [p.number for p in pages] == [1, 2, 3]
    assert pages[1].text.count("b") == 50_000 and pages[2].text == "page 3 is fine"
