"""Hardening, finding 3: a PDF of a few KB built to cost minutes of CPU and hundreds of MB.

Pages that all point at one compressed content stream of many text operators cost pypdf
seconds each (its budget is per page, not per file). Such a file is refused with its reason,
naming the file, by a reader in a child process held to PdfLimits; the server answers other
requests meanwhile and stores nothing. The crafted files are written here, byte by byte.
"""
from __future__ import annotations

import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatcore.documents.document import MAX_TEXT_CHARS, DocumentError
from chatcore.documents.pdf import PDF_LIMITS, PdfLimits
from chatcore.documents.reader import extract
from chatcore.conversations.store import DB_NAME
from tests.conftest import SAFETY_S, SHIPPED_MODELS, RunningApp, start_app
from tests.page_session import PageSession, file_data
from tests.test_documents import FACT, one_page_pdf, squash

# One operator group that costs pypdf a font lookup and a text run but yields no text, so a
# bomb is refused for its work, never for its characters.
COSTLY = b"BT /F1 1 Tf () Tj ET\n"


def pdf_of(pages: int, content: bytes) -> bytes:
    """A PDF of `pages` pages whose /Contents all point at one FlateDecode stream."""
    stream = zlib.compress(content, 9)
    first_page = 5
    kids = b" ".join(b"%d 0 R" % (first_page + i) for i in range(pages))
    page = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << "
            b"/F1 3 0 R >> >> /Contents 4 0 R >>")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream
        + b"\nendstream",
        *[page] * pages,
    ]
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % at for at in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def bomb() -> bytes:
    """12 KB: 6 pages sharing 200,000 operator groups; about 6 s of CPU per page on the
    2-core development machine with the code before this fix (36 s in all, 200 MB)."""
    return pdf_of(6, COSTLY * 200_000)


def test_the_bomb_is_small_and_would_cost_more_than_the_limit():
    data = bomb()
    assert len(data) < 16_000
    assert PDF_LIMITS.cpu_seconds <= 30 and PDF_LIMITS.memory_bytes <= 2**30


def test_a_pdf_bomb_is_refused_for_its_work_with_the_file_named():
    with pytest.raises(DocumentError, match=r"^report\.pdf: the PDF asks for more work than "
                                            r"allowed \(over 2 s of reading\)$"):
        extract("report.pdf", bomb(), PdfLimits(cpu_seconds=2))


def test_a_reader_that_stalls_is_stopped_by_the_wall_clock():
    with pytest.raises(DocumentError, match=r"^slow\.pdf: the PDF asks for more work than "
                                            r"allowed \(still being read after 0\.5 s\)$"):
        extract("slow.pdf", bomb(), PdfLimits(wall_seconds=0.5))


def test_a_pdf_that_needs_too_much_memory_is_refused():
    # One page of 200,000 operator groups: about 200 MB resident for pypdf.
    with pytest.raises(DocumentError, match=r"^big\.pdf: the PDF needs more memory than "
                                            r"allowed \(over 128 MiB\)$"):
        extract("big.pdf", pdf_of(1, COSTLY * 200_000), PdfLimits(memory_bytes=128 * 2**20))


def test_too_many_pages_are_refused_before_any_is_read():
    # Each page is the bomb's stream: reading even a few would run into the CPU limit instead.
    pages = PDF_LIMITS.pages + 1
    data = pdf_of(pages, COSTLY * 200_000)
    with pytest.raises(DocumentError, match=rf"^book\.pdf has {pages:,} pages; the limit is "
                                            rf"{PDF_LIMITS.pages:,}$"):
        extract("book.pdf", data)


def test_too_much_text_is_refused_with_the_count():
    # 600 runs of 1,000 characters a page, two pages: 1.2 million characters from 4 KB.
    line = b"BT /F1 1 Tf (" + b"a" * 999 + b" ) Tj ET\n"
    data = pdf_of(2, line * 600)
    assert len(data) < 8_000
    with pytest.raises(DocumentError, match=rf"^wordy\.pdf has [\d,]+ characters of text; the "
                                            rf"limit is {MAX_TEXT_CHARS:,}$"):
        extract("wordy.pdf", data)


def test_normal_pdfs_still_extract():
    doc = extract("letter.pdf", pdf_of(2, b"BT /F1 12 Tf 72 700 Td (Magandang umaga) Tj ET\n"))
    assert doc.kind == "pdf" and doc.page_count == 2
    assert [(p.number, p.text) for p in doc.pages] == [(1, "Magandang umaga"),
                                                       (2, "Magandang umaga")]
    embedded = extract("fact.pdf", one_page_pdf(FACT))  # matplotlib, embedded fonts
    assert squash(doc.text) and squash(FACT) in squash(embedded.text)


def test_a_json_number_too_long_to_read_is_refused_not_raised():
    with pytest.raises(DocumentError, match=r"^n\.json: not readable as JSON: a number has more"
                                            r" than [\d,]+ digits"):
        extract("n.json", b"[" + b"7" * 5000 + b"]")


# The server: the page's own upload, and another request answered meanwhile.


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[tuple[RunningApp, Path]]:
    data_dir = tmp_path_factory.mktemp("hardening-documents")
    running = start_app(["--models", str(SHIPPED_MODELS), "--data-dir", str(data_dir)])
    yield running, data_dir
    running.stop()


def attach_as_the_page_does(session: PageSession, name: str, data: bytes) -> dict:
    """Upload the file, then call the Attach button's (hidden) upload event through the
    queue, as the browser does (files, pending ids, the chosen model); the process_completed
    message."""
    path = session.upload(name, data)
    return session.outcome(session.handler("attach", "upload"), [file_data(path, name)], [],
                           "smollm2-135m")


def answers_meanwhile(url: str, busy: threading.Event) -> list[str]:
    """Ask for /gradio_api/info and /v1/models in turn while `busy` is set; the paths
    answered. A server that read the bomb on its event loop would answer the first only
    when the bomb was done, so the count, not a duration, tells the two apart."""
    answered: list[str] = []
    with httpx.Client(base_url=url, timeout=PDF_LIMITS.wall_seconds + SAFETY_S) as http:
        while busy.is_set():
            path = ("gradio_api/info", "v1/models")[len(answered) % 2]
            http.get(path).raise_for_status()
            answered.append(path)
            time.sleep(0.2)
    return answered


def stored_attachments(data_dir: Path) -> int:
    with sqlite3.connect(f"file:{data_dir / DB_NAME}?mode=ro", uri=True) as db:
        return db.execute("SELECT COUNT(*) FROM attachments").fetchone()[0]


@pytest.mark.slow
def test_the_server_refuses_the_bomb_and_answers_others_meanwhile(app):
    running, data_dir = app
    busy = threading.Event()
    busy.set()
    outcome: dict[str, object] = {}

    def upload() -> None:
        try:
            page = PageSession(running.url, timeout=PDF_LIMITS.wall_seconds + SAFETY_S)
            outcome["done"] = attach_as_the_page_does(page, "report.pdf", bomb())
        finally:
            busy.clear()

    worker = threading.Thread(target=upload)
    worker.start()
    try:
        answered = answers_meanwhile(running.url, busy)
    finally:
        busy.clear()
        worker.join(PDF_LIMITS.wall_seconds + 2 * SAFETY_S)
    assert not worker.is_alive() and "done" in outcome, "the upload hung"
    done = outcome["done"]
    assert done["success"], done
    chips = done["output"]["data"][1]  # [0] is the pending list, a State kept on the server
    # Over its CPU seconds, or (on a machine so busy that the reader gets little of a core)
    # over its wall-clock seconds first: refused for its work either way.
    assert "⚠️ Not attached: report.pdf: the PDF asks for more work than allowed (" in chips, \
        chips
    assert len(answered) >= 5, f"only {answered} answered while the bomb was read"
    assert stored_attachments(data_dir) == 0
    # and a normal PDF, in the same server, goes on being attached
    done = attach_as_the_page_does(PageSession(running.url), "fact.pdf", one_page_pdf(FACT))
    assert done["success"] and "fact.pdf · 1 page" in done["output"]["data"][1], done
    assert stored_attachments(data_dir) == 1


def test_uploads_are_read_two_at_a_time_across_chat_and_compare(tmp_path):
    """A burst of crafted files queues: every Attach (Chat and Compare, on every page) shares
    one limit of two reads at once, so at most two PDF readers run, not one per request."""
    from chatcore.generation.registry import load_registry
    from chatcore.generation.factory import make_backend
    from chatcore.generation.manager import ModelManager
    from chatcore.conversations.store import Store
    from chatui.app import PAGE_CONCURRENCY, build_app
    from chatui.exports import ExportFiles

    store = Store(tmp_path)
    try:
        manager = ModelManager(load_registry(SHIPPED_MODELS), make_backend)
        blocks = build_app(manager, store, "smollm2-135m", ExportFiles(tmp_path / "exports"))
        attach_ids = {block._id for block in blocks.blocks.values()
                      if getattr(block, "elem_id", None) in ("attach", "compare-attach")}
        reads = [fn for fn in blocks.fns.values()
                 if any(target[0] in attach_ids and target[1] == "upload"
                        for target in fn.targets)]
    finally:
        store.close()
    assert len(reads) == 4  # Chat and Compare, on the English and the Filipino page
    assert {(fn.concurrency_limit, fn.concurrency_id) for fn in reads} == {(2, "read-uploads")}
    # The rest run up to the page's default at once (set while the page was empty, which
    # spares the start a throwaway server app; chatui/app.py).
    assert blocks._queue.default_concurrency_limit == PAGE_CONCURRENCY == 16
