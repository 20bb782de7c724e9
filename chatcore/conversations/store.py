"""Conversations in SQLite: durable, versioned with migrations, scoped per user.

Every write is its own committed transaction (WAL, synchronous=FULL), so a killed process
loses at most the reply it was generating, never a message that was saved. Messages form a
tree (chatcore/conversations/tree.py): a regenerated reply or an edited question is a new
sibling, every earlier version stays, and each message remembers which child was shown last.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from chatcore.documents.passages import phrase_query
from chatcore.conversations.schema import MIGRATIONS
from chatcore.conversations.tree import (
    Node,
    Position,
    check_child,
    check_tree,
    positions,
    shown_path,
    version,
)

DB_NAME = "chats.sqlite3"
# The most messages one conversation keeps (an import's limit), so the deepest branch too.
MAX_MESSAGES = 5000
MAX_MESSAGE_CHARS = 1_000_000  # one message's text: the page's box, an edit, an import
# `add_message`'s default parent: the last message of the branch shown.
AT_END = -1


class NotFound(Exception):
    """No such conversation for this user (another user's counts as none)."""


@dataclass
class StoredMessage:
    role: str
    content: str
    model: str | None = None
    params: dict | None = None
    time_to_first_token: float | None = None
    tokens_per_second: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    stopped: bool = False
    superseded: bool = False  # read back: off the branch shown (stored rows keep 0)
    created: float = field(default_factory=time.time)
    id: int | None = None
    # A thinking model's thought, kept apart: shown folded, left out of later prompts.
    thought: str = ""
    thought_seconds: float | None = None
    thought_tokens: int | None = None
    # Which passages of the attachments the reply was given: JSON (passage_index.Selection
    # .sources), put in words when shown; rows from before hold English words.
    sources: str = ""
    parent_id: int | None = None  # None: a first message (a first question's versions)


@dataclass
class Conversation:
    id: int
    title: str
    model: str
    system_prompt: str
    params: dict
    created: float
    updated: float
    messages: list[StoredMessage]
    # Each shown message's place among its versions ("2/3"), by message id.
    positions: dict[int, Position] = field(default_factory=dict)


@dataclass(frozen=True)
class ConversationSummary:
    id: int
    title: str
    updated: float


_MESSAGE_COLUMNS = ("role", "content", "model", "params", "time_to_first_token",
                    "tokens_per_second", "prompt_tokens", "completion_tokens", "finish_reason",
                    "stopped", "superseded", "created", "id", "thought", "thought_seconds",
                    "thought_tokens", "sources", "parent_id")


class Store:
    def __init__(self, data_dir: Path) -> None:
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / DB_NAME
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- schema --------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    if callable(script):  # a step that reads the rows it reshapes
                        script(self._db)
                    else:
                        statements = script if isinstance(script, tuple) else \
                            filter(str.strip, script.split(";"))
                        for statement in statements:
                            self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {number}")
                    self._db.execute("COMMIT")
                except sqlite3.Error:
                    self._db.execute("ROLLBACK")
                    raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection, held under the lock for one committed transaction (rolled back
        if the block raises): for modules that keep their own tables in this file."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def integrity_check(self) -> str:
        with self._lock:
            return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    # -- conversations -------------------------------------------------------------------
    def create_conversation(self, user: str, title: str, model: str, system_prompt: str = "",
                            params: dict | None = None) -> int:
        now = time.time()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO conversations (user, title, model, system_prompt, params, created,"
                " updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (user, title, model, system_prompt, json.dumps(params or {}), now, now))
            return int(cursor.lastrowid)

    def list_conversations(self, user: str, query: str = "") -> list[ConversationSummary]:
        """Newest first; `query` matches titles (as text) and messages (every word, found
        with FTS5 whatever its case or accents), case-insensitively."""
        sql = "SELECT id, title, updated FROM conversations c WHERE user = ?"
        args: list = [user]
        if query.strip():
            pattern = "%" + query.strip().replace("\\", "\\\\").replace("%", "\\%") \
                .replace("_", "\\_") + "%"
            words = phrase_query(query)  # every word, the last as a prefix, in any message
            sql += " AND (title LIKE ? ESCAPE '\\'"
            args.append(pattern)
            if words is not None:
                sql += (" OR EXISTS (SELECT 1 FROM messages_fts f JOIN messages m"
                        " ON m.id = f.rowid WHERE messages_fts MATCH ?"
                        " AND m.conversation_id = c.id)")
                args.append(words)
            sql += ")"
        sql += " ORDER BY updated DESC, id DESC"
        with self._lock:
            return [ConversationSummary(*row) for row in self._db.execute(sql, args)]

    def get_conversation(self, user: str, conversation_id: int,
                         include_superseded: bool = False) -> Conversation:
        """The branch shown, first message first; with `include_superseded` every message
        of the tree, oldest first, those off the shown branch marked superseded."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, title, model, system_prompt, params, created, updated"
                " FROM conversations WHERE id = ? AND user = ?", (conversation_id, user)).fetchone()
            if row is None:
                raise NotFound(f"conversation {conversation_id} does not exist")
            rows = self._db.execute(
                f"SELECT {', '.join(_MESSAGE_COLUMNS)} FROM messages"
                f" WHERE conversation_id = ? ORDER BY id", (conversation_id,)).fetchall()
            nodes = self._nodes(conversation_id)
            path = shown_path(nodes, self._shown_root(conversation_id))
        by_id = {m.id: m for m in map(_message, rows)}
        on_path = set(path)
        for message in by_id.values():
            message.superseded = message.id not in on_path
        messages = list(by_id.values()) if include_superseded else [by_id[i] for i in path]
        return Conversation(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6],
                            messages, positions(nodes, path))

    def rename(self, user: str, conversation_id: int, title: str) -> None:
        self._update(user, conversation_id, "title = ?", (title.strip() or "Untitled",))

    def update_settings(self, user: str, conversation_id: int, model: str, system_prompt: str,
                        params: dict) -> None:
        self._update(user, conversation_id, "model = ?, system_prompt = ?, params = ?",
                     (model, system_prompt, json.dumps(params)))

    def delete(self, user: str, conversation_id: int) -> None:
        with self._lock:
            cursor = self._db.execute("DELETE FROM conversations WHERE id = ? AND user = ?",
                                      (conversation_id, user))
        if cursor.rowcount == 0:
            raise NotFound(f"conversation {conversation_id} does not exist")

    def _update(self, user: str, conversation_id: int, assignments: str, args: tuple) -> None:
        with self._lock:
            cursor = self._db.execute(
                f"UPDATE conversations SET {assignments}, updated = ? WHERE id = ? AND user = ?",
                (*args, time.time(), conversation_id, user))
        if cursor.rowcount == 0:
            raise NotFound(f"conversation {conversation_id} does not exist")

    # -- messages ------------------------------------------------------------------------
    def add_message(self, user: str, conversation_id: int, message: StoredMessage,
                    parent_id: int | None = AT_END) -> int:
        """A message under `parent_id` (None: a first message; AT_END: the shown branch's
        last), shown from now on; TreeError (nothing stored) for a parent elsewhere, a
        33rd version or a branch past MAX_MESSAGES."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._require_owner(user, conversation_id)
                nodes = self._nodes(conversation_id)
                if parent_id == AT_END:
                    path = shown_path(nodes, self._shown_root(conversation_id))
                    parent_id = path[-1] if path else None
                check_child(nodes, parent_id, conversation_id, MAX_MESSAGES)
                message.parent_id = parent_id
                message_id = self._insert_message(conversation_id, message)
                self._show(conversation_id, nodes + [Node(message_id, parent_id)], message_id)
                self._db.execute("UPDATE conversations SET updated = ? WHERE id = ?",
                                 (time.time(), conversation_id))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return message_id

    def _require_owner(self, user: str, conversation_id: int) -> None:
        """Called under the lock: another user's conversation is as good as absent."""
        owned = self._db.execute("SELECT 1 FROM conversations WHERE id = ? AND user = ?",
                                 (conversation_id, user)).fetchone()
        if owned is None:
            raise NotFound(f"conversation {conversation_id} does not exist")

    def _insert_message(self, conversation_id: int, m: StoredMessage) -> int:
        cursor = self._db.execute(
            "INSERT INTO messages (conversation_id, role, content, model, params,"
            " time_to_first_token, tokens_per_second, prompt_tokens, completion_tokens,"
            " finish_reason, stopped, superseded, created, thought, thought_seconds,"
            " thought_tokens, sources, parent_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,0,?,?,?,?,?,?)",
            (conversation_id, m.role, m.content, m.model,
             json.dumps(m.params) if m.params is not None else None, m.time_to_first_token,
             m.tokens_per_second, m.prompt_tokens, m.completion_tokens, m.finish_reason,
             int(m.stopped), m.created, m.thought, m.thought_seconds,
             m.thought_tokens, m.sources, m.parent_id))
        return int(cursor.lastrowid)

    # -- branches ------------------------------------------------------------------------
    def flip(self, user: str, conversation_id: int, message_id: int, index: int) -> int:
        """Show version `index` (from 1) of `message_id` instead; its id. TreeError naming
        the message when there is no such version."""
        with self.transaction():
            self._require_owner(user, conversation_id)
            nodes = self._nodes(conversation_id)
            chosen = version(nodes, message_id, index, conversation_id)
            self._show(conversation_id, nodes, chosen)
        return chosen

    def _nodes(self, conversation_id: int) -> list[Node]:
        return [Node(*row) for row in self._db.execute(
            "SELECT id, parent_id, shown_child FROM messages WHERE conversation_id = ?"
            " ORDER BY id", (conversation_id,))]

    def _shown_root(self, conversation_id: int) -> int | None:
        return self._db.execute("SELECT shown_root FROM conversations WHERE id = ?",
                                (conversation_id,)).fetchone()[0]

    def _show(self, conversation_id: int, nodes: list[Node], message_id: int) -> None:
        """Called in a transaction: every ancestor of `message_id` shows the child on its
        way, so the shown branch runs through it."""
        parents = {n.id: n.parent for n in nodes}
        current, seen = message_id, set()
        while parents[current] is not None and current not in seen:
            seen.add(current)
            self._db.execute("UPDATE messages SET shown_child = ? WHERE id = ?",
                             (current, parents[current]))
            current = parents[current]
        self._db.execute("UPDATE conversations SET shown_root = ? WHERE id = ?",
                         (current, conversation_id))

    def extend_message(self, user: str, conversation_id: int, message_id: int, text: str,
                       completion_tokens: int, finish_reason: str | None, stopped: bool) -> None:
        """Append a continuation to a reply that was cut at the token limit."""
        with self._lock:
            self._require_owner(user, conversation_id)
            self._db.execute(
                "UPDATE messages SET content = content || ?, completion_tokens ="
                " COALESCE(completion_tokens, 0) + ?, finish_reason = ?, stopped = ?"
                " WHERE id = ? AND conversation_id = ?",
                (text, completion_tokens, finish_reason, int(stopped), message_id,
                 conversation_id))

    def import_conversation(self, user: str, title: str, model: str, system_prompt: str,
                            params: dict, messages: Sequence[StoredMessage],
                            shown: int | None = None) -> int:
        """All or nothing: a failure part-way leaves no conversation behind. `messages`
        carry the file's ids and parents (TreeError for an orphan or a cycle); `shown`,
        a file id, is the message whose branch is shown (else the newest message's).
        Messages without ids are one branch, in their order."""
        if any(m.id is None for m in messages):
            for number, message in enumerate(messages, start=1):
                message.id, message.parent_id = number, number - 1 or None
        check_tree([Node(m.id, m.parent_id) for m in messages], MAX_MESSAGES)
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._db.execute(
                    "INSERT INTO conversations (user, title, model, system_prompt, params,"
                    " created, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (user, title, model, system_prompt, json.dumps(params), now, now))
                conversation_id = int(cursor.lastrowid)
                local: dict[int | None, int | None] = {None: None}
                for message in sorted(messages, key=lambda m: m.id):
                    local[message.id] = self._insert_message(conversation_id, message)
                self._db.executemany("UPDATE messages SET parent_id = ? WHERE id = ?",
                                     [(local[m.parent_id], local[m.id]) for m in messages])
                if messages:
                    last = local[shown if shown in local and shown is not None
                                 else max(m.id for m in messages)]
                    self._show(conversation_id, self._nodes(conversation_id), last)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return conversation_id

    # -- presets -------------------------------------------------------------------------
    def presets(self, user: str) -> dict[str, str]:
        with self._lock:
            rows = self._db.execute("SELECT name, prompt FROM presets WHERE user = ?"
                                    " ORDER BY name", (user,)).fetchall()
        return dict(rows)

    def save_preset(self, user: str, name: str, prompt: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO presets (user, name, prompt) VALUES (?, ?, ?)"
                " ON CONFLICT (user, name) DO UPDATE SET prompt = excluded.prompt",
                (user, name.strip(), prompt))


    # -- preferences ---------------------------------------------------------------------
    def preference(self, user: str, name: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM preferences WHERE user = ? AND name = ?",
                                   (user, name)).fetchone()
        return row[0] if row else None

    def set_preference(self, user: str, name: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO preferences (user, name, value) VALUES (?, ?, ?)"
                " ON CONFLICT (user, name) DO UPDATE SET value = excluded.value",
                (user, name, value))


def _message(row: tuple) -> StoredMessage:
    values = dict(zip(_MESSAGE_COLUMNS, row))
    values["params"] = json.loads(values["params"]) if values["params"] else None
    values["stopped"] = bool(values["stopped"])
    values["superseded"] = bool(values["superseded"])
    return StoredMessage(**values)
