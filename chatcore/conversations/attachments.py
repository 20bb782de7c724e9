"""Files and long pastes attached to messages: kept in SQLite with their extracted text,
indexed by passage in FTS5, and given to a reply whole or, when they do not fit, as the
passages BM25 ranks best for the question (chatcore/documents/passages.py).

Only the text is kept, never the file, so nothing is ever served back by path.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from backends.base import Message
from chatcore.documents.document import Document, Page, Passage
from chatcore.documents.reader import passages
from chatcore.i18n import Texts
from chatcore.documents.passages import PassageIndex, Selection, fill, rank, render
from chatcore.conversations.store import NotFound, Store


@dataclass(frozen=True)
class Attached:
    """What a chip shows of an attachment."""

    id: int
    name: str
    kind: str
    page_count: int | None
    chars: int

    def chip(self, texts: Texts, tokens: int | None = None) -> str:
        """`tokens`: the count in the chosen model's tokenizer, the one the context meter
        adds up; without it, an estimate."""
        parts = [self.name]
        if self.page_count:
            parts.append(texts("attach.pages", n=self.page_count))
        if tokens is not None:
            parts.append(texts("attach.counted", n=tokens))
        else:  # tokens depend on the model: about 4 characters each
            parts.append(texts("attach.tokens", n=max(1, self.chars // 4)))
        return texts("attach.chip", details=" · ".join(parts))


@dataclass(frozen=True)
class Grounding:
    """The attachments a reply may draw on, and their passages ranked for its question;
    the scheduler fills the room the prompt leaves once the model's tokenizer is there."""

    documents: tuple[tuple[int, tuple[Passage, ...]], ...]  # (attachment id, passages)
    ranked: tuple[tuple[int, int], ...]  # (attachment id, passage index), best first

    def each(self) -> dict[int, str]:
        """Each attachment whole and alone, as the model would get it: what its chip
        counts."""
        return {att: render([(att, p) for p in items]) for att, items in self.documents}

    def fit(self, messages: Sequence[Message], room_tokens: int,
            count_tokens) -> tuple[list[Message], Selection]:
        """The messages with the chosen text before the last user message's own: a second
        question on the same whole document then shares the prompt's prefix with the
        first, and the engine's prompt cache reads only the question."""
        selection = fill(self.documents, self.ranked, room_tokens,
                         lambda text: count_tokens([Message("user", text)]))
        messages = list(messages)
        last = max(i for i, m in enumerate(messages) if m.role == "user")
        block = render(selection.chosen)
        messages[last] = Message("user", f"{block}\n\n{messages[last].content}")
        return messages, selection


class AttachmentStore:
    """The attachment tables of the app's one database (see chatcore/conversations/store.py)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def add(self, user: str, document: Document) -> Attached:
        """Keep a document's text and index its passages; not yet part of a message."""
        pages = json.dumps([[p.number, p.text] for p in document.pages], ensure_ascii=False)
        chars = len(document.text)
        with self._store.transaction() as db:
            cursor = db.execute(
                "INSERT INTO attachments (user, name, kind, page_count, chars, pages, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (user, document.name, document.kind, document.page_count, chars, pages,
                 time.time()))
            attachment = int(cursor.lastrowid)
            PassageIndex(db).add(attachment, passages(document))
        return Attached(attachment, document.name, document.kind, document.page_count, chars)

    def attach(self, user: str, message_id: int, ids: Sequence[int]) -> None:
        """Make the user's pending attachments part of a stored message."""
        with self._store.transaction() as db:
            db.executemany("UPDATE attachments SET message_id = ? WHERE id = ? AND user = ?"
                           " AND message_id IS NULL", [(message_id, i, user) for i in ids])

    def described(self, user: str, ids: Sequence[int]) -> list[Attached]:
        found = {a.id: a for a in self._rows(
            user, f"id IN ({', '.join('?' * len(ids))})", list(ids))} if ids else {}
        return [found[i] for i in ids if i in found]

    def by_message(self, user: str, conversation_id: int) -> dict[int, list[Attached]]:
        """The attachments of each message of a conversation, for its chips."""
        found: dict[int, list[Attached]] = {}
        with self._store.transaction() as db:
            rows = db.execute(
                "SELECT a.message_id, a.id, a.name, a.kind, a.page_count, a.chars"
                " FROM attachments a JOIN messages m ON m.id = a.message_id"
                " WHERE a.user = ? AND m.conversation_id = ? ORDER BY a.id",
                (user, conversation_id)).fetchall()
        for message_id, *rest in rows:
            found.setdefault(message_id, []).append(Attached(*rest))
        return found

    def grounding(self, user: str, ids: Sequence[int], question: str) -> Grounding | None:
        """The given attachments' passages ranked for the question; None without any."""
        if not ids:
            return None
        with self._store.transaction() as db:
            rows = db.execute(
                f"SELECT id, name, kind, pages FROM attachments WHERE user = ? AND id IN"
                f" ({', '.join('?' * len(ids))}) ORDER BY id", (user, *ids)).fetchall()
            documents = tuple(
                (attachment, tuple(passages(Document(name, kind, tuple(
                    Page(number, text) for number, text in json.loads(pages))))))
                for attachment, name, kind, pages in rows)
            ranked = tuple(rank(PassageIndex(db), documents, question))
        return Grounding(documents, ranked) if documents else None

    def of_conversation(self, user: str, conversation_id: int) -> list[int]:
        """Ids of every attachment of the messages on the branch shown, oldest first:
        a follow-up question may be about any of them."""
        try:
            shown = {m.id for m in self._store.get_conversation(user, conversation_id).messages}
        except NotFound:
            return []
        with self._store.transaction() as db:
            return [row[0] for row in db.execute(
                "SELECT a.id, a.message_id FROM attachments a JOIN messages m"
                " ON m.id = a.message_id WHERE a.user = ? AND m.conversation_id = ?"
                " ORDER BY a.id", (user, conversation_id)) if row[1] in shown]

    def _rows(self, user: str, where: str, args: list) -> list[Attached]:
        with self._store.transaction() as db:
            return [Attached(*row) for row in db.execute(
                f"SELECT id, name, kind, page_count, chars FROM attachments WHERE user = ?"
                f" AND {where}", (user, *args))]
