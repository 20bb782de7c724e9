"""Passages of attachments in SQLite FTS5, ranked by BM25, to fill the room a model has left.

Offline and in the conversations' own database: no embedding model to download or keep in
memory. select() sends attachments whole when they fit and retrieval only when they do not;
render() turns what was chosen into the block the user message carries. match_query() and
phrase_query() turn free text into MATCH expressions that cannot fail to parse, for this
index and for conversation search alike.
"""
from __future__ import annotations

import html
import json
import logging
import re
import sqlite3
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chatcore.documents.reader import Passage
from chatcore.i18n import Texts

log = logging.getLogger(__name__)

_TOKENIZER = "unicode61 remove_diacritics 2"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _check_identifier(table: str) -> None:
    if not _IDENTIFIER.match(table):
        raise ValueError(f"{table!r} is not a plain SQL table name")


def schema(table: str = "passages") -> str:
    """The DDL of a passage table named `table` (for a migration)."""
    _check_identifier(table)
    return (f"CREATE VIRTUAL TABLE {table} USING fts5(text, document UNINDEXED, attachment "
            f"UNINDEXED, page UNINDEXED, position UNINDEXED, tokenize='{_TOKENIZER}');")


SCHEMA: str = schema()

# Words that say nothing about which passage is meant (English and Tagalog), dropped from
# retrieval queries unless nothing else is left.
_STOPWORDS = frozenset("""
a an the of to in on at for by with from into onto about as and or but nor not no so if
than then also is are was were be been being am do does did doing has have had having it
its this that these those there here what which who whom whose when where why how i me my
mine you your yours he him his she her hers we us our ours they them their theirs can could
would should will shall may might must please tell say says said give show explain find
any some all each every other such only own same just very too more most much many
ang ng nang mga sa na ay si ni kay sina nina kina ko mo niya namin natin ninyo nila ako
ikaw ka siya kami tayo kayo sila akin iyo kaniya kanya amin atin inyo kanila ito iyan iyon
nito niyan niyon dito diyan doon ba po ho din rin lang lamang pa para kung ano sino saan
kailan bakit paano alin ilan mayroon meron wala hindi oo yung yun at o pero kasi dahil
""".split())
_MAX_TERMS = 64  # a pasted essay as a question should not become a thousand-term query
_MAX_QUERY_CHARS = 20_000


def _words(text: str) -> list[str]:
    """Runs of letters and digits with their combining marks, one per distinct word (case
    ignored), in order of appearance.

    Marks stay in the word ("हिन्दी", not "ह", "न", "द") so that, quoted, it is matched as
    FTS5's own tokenizer splits it, as a phrase; NFC so that a decomposed "é" is one word.
    """
    words: dict[str, str] = {}
    current: list[str] = []
    for char in unicodedata.normalize("NFC", text[:_MAX_QUERY_CHARS]) + " ":
        category = unicodedata.category(char)
        if category[0] in "LN" or category == "Co" or (category[0] == "M" and current):
            current.append(char)
        elif current:
            word = "".join(current)
            words.setdefault(word.lower(), word)
            current = []
    return list(words.values())


def _quote(word: str) -> str:
    # Words hold letters, digits and marks only, so no quote needs doubling; quoting keeps
    # AND, OR, NOT and NEAR words and not operators.
    return '"' + word.replace('"', '""') + '"'


def match_query(text: str) -> str | None:
    """A MATCH expression ranking passages for a question: any of its telling words.

    Words of two or more letters or digits, each quoted, OR-joined; stopwords dropped unless
    that leaves nothing. None when the text has no words. Never an FTS5 syntax error.
    """
    words = [w for w in _words(text) if len(w) >= 2]
    if not words:
        return None
    telling = [w for w in words if w.lower() not in _STOPWORDS] or words
    return " OR ".join(_quote(w) for w in telling[:_MAX_TERMS])


def phrase_query(text: str) -> str | None:
    """A MATCH expression for search as you type: every word must appear, the last one as a
    prefix. None when the text has no words. Never an FTS5 syntax error."""
    words = _words(text)[:_MAX_TERMS]
    if not words:
        return None
    terms = [_quote(w) for w in words]
    terms[-1] += "*"
    return " AND ".join(terms)


class PassageIndex:
    """The passages of attachments in an FTS5 table (see schema()); the caller owns the
    connection and its transactions."""

    def __init__(self, db: sqlite3.Connection, table: str = "passages") -> None:
        _check_identifier(table)
        self._db = db
        self._table = table

    def add(self, attachment: int, items: Sequence[Passage]) -> None:
        """Index an attachment's passages under its id."""
        self._db.executemany(
            f"INSERT INTO {self._table} (text, document, attachment, page, position)"
            f" VALUES (?, ?, ?, ?, ?)",
            [(p.text, p.document, attachment, p.page, p.index) for p in items])

    def search(self, attachments: Sequence[int], question: str,
               limit: int = 200) -> list[tuple[int, Passage]]:
        """(attachment id, passage) of the given attachments that match the question, best
        first by BM25; an empty list when the question has no words."""
        query = match_query(question)
        if query is None or not attachments or limit <= 0:
            return []
        ids = list(dict.fromkeys(int(a) for a in attachments))
        t = self._table
        rows = self._db.execute(
            f"SELECT attachment, document, page, position, text FROM {t}"
            f" WHERE {t} MATCH ? AND attachment IN ({', '.join('?' * len(ids))})"
            f" ORDER BY bm25({t}), attachment, position LIMIT ?",
            [query, *ids, limit]).fetchall()
        return [(att, Passage(doc, page, position, text))
                for att, doc, page, position, text in rows]

    def delete(self, attachment: int) -> None:
        """Forget an attachment's passages."""
        self._db.execute(f"DELETE FROM {self._table} WHERE attachment = ?", (attachment,))


@dataclass(frozen=True)
class Selection:
    chosen: list[tuple[int, Passage]]  # (attachment id, passage) in reading order
    total: int                         # passages there were to choose from
    whole: bool                        # everything fitted: no retrieval happened

    def sources(self) -> str:
        """What the reply keeps of retrieval, as JSON for the store ("" when everything was
        sent): the counts and each document's pages, put in words when shown
        (`sources_note`), in the language of the page that shows them."""
        if self.whole:
            return ""
        pages: dict[str, set[int]] = {}
        for _, p in self.chosen:
            if p.page is not None:
                pages.setdefault(p.document, set()).add(p.page)
        return json.dumps({"used": len(self.chosen), "total": self.total,
                           "pages": {doc: sorted(numbers) for doc, numbers in pages.items()}},
                          ensure_ascii=False)

    def note(self, texts: Texts) -> str:
        """E.g. "used 6 of 41 passages (pages 3, 4, 9)"; "" when everything was sent."""
        return sources_note(self.sources(), texts)


def sources_note(sources: str, texts: Texts) -> str:
    """A reply's stored sources in words: "used 6 of 41 passages (pages 3, 4, 9)", or with
    several documents "(a.pdf: page 2; b.pdf: pages 4, 5)". Replies stored before sources
    were kept as JSON hold their English words, which are shown as they are."""
    try:
        found = json.loads(sources) if sources else None
    except ValueError:
        return sources
    if not isinstance(found, dict):
        return sources
    note = texts("attach.used", used=found.get("used", 0), total=found.get("total", 0))
    pages = found.get("pages") or {}

    def listed(numbers: list[int]) -> str:
        return texts("attach.page_list", n=len(numbers),
                     pages=", ".join(str(n) for n in numbers))

    if len(pages) == 1:
        return texts("attach.with_pages", note=note, pages=listed(next(iter(pages.values()))))
    if pages:
        return texts("attach.with_pages", note=note, pages="; ".join(
            texts("attach.document_pages", document=doc, pages=listed(numbers))
            for doc, numbers in pages.items()))
    return note


def render(chosen: Sequence[tuple[int, Passage]]) -> str:
    """The block of attachment text for the user message, from (attachment id, passage)
    pairs in reading order (Selection.chosen).

    Each attachment appears once, as <document name="report.pdf"> ... </document>, in the
    order first seen; "[page N]" opens each PDF page and "[...]" marks where passages were
    left out, so the model knows the text is excerpts and where they come from:

        <document name="report.pdf">
        [page 3]
        ...
        [...]
        [page 9]
        ...
        </document>
    """
    groups: dict[int, list[Passage]] = {}
    for attachment, passage in chosen:
        groups.setdefault(attachment, []).append(passage)
    blocks = []
    for items in groups.values():
        lines = [f'<document name="{html.escape(items[0].document, quote=True)}">']
        previous: Passage | None = None
        for p in items:
            if previous is not None and p.index != previous.index + 1:
                lines.append("[...]")
            if p.page is not None and (previous is None or p.page != previous.page
                                       or p.index != previous.index + 1):
                lines.append(f"[page {p.page}]")
            lines.append(p.text)
            previous = p
        lines.append("</document>")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def select(index: PassageIndex, attachments: Sequence[tuple[int, Sequence[Passage]]],
           question: str, room_tokens: int,
           count_tokens: Callable[[str], int]) -> Selection:
    """What of a message's attachments goes to the model, given the tokens it has room for:
    `rank` by BM25, then `fill` the room. `attachments` pairs each attachment id with its
    passages, already added to `index`."""
    return fill(attachments, rank(index, attachments, question), room_tokens, count_tokens)


def rank(index: PassageIndex, attachments: Sequence[tuple[int, Sequence[Passage]]],
         question: str) -> list[tuple[int, int]]:
    """(attachment id, passage index) of the passages that match the question, best first
    by BM25: what `fill` takes, found before the model is loaded (no tokenizer needed)."""
    known = {(att, p.index) for att, items in attachments for p in items}
    return [(att, p.index) for att, p in index.search([a for a, _ in attachments], question,
                                                      limit=max(len(known), 1))
            if (att, p.index) in known]


def fill(attachments: Sequence[tuple[int, Sequence[Passage]]], ranked: Sequence[tuple[int, int]],
         room_tokens: int, count_tokens: Callable[[str], int]) -> Selection:
    """Everything, when render() of it all fits (whole=True). Otherwise the `ranked`
    passages, added best first while the rendered block still fits; passages that match
    nothing are left out, unless nothing matches at all, when the first passages in reading
    order are sent so the model sees something."""
    order = {att: n for n, (att, _) in enumerate(attachments)}
    everything = [(att, p) for att, items in attachments for p in items]
    total = len(everything)

    def reading(pair: tuple[int, Passage]) -> tuple[int, int]:
        return order[pair[0]], pair[1].index

    if not everything or count_tokens(render(everything)) <= room_tokens:
        return Selection(everything, total, whole=True)
    known = {(att, p.index): p for att, p in everything}
    chosen: list[tuple[int, Passage]] = []
    used = 0

    def fits(pair: tuple[int, Passage]) -> bool:
        nonlocal used
        # A passage alone over the room left cannot fit the block: skip the full count.
        if used + count_tokens(pair[1].text) > room_tokens:
            return False
        trial = sorted([*chosen, pair], key=reading)
        tokens = count_tokens(render(trial))
        if tokens > room_tokens:
            return False
        chosen[:] = trial
        used = tokens
        return True

    for key in ranked:
        if key in known:
            fits((key[0], known[key]))
    if not chosen:
        for pair in everything:
            if not fits(pair):
                break
    log.debug("chose %d of %d passages (%d ranked) in %d tokens of %d", len(chosen), total,
              len(ranked), used, room_tokens)
    return Selection(chosen, total, whole=False)
