"""The one SQLite file's schema, as migrations: each step moves it one version up.

Every room that keeps tables in this file (conversations, attachments, votes, evaluation
runs) has its tables created here, so one `PRAGMA user_version` says where a file stands.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from chatcore.conversations.tree import FlatMessage, tree_from_flat
from chatcore.documents.passages import schema as passage_schema


def _branches(db: sqlite3.Connection) -> None:
    """Messages get a parent and remember their shown child: each flat conversation becomes
    the tree it was (chatcore/conversations/tree.py), no row added or changed in its text."""
    for statement in (
            "ALTER TABLE messages ADD COLUMN parent_id INTEGER",
            "ALTER TABLE messages ADD COLUMN shown_child INTEGER",
            "ALTER TABLE conversations ADD COLUMN shown_root INTEGER",
            "CREATE INDEX messages_by_parent ON messages (conversation_id, parent_id)"):
        db.execute(statement)
    conversations = [row[0] for row in db.execute("SELECT id FROM conversations")]
    for conversation_id in conversations:
        flat = [FlatMessage(i, role, bool(superseded)) for i, role, superseded in db.execute(
            "SELECT id, role, superseded FROM messages WHERE conversation_id = ? ORDER BY id",
            (conversation_id,))]
        nodes, root = tree_from_flat(flat)
        db.executemany("UPDATE messages SET parent_id = ?, shown_child = ? WHERE id = ?",
                       [(n.parent, n.shown_child, n.id) for n in nodes])
        db.execute("UPDATE conversations SET shown_root = ? WHERE id = ?",
                   (root, conversation_id))

# Each step moves the schema one version up; PRAGMA user_version says where a file stands.
MIGRATIONS: Sequence[str | tuple[str, ...] | Callable[[sqlite3.Connection], None]] = (
    """
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL DEFAULT '',
        title TEXT NOT NULL,
        model TEXT NOT NULL,
        system_prompt TEXT NOT NULL DEFAULT '',
        params TEXT NOT NULL DEFAULT '{}',
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE INDEX conversations_by_user ON conversations (user, updated);
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content TEXT NOT NULL,
        model TEXT,
        params TEXT,
        time_to_first_token REAL,
        tokens_per_second REAL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        finish_reason TEXT,
        stopped INTEGER NOT NULL DEFAULT 0,
        superseded INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL
    );
    CREATE INDEX messages_by_conversation ON messages (conversation_id, id);
    """,
    """
    CREATE TABLE presets (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL DEFAULT '',
        name TEXT NOT NULL,
        prompt TEXT NOT NULL,
        UNIQUE (user, name)
    );
    """,
    """
    CREATE TABLE votes (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        prompt TEXT NOT NULL,
        system_prompt TEXT NOT NULL DEFAULT '',
        outcome TEXT NOT NULL,
        blind INTEGER NOT NULL DEFAULT 0,
        panes TEXT NOT NULL
    );
    CREATE INDEX votes_by_user ON votes (user, id);
    """,
    """
    CREATE TABLE prompt_sets (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL DEFAULT '',
        name TEXT NOT NULL,
        prompts TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        UNIQUE (user, name)
    );
    CREATE TABLE eval_runs (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL DEFAULT '',
        set_name TEXT NOT NULL,
        prompts TEXT NOT NULL,
        candidates TEXT NOT NULL,
        system_prompt TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,
        note TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE INDEX eval_runs_by_user ON eval_runs (user, id);
    CREATE TABLE eval_replies (
        run_id INTEGER NOT NULL REFERENCES eval_runs (id) ON DELETE CASCADE,
        prompt INTEGER NOT NULL,
        candidate INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed')),
        content TEXT NOT NULL DEFAULT '',
        time_to_first_token REAL,
        tokens_per_second REAL,
        completion_tokens INTEGER,
        finish_reason TEXT,
        error TEXT NOT NULL DEFAULT '',
        attempts INTEGER NOT NULL DEFAULT 0,
        started REAL,
        finished REAL,
        PRIMARY KEY (run_id, prompt, candidate)
    );
    CREATE TABLE eval_votes (
        run_id INTEGER NOT NULL REFERENCES eval_runs (id) ON DELETE CASCADE,
        prompt INTEGER NOT NULL,
        a INTEGER NOT NULL,
        b INTEGER NOT NULL,
        judge TEXT NOT NULL DEFAULT '',
        outcome TEXT NOT NULL CHECK (outcome IN ('a', 'b', 'tie', 'bad')),
        shown_first INTEGER NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (run_id, prompt, a, b, judge)
    );
    """,
    """
    ALTER TABLE messages ADD COLUMN thought TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN thought_seconds REAL;
    ALTER TABLE messages ADD COLUMN thought_tokens INTEGER;
    """,
    # Attachments, their passages and the messages in FTS5 (BM25 retrieval and search).
    # Statements one by one: a trigger's body holds semicolons.
    (
        """CREATE TABLE attachments (
            id INTEGER PRIMARY KEY,
            user TEXT NOT NULL DEFAULT '',
            message_id INTEGER REFERENCES messages (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            page_count INTEGER,
            chars INTEGER NOT NULL,
            pages TEXT NOT NULL,
            created REAL NOT NULL
        )""",
        "CREATE INDEX attachments_by_message ON attachments (message_id)",
        passage_schema("passages"),
        "CREATE TRIGGER attachments_gone AFTER DELETE ON attachments BEGIN"
        " DELETE FROM passages WHERE attachment = old.id; END",
        "ALTER TABLE messages ADD COLUMN sources TEXT NOT NULL DEFAULT ''",
        "CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages',"
        " content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
        "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN"
        " INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content); END",
        "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN"
        " INSERT INTO messages_fts (messages_fts, rowid, content)"
        " VALUES ('delete', old.id, old.content); END",
        "CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN"
        " INSERT INTO messages_fts (messages_fts, rowid, content)"
        " VALUES ('delete', old.id, old.content);"
        " INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content); END",
        "INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')",
    ),
    # A person's choices about the app itself (the page's language), per user.
    """
    CREATE TABLE preferences (
        user TEXT NOT NULL DEFAULT '',
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (user, name)
    );
    """,
    # How long engines took per token, summed per model, engine and device (chatcore/costs).
    """
    CREATE TABLE reply_speeds (
        model TEXT NOT NULL,
        engine TEXT NOT NULL,
        device TEXT NOT NULL,
        replies INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        prompt_seconds REAL NOT NULL,
        output_tokens INTEGER NOT NULL,
        decode_seconds REAL NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (model, engine, device)
    );
    """,
    # Branches: every regenerated reply and edited question kept as a sibling.
    _branches,
    # Votes cast in the chat on a reply's versions from two models (chatcore/compare/
    # preferences.py): where a vote came from, and which question and replies it judged.
    # Votes from before are Compare's: they keep every row as it was.
    (
        "ALTER TABLE votes ADD COLUMN source TEXT NOT NULL DEFAULT 'compare'",
        "ALTER TABLE votes ADD COLUMN conversation_id INTEGER",
        "ALTER TABLE votes ADD COLUMN question_id INTEGER",
        "ALTER TABLE votes ADD COLUMN message_ids TEXT NOT NULL DEFAULT '[]'",
        "CREATE INDEX votes_by_question ON votes (user, conversation_id, question_id)",
    ),
)
