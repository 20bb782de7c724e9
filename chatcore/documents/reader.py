"""Attachments: text extracted once from a file or a long paste, then split into passages.

The type is decided by the bytes, never by the name, so a PNG renamed notes.txt is refused
rather than fed to a model as garbage; the name's suffix only labels text that already
decoded. Every refusal is a DocumentError whose message names the file and what is wrong,
ready to show to a person. Nothing here knows about the UI or the database.

Text, CSV and JSON are read in this process: each step is linear in the bytes, and the bytes
are capped. A PDF is not: a few KB of pages that all point at one content stream of many
operators cost seconds each (pypdf bounds each page, not the file), so a PDF is read in a
child process held to PdfLimits (pages, CPU seconds, wall seconds, memory); over any of them
it is refused with the reason, and the server's own threads never do the work.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import math
import re
import sys
from collections.abc import Sequence
from pathlib import PurePath

from chatcore.documents.document import (
    Document,
    DocumentError,
    Page,
    Passage,
    check_length,
    normalise,
)
from chatcore.documents.pdf import PDF_LIMITS, PdfLimits, read_pdf

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 10_000_000
MAX_MESSAGE_BYTES = 20_000_000
MAX_FILES = 5
PASTE_CHIP_CHARS = 4000  # a paste at least this long becomes a chip rather than message text

KINDS = ("text", "markdown", "code", "csv", "json", "pdf")

_MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdown", ".mkd"})
_CODE_SUFFIXES = frozenset({
    ".py", ".pyi", ".ipynb", ".js", ".mjs", ".cjs", ".jsx", ".ts", ".tsx", ".java", ".kt",
    ".kts", ".scala", ".groovy", ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".hxx",
    ".m", ".mm", ".cs", ".fs", ".vb", ".rs", ".go", ".rb", ".php", ".pl", ".pm", ".lua",
    ".r", ".jl", ".swift", ".dart", ".hs", ".ml", ".mli", ".clj", ".ex", ".exs", ".erl",
    ".elm", ".sh", ".bash", ".zsh", ".fish", ".ps1", ".bat", ".cmd", ".sql", ".html",
    ".htm", ".xml", ".xsl", ".svg", ".css", ".scss", ".sass", ".less", ".vue", ".svelte",
    ".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".properties", ".gradle", ".cmake",
    ".mk", ".dockerfile", ".tf", ".proto", ".graphql", ".tex", ".rst", ".asm", ".s",
    ".zig", ".nim", ".v", ".sv", ".vhd", ".f90", ".pas",
})
_CODE_NAMES = frozenset({"makefile", "dockerfile", "cmakelists.txt", "gemfile", "rakefile",
                         "vagrantfile", "jenkinsfile", "procfile"})
_JSON_SUFFIXES = frozenset({".json"})
_JSON_LINES_SUFFIXES = frozenset({".jsonl", ".ndjson"})

# Formats that are never text, whatever the file is called: (leading bytes, what it is).
_BINARY_MAGICS: Sequence[tuple[bytes, str]] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"PK\x03\x04", "a ZIP archive or an Office document"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office document"),
    (b"\x7fELF", "a program"),
    (b"\xca\xfe\xba\xbe", "a program"),
    (b"\xcf\xfa\xed\xfe", "a program"),
    (b"\x00asm", "a WebAssembly module"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"OggS", "an audio file"),
    (b"fLaC", "an audio file"),
    (b"ID3", "an audio file"),
    (b"GGUF", "a model file"),
)
_TEXT_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f-\x9f]")  # not \t\n\f\r ESC
_BINARY_SHARE = 0.05    # more control characters than this in decoded text: binary
_GARBLED_SHARE = 0.3    # more undecodable bytes and controls than this: binary, not mis-encoded

_BINARY = "not a text, source code, CSV, JSON or PDF file (it looks like binary data{})"


def _megabytes(size: int) -> str:
    # Rounded up, so a file one byte over the limit never reads as "10.0 MB; the limit is 10 MB".
    return f"{math.ceil(size / 100_000) / 10:.1f} MB"


def _limit(size: int) -> str:
    return f"{size / 1_000_000:g} MB"


def _check_size(name: str, size: int) -> None:
    if size > MAX_FILE_BYTES:
        raise DocumentError(f"{name} is {_megabytes(size)}; the limit per file is "
                            f"{_limit(MAX_FILE_BYTES)}")


def check_message(files: Sequence[tuple[str, int]]) -> None:
    """Refuse a message's attachments, given as (name, size in bytes), before any is read."""
    if len(files) > MAX_FILES:
        raise DocumentError(f"{len(files)} files attached; the limit is {MAX_FILES} files "
                            f"per message")
    for name, size in files:
        _check_size(name, size)
    total = sum(size for _, size in files)
    if total > MAX_MESSAGE_BYTES:
        raise DocumentError(f"the {len(files)} attached files add up to {_megabytes(total)}; "
                            f"the limit per message is {_limit(MAX_MESSAGE_BYTES)}")


def extract(name: str, data: bytes, pdf_limits: PdfLimits = PDF_LIMITS) -> Document:
    """Read an attached file's text once, deciding its type by its content; a PDF is read in
    a child process held to `pdf_limits`."""
    _check_size(name, len(data))
    if not data.strip():
        raise DocumentError(f"{name} is empty")
    if data[:1024].lstrip(b" \t\r\n\f").startswith(b"%PDF-"):
        return read_pdf(name, data, pdf_limits)
    for magic, what in _BINARY_MAGICS:
        if data.startswith(magic):
            raise DocumentError(f"{name}: " + _BINARY.format(": " + what))
    text = normalise(_decode(name, data))
    check_length(name, len(text))
    kind = _kind(name)
    if kind == "csv":
        _check_csv(name, text)
    elif kind == "json":
        _check_json(name, text, lines=PurePath(name).suffix.lower() in _JSON_LINES_SUFFIXES)
    return Document(name, kind, (Page(None, text),))


def from_paste(text: str) -> Document:
    """A long paste as an attachment of its own, so it shows as a chip and can be retrieved."""
    name = f"Pasted text ({len(text):,} characters)"
    if not text.strip():
        raise DocumentError("the pasted text is empty")
    check_length("the pasted text", len(text))
    return Document(name, "text", (Page(None, normalise(text)),))


def _kind(name: str) -> str:
    path = PurePath(name)
    suffix = path.suffix.lower()
    if suffix in _MARKDOWN_SUFFIXES:
        return "markdown"
    if suffix == ".csv":
        return "csv"
    if suffix in _JSON_SUFFIXES or suffix in _JSON_LINES_SUFFIXES:
        return "json"
    if suffix in _CODE_SUFFIXES or path.name.lower() in _CODE_NAMES:
        return "code"
    return "text"


def _decode(name: str, data: bytes) -> str:
    binary = DocumentError(f"{name}: " + _BINARY.format(""))
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        # Windows' "Unicode" text: full of NUL bytes, yet text.
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise binary from None
    else:
        if b"\x00" in data:
            raise binary
        body = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as error:
            garbled = body.decode("utf-8", errors="replace")
            bad = garbled.count("\ufffd") + len(_TEXT_CONTROLS.findall(garbled))
            if bad > _GARBLED_SHARE * len(garbled):
                raise binary from None
            offset = error.start + len(data) - len(body)
            line = data.count(b"\n", 0, offset) + 1
            raise DocumentError(
                f"{name}: not UTF-8 text: byte 0x{data[offset]:02X} at offset {offset:,} "
                f"(line {line}) cannot be decoded; save the file as UTF-8 and attach it "
                f"again") from None
    if len(_TEXT_CONTROLS.findall(text)) > _BINARY_SHARE * len(text):
        raise binary
    return text


def _check_csv(name: str, text: str) -> None:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    row_start = 1
    try:
        for _ in reader:
            row_start = reader.line_num + 1
    except csv.Error as error:
        if "field larger than field limit" in str(error):
            return  # well formed as far as read; only longer than csv's default field
        raise DocumentError(f"{name}: not valid CSV at line {row_start}: {error}") from None


def _check_json(name: str, text: str, lines: bool) -> None:
    chunks = enumerate(text.split("\n"), 1) if lines else [(1, text)]
    for first_line, chunk in chunks:
        if lines and not chunk.strip():
            continue
        try:
            json.loads(chunk)
        except json.JSONDecodeError as error:
            raise DocumentError(
                f"{name}: not valid JSON at line {first_line + error.lineno - 1}, column "
                f"{error.colno}: {error.msg}") from None
        except RecursionError:
            raise DocumentError(f"{name}: not readable as JSON: nested too deeply") from None
        except ValueError:  # not JSONDecodeError: a number longer than Python reads
            where = f" (line {first_line})" if lines else ""
            raise DocumentError(f"{name}: not readable as JSON: a number has more than "
                                f"{sys.get_int_max_str_digits():,} digits{where}") from None


# Where a passage may end, from the most to the least natural; each level is tried only on
# stretches still too long after the one before.
_BOUNDARIES: Sequence[re.Pattern[str]] = (
    re.compile(r"\n[ \t]*\n\s*"),                          # paragraphs
    re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+|(?<=[。！？])"),  # sentences
    re.compile(r"\n\s*"),                                   # lines (code, CSV, PDF layout)
    re.compile(r"\s+"),                                     # words
)


def passages(doc: Document, target_chars: int = 1200) -> list[Passage]:
    """Split a document into passages of at most about `target_chars` for retrieval.

    Cuts fall at paragraph, then sentence, then line, then word boundaries (a word longer
    than the target is cut where it must); never across PDF pages. The passages cover the
    document exactly, only the whitespace at their edges trimmed, so nothing is lost.
    """
    if target_chars < 1:
        raise ValueError("target_chars must be at least 1")
    out: list[Passage] = []
    for page in doc.pages:
        for start, end in _spans(page.text, 0, len(page.text), target_chars, 0):
            text = page.text[start:end].strip()
            if text:
                out.append(Passage(doc.name, page.number, len(out), text))
    return out


def _spans(text: str, start: int, end: int, target: int, level: int) -> list[tuple[int, int]]:
    """Contiguous spans covering text[start:end], each at most `target` characters."""
    if end - start <= target:
        return [(start, end)]
    if level == len(_BOUNDARIES):
        return [(at, min(at + target, end)) for at in range(start, end, target)]
    cuts = [m.end() for m in _BOUNDARIES[level].finditer(text, start, end)
            if start < m.end() < end]
    bounds = [start, *cuts, end]
    pieces: list[tuple[int, int]] = []
    for a, b in zip(bounds, bounds[1:]):
        if b - a > target:
            pieces.extend(_spans(text, a, b, target, level + 1))
        else:
            pieces.append((a, b))
    packed: list[tuple[int, int]] = []
    for a, b in pieces:
        if packed and b - packed[-1][0] <= target:
            packed[-1] = (packed[-1][0], b)
        else:
            packed.append((a, b))
    return packed
