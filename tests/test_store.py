"""The SQLite store, export and import, and fitting a conversation into the context."""
from __future__ import annotations

import json
import sqlite3

import pytest

from backends.base import Message
from chatcore.generation.context import ContextOverflow, fit_context, title_from
from chatcore.conversations.store import DB_NAME, MIGRATIONS, NotFound, Store, StoredMessage
from chatcore.conversations.export import (
    MAX_IMPORT_BYTES,
    ImportRejected,
    imported_messages,
    parse_import,
    to_json,
    to_markdown,
)


@pytest.fixture()
def store(tmp_path):
    opened = Store(tmp_path / "data")
    yield opened
    opened.close()


def test_migration_from_an_empty_directory(tmp_path):
    store = Store(tmp_path / "new" / "dir")
    assert store.schema_version == len(MIGRATIONS)
    assert store.path == tmp_path / "new" / "dir" / DB_NAME
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert store.integrity_check() == "ok"
    store.close()


def test_migration_from_an_older_schema_keeps_the_data(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    old = sqlite3.connect(data / DB_NAME)
    old.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    old.execute("INSERT INTO conversations (user, title, model, created, updated)"
                " VALUES ('', 'kept', 'm', 1, 1)")
    old.commit()
    old.close()
    store = Store(data)
    assert store.schema_version == len(MIGRATIONS)
    assert [c.title for c in store.list_conversations("")] == ["kept"]
    store.save_preset("", "mine", "Be kind.")  # the table the migration added
    assert store.presets("") == {"mine": "Be kind."}
    store.close()


def test_round_trip_of_conversations_and_messages(store):
    cid = store.create_conversation("", "Capitals", "smollm2-135m", "Be brief.",
                                    {"temperature": 0.0, "max_new_tokens": 64})
    store.add_message("", cid, StoredMessage("user", "Name the capital of France."))
    reply = StoredMessage("assistant", "Paris.", model="smollm2-135m", params={"seed": 3},
                          time_to_first_token=0.1, tokens_per_second=90.5, prompt_tokens=36,
                          completion_tokens=3, finish_reason="cancelled", stopped=True)
    store.add_message("", cid, reply)
    got = store.get_conversation("", cid)
    assert (got.title, got.model, got.system_prompt) == ("Capitals", "smollm2-135m", "Be brief.")
    assert got.params == {"temperature": 0.0, "max_new_tokens": 64}
    assert [m.role for m in got.messages] == ["user", "assistant"]
    saved = got.messages[1]
    assert (saved.content, saved.params, saved.time_to_first_token, saved.tokens_per_second,
            saved.prompt_tokens, saved.completion_tokens, saved.stopped) == \
        ("Paris.", {"seed": 3}, 0.1, 90.5, 36, 3, True)
    store.update_settings("", cid, "other", "New prompt", {"temperature": 1.0})
    store.rename("", cid, "Renamed")
    again = store.get_conversation("", cid)
    assert (again.title, again.model, again.system_prompt, again.params) == \
        ("Renamed", "other", "New prompt", {"temperature": 1.0})


def test_list_is_newest_first_and_search_looks_at_titles_and_text(store):
    first = store.create_conversation("", "Bread", "m")
    second = store.create_conversation("", "Dragons", "m")
    store.add_message("", first, StoredMessage("user", "How do I bake sourdough?"))
    assert [c.id for c in store.list_conversations("")] == [first, second]
    assert [c.title for c in store.list_conversations("", "SOURDOUGH")] == ["Bread"]
    assert [c.title for c in store.list_conversations("", "drag")] == ["Dragons"]
    assert store.list_conversations("", "100%") == []


def test_a_regenerated_reply_is_kept_as_an_earlier_sibling(store):
    cid = store.create_conversation("", "t", "m")
    question = store.add_message("", cid, StoredMessage("user", "q"))
    store.add_message("", cid, StoredMessage("assistant", "first answer"))
    store.add_message("", cid, StoredMessage("assistant", "second answer"), question)
    assert [m.content for m in store.get_conversation("", cid).messages] == ["q", "second answer"]
    everything = store.get_conversation("", cid, include_superseded=True).messages
    assert [(m.content, m.superseded) for m in everything] == [
        ("q", False), ("first answer", True), ("second answer", False)]


def test_users_never_see_each_other(store):
    alice = store.create_conversation("alice", "secret plans", "m")
    store.add_message("alice", alice, StoredMessage("user", "hello"))
    assert store.list_conversations("bob") == []
    assert store.list_conversations("bob", "secret") == []
    for attempt in (lambda: store.get_conversation("bob", alice),
                    lambda: store.rename("bob", alice, "mine"),
                    lambda: store.delete("bob", alice),
                    lambda: store.add_message("bob", alice, StoredMessage("user", "x"))):
        with pytest.raises(NotFound):
            attempt()
    assert store.get_conversation("alice", alice).title == "secret plans"


def test_delete_removes_the_messages_too(store):
    cid = store.create_conversation("", "t", "m")
    store.add_message("", cid, StoredMessage("user", "q"))
    store.delete("", cid)
    with pytest.raises(NotFound):
        store.get_conversation("", cid)
    count = sqlite3.connect(store.path).execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    assert count == 0


def test_export_to_markdown_and_json_and_import_back(store):
    cid = store.create_conversation("", "Capitals", "smollm2-135m", "Be brief.", {"top_k": 40})
    store.add_message("", cid, StoredMessage("user", "Name the capital of France."))
    store.add_message("", cid, StoredMessage("assistant", "Paris.", model="smollm2-135m",
                                             completion_tokens=2, finish_reason="stop"))
    conversation = store.get_conversation("", cid, include_superseded=True)
    markdown = to_markdown(conversation)
    assert markdown.startswith("# Capitals")
    assert "**You**\n\nName the capital of France." in markdown
    assert "**Assistant (smollm2-135m)**\n\nParis." in markdown
    document = parse_import(to_json(conversation).encode(), "capitals.json")
    new_id = store.import_conversation("", document.title, document.model,
                                       document.system_prompt, document.params,
                                       imported_messages(document))
    copy = store.get_conversation("", new_id)
    assert new_id != cid
    assert [(m.role, m.content) for m in copy.messages] == \
        [(m.role, m.content) for m in conversation.messages]
    assert copy.system_prompt == "Be brief." and copy.params == {"top_k": 40}


BAD_IMPORTS = [
    (b"not json at all", "capitals.json: not a JSON file"),
    (b"\xff\xfe\x00", "capitals.json: not a JSON file"),
    (json.dumps({"format": "something-else", "version": 1}).encode(), "field 'format'"),
    (json.dumps({"format": "local-chat/conversation", "version": 1, "title": "t", "model": "m",
                 "messages": [{"role": "system", "content": "x"}]}).encode(),
     "field 'messages.0.role'"),
    (json.dumps({"format": "local-chat/conversation", "version": 1, "title": "t", "model": "m",
                 "messages": [], "extra": 1}).encode(), "field 'extra'"),
    (b" " * (MAX_IMPORT_BYTES + 1), "over the import limit"),
]


@pytest.mark.parametrize("data,reason", BAD_IMPORTS)
def test_malformed_or_oversized_import_is_refused_and_creates_nothing(store, data, reason):
    with pytest.raises(ImportRejected, match=reason):
        parse_import(data, "capitals.json")
    assert store.list_conversations("") == []


def test_a_failing_import_leaves_no_half_conversation(store):
    rows = [StoredMessage("user", "ok"), StoredMessage("system", "breaks the role check")]
    with pytest.raises(sqlite3.IntegrityError):
        store.import_conversation("", "t", "m", "", {}, rows)
    assert store.list_conversations("") == []
    assert sqlite3.connect(store.path).execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0


def test_titles_come_from_the_first_message():
    assert title_from("Name the capital of France.") == "Name the capital of France."
    assert title_from("one two three four five six seven eight nine ten") == \
        "one two three four five six seven eight…"
    assert title_from("   ") == "New chat"
    assert len(title_from("x" * 500)) <= 60


# -- the context window, counted with SmolLM2's own tokenizer ------------------------------------
@pytest.mark.slow
def test_truncation_keeps_the_system_prompt_and_counts_what_it_dropped(smollm2):
    system = Message("system", "You answer about geography.")
    history = []
    for n in range(12):
        history += [Message("user", f"Question {n}: " + "tell me about rivers " * 15),
                    Message("assistant", f"Answer {n}: " + "rivers flow to the sea " * 15)]
    messages = [system, *history, Message("user", "Name the capital of France.")]
    assert smollm2.count_tokens(messages) > 1024
    kept, dropped = fit_context(messages, smollm2.count_tokens, context_length=1024,
                                max_new_tokens=256)
    assert kept[0] == system
    assert kept[-1].content == "Name the capital of France."
    assert kept[1].role == "user"
    assert dropped == len(messages) - len(kept) and dropped >= 2
    assert smollm2.count_tokens(kept) <= 1024 - 256
    assert smollm2.count_tokens([system, *messages[dropped - 1:]]) > 1024 - 256


@pytest.mark.slow
def test_a_single_message_too_long_for_the_context_is_a_clear_error(smollm2):
    messages = [Message("system", "Be brief."), Message("user", "word " * 1500)]
    with pytest.raises(ContextOverflow, match=r"this message needs \d+ tokens with the system "
                                              r"prompt, but the model's context holds 1024 and "
                                              r"256 are kept for the reply"):
        fit_context(messages, smollm2.count_tokens, context_length=1024, max_new_tokens=256)
