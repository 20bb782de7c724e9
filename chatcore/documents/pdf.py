"""PDFs, read in a child process held to limits, so a file built to cost minutes or
gigabytes is refused while the server goes on serving (pypdf bounds each page, not the file).
"""
from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from chatcore.documents.document import Document, DocumentError, Page, check_length, normalise

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PdfLimits:
    """What reading one PDF may cost, enforced on the child process that reads it.

    The page cap refuses a file before any page is read; CPU seconds bound the total work
    whatever shape it takes (pages sharing one huge content stream, deep page trees); the
    wall-clock limit catches a child that stalls without using CPU; the memory cap (address
    space) keeps a reader that balloons from pushing the server's own memory out. Text is
    capped by MAX_TEXT_CHARS, as for every attachment.
    """

    pages: int = 2000
    cpu_seconds: int = 20
    wall_seconds: float = 60.0
    memory_bytes: int = 1 << 30


PDF_LIMITS = PdfLimits()
# The child process's program: this module, imported from where this copy of it lies.
_PDF_CHILD = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})"
              f"; from chatcore.documents.pdf import _pdf_child; _pdf_child()")
# How a child stopped by its CPU limit ends: SIGXCPU at the soft limit, SIGKILL at the hard.
_OVER_CPU = tuple(-number for number in (getattr(signal, "SIGXCPU", None),
                                         getattr(signal, "SIGKILL", None)) if number)


def read_pdf(name: str, data: bytes, limits: PdfLimits) -> Document:
    """Read a PDF in a child process, so that a file built to cost minutes or gigabytes is
    stopped by the limits and refused, while this process goes on serving."""
    request = json.dumps({"name": name, "pages": limits.pages, "cpu_seconds": limits.cpu_seconds,
                          "memory_bytes": limits.memory_bytes}).encode() + b"\n" + data
    try:
        done = subprocess.run([sys.executable, "-c", _PDF_CHILD], input=request,
                              capture_output=True, timeout=limits.wall_seconds, check=False)
    except subprocess.TimeoutExpired:  # run() has killed the child
        log.warning("%s: PDF reader killed after %g s of wall-clock time", name,
                    limits.wall_seconds)
        raise DocumentError(_too_much_work(
            name, f"still being read after {limits.wall_seconds:g} s")) from None
    except OSError as error:
        raise DocumentError(f"{name}: cannot read this PDF (the reader did not start: "
                            f"{_reason(error)})") from None
    if done.stderr:
        log.warning("%s: the PDF reader said: %s", name,
                    done.stderr.decode("utf-8", "replace")[-2000:].strip())
    return _child_outcome(name, done, limits)


def _child_outcome(name: str, done: subprocess.CompletedProcess, limits: PdfLimits) -> Document:
    """The Document the child read, or its refusal, or the reason it was stopped."""
    if done.returncode in _OVER_CPU:
        log.warning("%s: PDF reader stopped at its limit of %d CPU seconds", name,
                    limits.cpu_seconds)
        raise DocumentError(_too_much_work(name, f"over {limits.cpu_seconds} s of reading"))
    try:
        reply = json.loads(done.stdout) if done.returncode == 0 else None
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise DocumentError(f"{name}: cannot read this PDF (the reader stopped with exit "
                            f"status {done.returncode})")
    if "refused" in reply:
        raise DocumentError(reply["refused"])
    return Document(name, "pdf", tuple(Page(number, text) for number, text in reply["pages"]))


def _too_much_work(name: str, detail: str) -> str:
    return f"{name}: the PDF asks for more work than allowed ({detail})"


def _pdf_child() -> None:
    """The child process: a JSON header line and the PDF's bytes on stdin, the pages or the
    refusal as JSON on stdout. The limits are set before a byte of the PDF is parsed."""
    header = json.loads(sys.stdin.buffer.readline())
    name = header["name"]
    _hold_to(header["cpu_seconds"], header["memory_bytes"])
    data = sys.stdin.buffer.read()
    try:
        reply: dict = {"pages": [[page.number, page.text]
                                 for page in _read_pdf(name, data, header["pages"])]}
    except DocumentError as error:
        reply = {"refused": str(error)}
    except MemoryError:
        reply = {"refused": f"{name}: the PDF needs more memory than allowed (over "
                            f"{_binary_size(header['memory_bytes'])})"}
    sys.stdout.buffer.write(json.dumps(reply).encode())


def _binary_size(size: int) -> str:
    return f"{size / 2**30:g} GiB" if size >= 2**30 else f"{size / 2**20:g} MiB"


def _hold_to(cpu_seconds: int, memory_bytes: int) -> None:
    """Limit this process's CPU time and address space (POSIX; elsewhere only the parent's
    wall-clock timeout holds)."""
    try:
        import resource
    except ImportError:
        log.warning("no resource module: the PDF reader runs without CPU and memory limits")
        return
    for kind, soft, hard in ((resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 1),
                             (resource.RLIMIT_AS, memory_bytes, memory_bytes)):
        _, current_hard = resource.getrlimit(kind)
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        try:
            resource.setrlimit(kind, (soft, hard))
        except (ValueError, OSError) as error:  # e.g. RLIMIT_AS on macOS
            log.warning("cannot limit the PDF reader (%s): %s", kind, error)


def _read_pdf(name: str, data: bytes, max_pages: int) -> list[Page]:
    """The text of each page; runs in the child process, under its limits."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Many PDFs carry only an owner password (restrictions) and open with an empty one.
            try:
                opened = reader.decrypt("")
            except DependencyError:
                opened = 0
            if not opened:
                raise DocumentError(f"{name} is password-protected or encrypted; save a copy "
                                    f"without the password and attach that")
        count = len(reader.pages)
    except (DocumentError, MemoryError):
        raise
    except Exception as error:  # pypdf raises many types for a malformed file
        raise DocumentError(f"{name}: cannot read this PDF ({_reason(error)})") from None
    if count > max_pages:
        raise DocumentError(f"{name} has {count:,} pages; the limit is {max_pages:,}")
    pages = []
    chars = 0
    failure: Exception | None = None
    for number in range(1, count + 1):
        try:
            text = reader.pages[number - 1].extract_text() or ""
        except MemoryError:
            raise
        except Exception as error:  # one broken page should not cost the others
            log.warning("%s: page %d unreadable: %s", name, number, _reason(error))
            failure = failure or error
            text = ""
        text = "\n".join(line.rstrip() for line in normalise(text).replace("\x00", "")
                         .split("\n")).strip("\n")
        chars += len(text)
        check_length(name, chars)
        pages.append(Page(number, text))
    if not any(page.text.strip() for page in pages):
        if failure is not None:
            raise DocumentError(f"{name}: cannot read this PDF ({_reason(failure)})")
        raise DocumentError(f"{name}: no text found: is it a scan?")
    return pages


def _reason(error: Exception) -> str:
    return str(error).strip() or type(error).__name__
