"""What an attachment becomes once read: its pages of text, its passages, or the refusal."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

MAX_TEXT_CHARS = 1_000_000


class DocumentError(ValueError):
    """An attachment was refused; the message names the file and says why, for a person."""


@dataclass(frozen=True)
class Page:
    number: int | None  # 1-based PDF page; None for files without pages
    text: str


@dataclass(frozen=True)
class Document:
    name: str
    kind: str  # one of KINDS
    pages: tuple[Page, ...]

    @property
    def text(self) -> str:
        """The whole text, pages separated by a blank line (pages without text left out)."""
        return "\n\n".join(page.text for page in self.pages if page.text)

    @property
    def page_count(self) -> int | None:
        """Pages in the PDF, those without text included; None for files without pages."""
        return len(self.pages) if self.kind == "pdf" else None


@dataclass(frozen=True)
class Passage:
    document: str      # the Document's name
    page: int | None   # 1-based PDF page, None for files without pages
    index: int         # order within its document, from 0
    text: str


def normalise(text: str) -> str:
    # One newline convention and one Unicode form, so search terms and passages line up.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFC", text)


def check_length(name: str, chars: int) -> None:
    if chars > MAX_TEXT_CHARS:
        raise DocumentError(f"{name} has {chars:,} characters of text; the limit is "
                            f"{MAX_TEXT_CHARS:,}")
