"""Branches: every regenerated reply and edited question kept as a sibling, a migration that
turns flat conversations into the trees they were, export and import of the tree, and bad
trees refused. The tree logic needs no model: a scripted backend answers (the store is the
real SQLite one); the Inspector's test renders with SmolLM2 (slow), and the SIGKILL test in
test_branches_app.py runs SmolLM2 on the app."""
from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from backends.sampling import SamplingSettings
from chatcore.conversations.export import ImportRejected, imported_messages, parse_import, \
    to_json
from chatcore.conversations.schema import MIGRATIONS
from chatcore.conversations.service import Asking, ConversationService
from chatcore.conversations.store import DB_NAME, NotFound, Store, StoredMessage
from chatcore.conversations.tree import MAX_SIBLINGS, Node, TreeError, shown_path
from chatcore.generation.manager import ModelManager
from tests.conftest import SHIPPED_MODELS
from tests.fakes import one_model_manager, ScriptedBackend


@pytest.fixture()
def service(tmp_path):
    backend = ScriptedBackend("first")
    manager = one_model_manager(backend, context_length=256)
    store = Store(tmp_path)
    service = ConversationService(store, manager)
    service.backend = backend
    yield service
    store.close()


def asking(conversation_id=None, user="alice") -> Asking:
    return Asking(user, conversation_id, "fake", "", SamplingSettings(temperature=0.0))


def answer(service, plan, text: str) -> None:
    service.backend.words = text.split()
    with service.reply(plan, threading.Event()) as replies:
        for _ in replies:
            pass


def shown(service, cid, user="alice") -> list[tuple[str, str, str]]:
    """The branch shown: role, text and "index/count" of each message."""
    conversation = service.store.get_conversation(user, cid)
    return [(m.role, m.content, f"{conversation.positions[m.id].index}/"
             f"{conversation.positions[m.id].count}") for m in conversation.messages]


def test_regenerate_three_times_and_edit_twice_give_the_expected_tree(service):
    plan = service.send(asking(), "q1")
    answer(service, plan, "a1")
    cid = plan.conversation_id
    for text in ("a1-v2", "a1-v3", "a1-v4"):
        answer(service, service.regenerate(asking(cid)), text)
    answer(service, service.send(asking(cid), "q2"), "b1")
    for text in ("q2-v2", "q2-v3"):
        answer(service, service.send(asking(cid), text, editing=True), f"answer to {text}")
    assert shown(service, cid) == [("user", "q1", "1/1"), ("assistant", "a1-v4", "4/4"),
                                   ("user", "q2-v3", "3/3"),
                                   ("assistant", "answer to q2-v3", "1/1")]
    everything = service.store.get_conversation("alice", cid, include_superseded=True)
    assert len(everything.messages) == 1 + 4 + 3 + 3  # nothing replaced, nothing lost
    a1 = service.store.get_conversation("alice", cid).messages[1]
    service.flip("alice", cid, a1.id, 1)  # back to the first reply: its branch had no q2
    assert shown(service, cid) == [("user", "q1", "1/1"), ("assistant", "a1", "1/4")]
    service.flip("alice", cid, a1.id, 4)  # the later messages follow the branch
    q2 = service.store.get_conversation("alice", cid).messages[2]
    service.flip("alice", cid, q2.id, 1)
    assert shown(service, cid)[2:] == [("user", "q2", "1/3"), ("assistant", "b1", "1/1")]
    service.flip("alice", cid, a1.id, 2)
    service.flip("alice", cid, a1.id, 4)  # each branch remembers what it showed last
    assert shown(service, cid)[2:] == [("user", "q2", "1/3"), ("assistant", "b1", "1/1")]
    # Continue extends the reply shown, and a new question follows the branch shown.
    answer(service, service.send(asking(cid), "q3"), "c1")
    assert [m[1] for m in shown(service, cid)] == ["q1", "a1-v4", "q2", "b1", "q3", "c1"]


def test_a_regenerated_reply_is_asked_with_the_branch_up_to_its_question(service):
    plan = service.send(asking(), "q1")
    answer(service, plan, "a1")
    again = service.regenerate(asking(plan.conversation_id))
    assert [m.content for m in again.request.messages] == ["q1"]
    assert again.parent_id == service.messages("alice", plan.conversation_id)[0].id


def test_search_finds_text_on_any_branch(service):
    plan = service.send(asking(), "q1")
    answer(service, plan, "zebra stripes")
    answer(service, service.regenerate(asking(plan.conversation_id)), "plain answer")
    assert [c.id for c in service.store.list_conversations("alice", "zebra")] == \
        [plan.conversation_id]


def test_an_earlier_question_edited_gets_a_branch_of_its_own(service):
    """Editing question 1 of two (or the very first, a root): a new version beside it, on a
    branch with only its own answer; the old branch, follow-up included, stays reachable."""
    plan = service.send(asking(), "q1")
    cid = plan.conversation_id
    answer(service, plan, "a1")
    answer(service, service.send(asking(cid), "q2"), "a2")
    q1 = service.store.get_conversation("alice", cid).messages[0]
    answer(service, service.send(asking(cid), "q1-v2", editing=q1.id), "a1 to v2")
    assert shown(service, cid) == [("user", "q1-v2", "2/2"),
                                   ("assistant", "a1 to v2", "1/1")]
    service.flip("alice", cid, q1.id, 1)
    assert [text for _, text, _ in shown(service, cid)] == ["q1", "a1", "q2", "a2"]


def test_editing_a_message_that_is_no_question_shown_is_refused_and_stores_nothing(service):
    plan = service.send(asking(), "q1")
    cid = plan.conversation_id
    answer(service, plan, "a1")
    reply = service.store.get_conversation("alice", cid).messages[1]
    before = service.store.get_conversation("alice", cid, include_superseded=True).messages
    for wrong in (reply.id, 10_000):
        with pytest.raises(TreeError, match=f"message {wrong} is not a question shown"):
            service.send(asking(cid), "changed", editing=wrong)
    assert service.store.get_conversation("alice", cid,
                                          include_superseded=True).messages == before


def test_export_then_import_round_trips_the_tree(service):
    plan = service.send(asking(), "q1")
    cid = plan.conversation_id
    answer(service, plan, "a1")
    answer(service, service.regenerate(asking(cid)), "a1-v2")
    answer(service, service.send(asking(cid), "q2"), "b1")
    answer(service, service.send(asking(cid), "q2-v2", editing=True), "b2")
    q2 = service.store.get_conversation("alice", cid).messages[2]
    service.flip("alice", cid, q2.id, 1)
    whole = service.store.get_conversation("alice", cid, include_superseded=True)
    document = parse_import(to_json(whole).encode(), "tree.json")
    copy = service.store.import_conversation("alice", document.title, document.model,
                                             document.system_prompt, document.params,
                                             imported_messages(document), document.shown)
    assert shown(service, copy) == shown(service, cid)
    for conversation in (cid, copy):  # the other branches came along
        a1 = service.store.get_conversation("alice", conversation).messages[1]
        service.flip("alice", conversation, a1.id, 1)
    assert shown(service, copy) == shown(service, cid) == [("user", "q1", "1/1"),
                                                           ("assistant", "a1", "1/2")]
    again = service.store.get_conversation("alice", copy, include_superseded=True)
    assert sorted(m.content for m in again.messages) == sorted(m.content for m in whole.messages)


def test_the_old_flat_format_still_imports_as_the_tree_it_was(service):
    flat = {"format": "local-chat/conversation", "version": 1, "title": "old", "model": "m",
            "messages": [{"role": "user", "content": "q"},
                         {"role": "assistant", "content": "old answer", "superseded": True},
                         {"role": "assistant", "content": "new answer"}]}
    document = parse_import(json.dumps(flat).encode(), "old.json")
    cid = service.store.import_conversation("alice", document.title, document.model, "", {},
                                            imported_messages(document), document.shown)
    assert shown(service, cid) == [("user", "q", "1/1"), ("assistant", "new answer", "2/2")]


def _flat_database(data) -> list[tuple]:
    """A database as the app stored it before branches: two flat conversations, one with a
    regenerated reply, an edited question and a regenerated reply under the edit."""
    data.mkdir()
    db = sqlite3.connect(data / DB_NAME)
    upto = next(i for i, step in enumerate(MIGRATIONS) if callable(step))  # the branches step
    for script in MIGRATIONS[:upto]:
        for statement in script if isinstance(script, tuple) else \
                filter(str.strip, script.split(";")):
            db.execute(statement)
    db.execute(f"PRAGMA user_version = {upto}")
    rows = [(1, "user", "q1", 0), (1, "assistant", "a1", 1), (1, "assistant", "a1-v2", 0),
            (1, "user", "q2", 1), (1, "assistant", "b1", 1), (1, "assistant", "b1-v2", 1),
            (1, "user", "q2-v2", 0), (1, "assistant", "b2", 0),
            (2, "user", "hello", 0), (2, "assistant", "hi", 0)]
    for cid in (1, 2):
        db.execute("INSERT INTO conversations (id, user, title, model, created, updated)"
                   " VALUES (?, '', 't', 'm', 1, 1)", (cid,))
    db.executemany("INSERT INTO messages (conversation_id, role, content, superseded, created)"
                   " VALUES (?, ?, ?, ?, 1)", rows)
    db.commit()
    before = db.execute("SELECT id, conversation_id, role, content FROM messages"
                        " ORDER BY id").fetchall()
    db.close()
    return before


def test_migration_turns_flat_conversations_into_the_trees_they_were(tmp_path):
    before = _flat_database(tmp_path / "data")
    store = Store(tmp_path / "data")
    try:
        after = sqlite3.connect(store.path).execute(
            "SELECT id, conversation_id, role, content FROM messages ORDER BY id").fetchall()
        assert after == before  # row counts and texts unchanged
        one = store.get_conversation("", 1)
        assert [(m.content, f"{one.positions[m.id].index}/{one.positions[m.id].count}")
                for m in one.messages] == [("q1", "1/1"), ("a1-v2", "2/2"), ("q2-v2", "2/2"),
                                           ("b2", "1/1")]
        parents = {m.content: m.parent_id for m in
                   store.get_conversation("", 1, include_superseded=True).messages}
        ids = {content: i for i, _, _, content in before}
        assert parents == {"q1": None, "a1": ids["q1"], "a1-v2": ids["q1"], "q2": ids["a1-v2"],
                           "b1": ids["q2"], "b1-v2": ids["q2"], "q2-v2": ids["a1-v2"],
                           "b2": ids["q2-v2"]}
        assert [m.content for m in store.get_conversation("", 2).messages] == ["hello", "hi"]
        assert store.integrity_check() == "ok"
    finally:
        store.close()


def test_bad_branch_requests_are_refused_naming_the_message_and_change_nothing(service):
    plan = service.send(asking(), "q1")
    cid = plan.conversation_id
    answer(service, plan, "a1")
    other = service.send(asking(), "elsewhere")
    reply = service.messages("alice", cid)[1]
    before = shown(service, cid)
    with pytest.raises(TreeError, match=f"message {reply.id} has 1 versions: there is no "
                                        f"version 2"):
        service.flip("alice", cid, reply.id, 2)
    with pytest.raises(TreeError, match="is not in conversation"):
        service.store.add_message("alice", cid, StoredMessage("user", "x"),
                                  service.messages("alice", other.conversation_id)[0].id)
    with pytest.raises(NotFound):  # another user's conversation is as good as absent
        service.store.add_message("bob", cid, StoredMessage("user", "x"), reply.id)
    with pytest.raises(NotFound):
        service.flip("bob", cid, reply.id, 1)
    assert shown(service, cid) == before
    assert len(service.store.get_conversation("alice", cid, include_superseded=True)
               .messages) == 2


def test_the_33rd_version_is_refused_with_a_message_saying_so(service):
    plan = service.send(asking(), "q1")
    cid = plan.conversation_id
    question = service.messages("alice", cid)[0].id
    for number in range(MAX_SIBLINGS):
        service.store.add_message("alice", cid, StoredMessage("assistant", f"v{number}"),
                                  question)
    with pytest.raises(TreeError, match=f"already {MAX_SIBLINGS}"):
        service.regenerate(asking(cid))  # before any reply is generated
    with pytest.raises(TreeError, match=f"message {question}: already {MAX_SIBLINGS}"):
        service.store.add_message("alice", cid, StoredMessage("assistant", "one more"),
                                  question)
    assert shown(service, cid)[-1] == ("assistant", f"v{MAX_SIBLINGS - 1}", "32/32")


def _tree_file(messages: list[dict]) -> bytes:
    return json.dumps({"format": "local-chat/conversation", "version": 2, "title": "t",
                       "model": "m", "messages": messages}).encode()


@pytest.mark.parametrize("messages,reason", [
    ([{"id": 1, "role": "user", "content": "q"},
      {"id": 2, "parent_id": 7, "role": "assistant", "content": "a"}],
     "tree.json: message 2: its parent 7 is not in the conversation"),
    ([{"id": 1, "parent_id": 2, "role": "user", "content": "q"},
      {"id": 2, "parent_id": 1, "role": "assistant", "content": "a"}],
     "tree.json: message 1: its parents lead back to itself"),
    ([{"role": "user", "content": "q"}], "field 'messages.0.id'"),
])
def test_an_import_whose_tree_has_an_orphan_or_a_cycle_is_refused(service, messages, reason):
    with pytest.raises(ImportRejected, match=reason):
        parse_import(_tree_file(messages), "tree.json")
    rows = [StoredMessage(m["role"], m["content"], id=m.get("id"),
                          parent_id=m.get("parent_id")) for m in messages]
    if all(row.id is not None for row in rows):  # the store refuses one too, whoever asks
        with pytest.raises(TreeError):
            service.store.import_conversation("alice", "t", "m", "", {}, rows)
    assert service.store.list_conversations("alice") == []


def test_a_shown_branch_is_read_whatever_the_remembered_children_say():
    nodes = [Node(1, None, 99), Node(2, 1), Node(3, 1)]  # 99: gone (never stored)
    assert shown_path(nodes, None) == [1, 3]
    assert shown_path([Node(1, None, 2), Node(2, 1, 3), Node(3, 1)], 1) == [1, 2]


def test_the_version_rows_are_buttons_with_labels_in_the_pages_language(service):
    from chatcore.i18n import load_texts
    from chatui.branch_controls import branch_rows

    plan = service.send(asking(), "q1")
    answer(service, plan, "a1")
    for text in ("a2", "a3"):
        answer(service, service.regenerate(asking(plan.conversation_id)), text)
    reply = service.messages("alice", plan.conversation_id)[1]
    conversation = service.shown("alice", plan.conversation_id)
    rows = branch_rows(conversation, texts=load_texts("en"))
    assert rows.count('class="branch-row"') == 1  # the question has one version: no row
    assert 'aria-label="Reply 1: version 3 of 3"' in rows
    assert (f'aria-label="Previous version of Reply 1" data-message="{reply.id}" '
            f'data-index="2">‹') in rows
    assert f'data-message="{reply.id}" data-index="4" disabled>›' in rows
    filipino = branch_rows(conversation, texts=load_texts("fil"))
    assert 'aria-label="Naunang bersiyon ng Sagot 1"' in filipino
    assert branch_rows(None, texts=load_texts("en")) == ""


def test_a_reopened_store_shows_the_branch_last_viewed(service, tmp_path):
    plan = service.send(asking(), "q1")
    cid = plan.conversation_id
    answer(service, plan, "a1")
    answer(service, service.regenerate(asking(cid)), "a2")
    service.flip("alice", cid, service.messages("alice", cid)[1].id, 1)
    service.store.close()
    reopened = Store(tmp_path)  # what the sidebar opens after a restart
    try:
        assert [m.content for m in reopened.get_conversation("alice", cid).messages] == \
            ["q1", "a1"]
    finally:
        reopened.close()


def test_a_branch_deeper_than_the_message_limit_is_refused():
    from chatcore.conversations.tree import check_child, check_tree

    chain = [Node(1, None), Node(2, 1), Node(3, 2)]
    check_child(chain, 2, 7, max_depth=3)  # a sibling of 3 at depth 3: fine
    with pytest.raises(TreeError, match="message 3: a branch keeps at most 3 messages"):
        check_child(chain, 3, 7, max_depth=3)
    with pytest.raises(TreeError, match="message 3: a branch deeper than 2"):
        check_tree(chain, max_depth=2)


@pytest.mark.slow  # loads SmolLM2
def test_the_inspector_shows_the_prompt_of_the_branch_shown(smollm2_path, tmp_path):
    """SmolLM2 renders the prompt; which messages it is given is the branch shown."""
    from types import SimpleNamespace

    from backends.base import Message
    from chatcore.generation.factory import make_backend
    from chatcore.generation.registry import load_registry
    from chatcore.i18n import english
    from chatui.chat_handlers import ChatHandlers

    manager = ModelManager(load_registry(SHIPPED_MODELS), make_backend)
    store = Store(tmp_path)
    chat = ChatHandlers(manager, store, texts=english())
    request = SimpleNamespace(session_hash="s", username="")
    settings = SamplingSettings(temperature=0.0, max_new_tokens=4)
    try:
        *_, last = chat.send("Name a colour.", None, False, "smollm2-135m", "", settings,
                             request=request)
        cid = last[2]
        list(chat.send("Name a fruit.", cid, True, "smollm2-135m", "", settings,
                       request=request))  # an edited first question: a second version
        first = store.get_conversation("", cid).messages[0]
        chat.conversations.flip("", cid, first.id, 1)
        prompt, _ = chat.inspect(cid, request)
        shown = store.get_conversation("", cid).messages
        assert [m.content for m in shown][0] == "Name a colour."
        assert prompt == manager.load("smollm2-135m").render_prompt(
            [Message("user", "Name a colour.")])
        assert "fruit" not in prompt
    finally:
        manager.unload_all()
        store.close()
