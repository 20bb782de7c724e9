"""Attachments: real files in, text or a refusal a person can act on out."""
from __future__ import annotations

import io
import re

import pytest

from chatcore.documents.document import MAX_TEXT_CHARS, Document, DocumentError, Page
from chatcore.documents.reader import (
    MAX_FILE_BYTES, MAX_FILES, MAX_MESSAGE_BYTES, check_message, extract, from_paste, passages)

FACT = "The lighthouse keeper's cat is named Bartholomew Quince."
FACT_PAGE = 13
TOPICS = (
    "tides and harbours", "bread and ovens", "river bridges", "mountain weather",
    "rice terraces", "copper mining", "the postal service", "orchard pests", "railway signals",
    "glass blowing", "paper mills", "coastal fog and shipping lanes", "textile dyes",
    "beekeeping", "clock repair", "salt marshes", "printing presses", "wind mills",
    "pottery glazes", "fishing nets",
)


def twenty_page_pdf() -> bytes:
    """A real 20-page PDF written by matplotlib: filler about a different topic on each page,
    two pages that mention a lighthouse or a cat in passing, and one fact on page 13.

    In the PDF core fonts, which makes it ten times faster to write and to read than with
    embedded ones; one_page_pdf() covers those."""
    import matplotlib
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    buffer = io.BytesIO()
    with matplotlib.rc_context({"pdf.use14corefonts": True}), PdfPages(buffer) as pdf:
        for number, topic in enumerate(TOPICS, 1):
            lines = [f"Chapter {number}: notes on {topic}."]
            lines += [f"Part {n} of the survey of {topic} records what was measured, where it "
                      f"was seen, and who wrote it down." for n in range(1, 21)]
            if number == 5:
                lines.append("A lighthouse stands at the harbour mouth.")
            if number == 8:
                lines.append("The miller keeps a cat against the mice.")
            if number == FACT_PAGE:
                lines.insert(9, FACT)
            figure = Figure(figsize=(8.5, 11))
            for row, line in enumerate(lines):
                figure.text(0.06, 0.95 - row * 0.035, line, fontsize=8)
            pdf.savefig(figure)
    return buffer.getvalue()


def one_page_pdf(line: str) -> bytes:
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    buffer = io.BytesIO()
    with PdfPages(buffer) as pdf:
        figure = Figure(figsize=(6, 2))
        figure.text(0.05, 0.5, line, fontsize=8)
        pdf.savefig(figure)
    return buffer.getvalue()


def image_only_pdf() -> bytes:
    import numpy as np
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    buffer = io.BytesIO()
    with PdfPages(buffer) as pdf:
        figure = Figure(figsize=(3, 3))
        axes = figure.add_axes((0, 0, 1, 1))
        axes.axis("off")
        axes.imshow(np.random.default_rng(0).random((16, 16)))
        pdf.savefig(figure)
    return buffer.getvalue()


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


@pytest.fixture(scope="module")
def pdf_bytes() -> bytes:
    return twenty_page_pdf()


@pytest.fixture(scope="module")
def pdf_doc(pdf_bytes) -> Document:
    return extract("report.pdf", pdf_bytes)


def test_pdf_gives_every_page_with_its_text(pdf_doc):
    doc = pdf_doc
    assert doc.kind == "pdf"
    assert doc.page_count == 20
    assert [page.number for page in doc.pages] == list(range(1, 21))
    assert squash(FACT) in squash(doc.pages[FACT_PAGE - 1].text)
    assert all(squash(FACT) not in squash(page.text) for page in doc.pages if page.number != 13)
    assert "river bridges" in doc.pages[2].text
    assert doc.text.count("Chapter") == 20


def test_type_comes_from_content_not_name():
    assert extract("report.txt", one_page_pdf(FACT)).kind == "pdf"
    assert extract("notes.pdf", b"plain words").kind == "text"


def test_pdf_without_text_is_taken_for_a_scan():
    with pytest.raises(DocumentError, match=r"^scan\.pdf: no text found: is it a scan\?$"):
        extract("scan.pdf", image_only_pdf())


def test_broken_and_locked_pdfs_are_refused_with_the_reason():
    with pytest.raises(DocumentError, match=r"^broken\.pdf: cannot read this PDF \(.+\)$"):
        extract("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog")
    from pypdf import PdfReader, PdfWriter

    def encrypted(user_password: str) -> bytes:
        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(one_page_pdf(FACT))))
        writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
        out = io.BytesIO()
        writer.write(out)
        return out.getvalue()

    with pytest.raises(DocumentError, match=r"^locked\.pdf is password-protected"):
        extract("locked.pdf", encrypted("secret"))
    # Restrictions only (no password to open it): readable, as in any PDF viewer.
    doc = extract("restricted.pdf", encrypted(""))
    assert squash(doc.text) == squash(FACT)


SAMPLES = [
    ("notes.txt", "Kumusta ka? Salamat sa tulong, Ñino.\nIkalawang linya.\n", "text"),
    ("README.md", "# Pamagat\n\n- unang punto\n- ikalawa: *mahalagá*\n", "markdown"),
    ("tool.py", "def greet(name):\n    return f'Magandang umaga, {name}!'\n", "code"),
    ("query.SQL", "SELECT pangalan FROM mga_tao WHERE bayan = 'Parañaque';\n", "code"),
    ("Makefile", "all:\n\techo build\n", "code"),
    ("people.csv", 'pangalan,bayan\n"dela Cruz, Juan",Parañaque\nMaría,"Las Piñas"\n', "csv"),
    ("data.json", '{"lungsod": "Parañaque", "bilang": [1, 2, 3]}\n', "json"),
    ("rows.jsonl", '{"a": 1}\n\n{"b": "ñ"}\n', "json"),
    ("no_suffix", "just words\n", "text"),
]


@pytest.mark.parametrize("name, content, kind", SAMPLES)
def test_text_files_are_labelled_by_suffix(name, content, kind):
    doc = extract(name, content.encode())
    assert doc.kind == kind
    assert doc.text == content
    assert doc.page_count is None
    assert doc.pages == (Page(None, content),)


def test_bom_and_windows_newlines_are_normalised():
    doc = extract("win.txt", b"\xef\xbb\xbfisa\r\ndalawa\r\n")
    assert doc.text == "isa\ndalawa\n"
    assert extract("utf16.txt", "Parañaque\r\n".encode("utf-16")).text == "Parañaque\n"
    # Decomposed accents become composed ones, as search expects.
    assert extract("nfd.txt", "Paran\u0303aque".encode()).text == "Parañaque"


@pytest.mark.parametrize("name, data, what", [
    ("notes.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), ": a PNG image"),
    ("photo.txt", b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(32), ": a JPEG image"),
    ("report.txt", b"PK\x03\x04\x14\x00\x06\x00" + b"[Content_Types].xml", ": a ZIP archive"),
    ("tool.py", b"\x7fELF\x02\x01\x01" + bytes(40), ": a program"),
    ("data.csv", b"name,value\nx,\x00\x01\x02\n", ""),
    ("noise.txt", bytes(range(128, 256)) * 4, ""),
    ("controls.txt", b"\x01\x02\x03\x04\x05\x06ab" * 20, ""),
])
def test_binary_content_is_refused_whatever_the_name(name, data, what):
    expected = (f"{name}: not a text, source code, CSV, JSON or PDF file (it looks like "
                f"binary data{what}")
    with pytest.raises(DocumentError) as refused:
        extract(name, data)
    assert str(refused.value).startswith(expected)


def test_invalid_utf8_names_the_byte_and_line():
    data = "first line\nsecond line\nthird: caf".encode() + b"\xe9 au lait\n"
    with pytest.raises(DocumentError, match=r"^menu\.txt: not UTF-8 text: byte 0xE9 at offset "
                                            r"33 \(line 3\)"):
        extract("menu.txt", data)


@pytest.mark.parametrize("name, content, where", [
    ("bad.json", '{\n  "a": 1,\n  "b": 2\n  "c": 3\n}\n', r"line 4, column 3: Expecting ','"),
    ("bad.jsonl", '{"a": 1}\n{"b": }\n', r"line 2, column 7"),
    ("bad.csv", 'a,b\n1,2\n3,"4"x\n5,6\n', r"line 3: ',' expected after '\"'"),
    ("open.csv", 'a,b\n1,2\n3,"unclosed\n5,6\n', r"line 3: unexpected end of data"),
])
def test_malformed_json_and_csv_are_refused_with_the_line(name, content, where):
    kind = "JSON" if ".json" in name else "CSV"
    with pytest.raises(DocumentError, match=rf"^{re.escape(name)}: not valid {kind} at {where}"):
        extract(name, content.encode())


def test_size_is_checked_before_anything_is_parsed():
    # A PDF magic that would fail to parse: the size refusal must come first.
    data = b"%PDF-1.7\n" + b"x" * MAX_FILE_BYTES
    with pytest.raises(DocumentError, match=r"^big\.pdf is 10\.1 MB; the limit per file is "
                                            r"10 MB$"):
        extract("big.pdf", data)
    with pytest.raises(DocumentError, match=r"^big\.pdf is 12\.3 MB; the limit per file is "
                                            r"10 MB$"):
        check_message([("big.pdf", 12_300_000)])


def test_too_much_text_and_empty_files_are_refused():
    with pytest.raises(DocumentError, match=rf"^long\.txt has {MAX_TEXT_CHARS + 1:,} characters "
                                            rf"of text; the limit is {MAX_TEXT_CHARS:,}$"):
        extract("long.txt", b"a" * (MAX_TEXT_CHARS + 1))
    with pytest.raises(DocumentError, match=r"^empty\.txt is empty$"):
        extract("empty.txt", b" \n")


def test_check_message_caps_count_and_total():
    check_message([(f"f{n}.txt", MAX_FILE_BYTES) for n in range(2)])
    with pytest.raises(DocumentError, match=rf"^{MAX_FILES + 1} files attached; the limit is "
                                            rf"{MAX_FILES} files per message$"):
        check_message([(f"f{n}.txt", 10) for n in range(MAX_FILES + 1)])
    with pytest.raises(DocumentError, match=r"^the 3 attached files add up to 25\.0 MB; the "
                                            r"limit per message is 20 MB$"):
        check_message([("a.pdf", 9_000_000), ("b.pdf", 9_000_000), ("c.pdf", 7_000_000)])
    assert MAX_MESSAGE_BYTES == 20_000_000


def test_from_paste():
    text = "Isang mahabang teksto.\r\n" * 600
    doc = from_paste(text)
    assert doc == Document("Pasted text (14,400 characters)", "text",
                           (Page(None, text.replace("\r\n", "\n")),))
    with pytest.raises(DocumentError, match="empty"):
        from_paste("  \n")
    with pytest.raises(DocumentError, match=r"1,000,001 characters"):
        from_paste("x" * (MAX_TEXT_CHARS + 1))


def long_document() -> Document:
    paragraphs = []
    for n in range(120):
        sentences = " ".join(f"Sentence {n}.{k} talks about item{n}x{k} at length, carefully."
                             for k in range(n % 9 + 1))
        paragraphs.append(sentences)
    paragraphs.append("Averyveryverylongtokenwithoutspaces" * 80)  # 2,800 characters, no spaces
    paragraphs.append("col_a,col_b,col_c\n" + "\n".join(f"{i},{i * 2},{i * 3}" for i in range(300)))
    return Document("long.txt", "text", (Page(None, "\n\n".join(paragraphs)),))


def test_passages_cover_every_character_within_the_target():
    doc = long_document()
    parts = passages(doc, target_chars=500)
    assert squash("".join(p.text for p in parts)) == squash(doc.text)
    assert [p.index for p in parts] == list(range(len(parts)))
    assert all(0 < len(p.text) <= 500 for p in parts)
    assert sum(len(p.text) for p in parts) / len(parts) > 250  # packed, not shredded
    assert all(p.document == "long.txt" and p.page is None for p in parts)
    # Sentences are kept whole where a paragraph is too long for one passage.
    prose = [p for p in parts if p.text.startswith("Sentence")]
    assert all(p.text.endswith(".") for p in prose)


def test_passages_never_cross_pages(pdf_doc):
    doc = pdf_doc
    parts = passages(doc, target_chars=600)
    assert len(parts) > 20
    for page in doc.pages:
        on_page = [p.text for p in parts if p.page == page.number]
        assert on_page and squash("".join(on_page)) == squash(page.text)
    assert [p.index for p in parts] == list(range(len(parts)))
    assert [p.page for p in parts] == sorted(p.page for p in parts)


def test_passages_of_small_and_odd_documents():
    [only] = passages(from_paste("one short line"))
    assert (only.text, only.index, only.page) == ("one short line", 0, None)
    pdf = Document("x.pdf", "pdf", (Page(1, "a b c"), Page(2, ""), Page(3, "d")))
    assert [(p.page, p.index, p.text) for p in passages(pdf)] == [(1, 0, "a b c"), (3, 1, "d")]
    assert [p.text for p in passages(pdf, 1)] == ["a", "b", "c", "d"]
