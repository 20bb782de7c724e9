""""Answer with…" another model and preferring one of a reply's versions (issue 32, parts 2
and 3): the sibling from another model, its footer and row naming the model, the open vote
in Compare's VoteStore (tagged, replaced by a second one), the leaderboard's counts with and
without open votes, the migration that keeps old votes, and the refusals (another user,
another conversation, a question, one model only) that store nothing. Service and page
logic: scripted backends answer (never proof an engine works); the store is the real SQLite
one. The browser test with SmolLM2 is tests/test_browser_answer_with.py."""
from __future__ import annotations

import json
import sqlite3
import threading
from types import SimpleNamespace

import pytest

from backends.sampling import SamplingSettings
from chatcore.compare.preferences import Preference, PreferenceRefused, Preferences
from chatcore.compare.votes import Vote, VotedPane, VoteStore
from chatcore.conversations.running import RunningReplies
from chatcore.conversations.schema import MIGRATIONS
from chatcore.conversations.service import Asking, ConversationService
from chatcore.conversations.store import DB_NAME, Store
from chatcore.conversations.tree import TreeError
from chatcore.generation.manager import ModelManager, UnknownModel
from chatcore.generation.registry import ModelEntry, ModelRegistry
from chatcore.i18n import english, load_texts
from chatui.answer_controls import AnswerControls
from chatui.branch_controls import BranchControls
from chatui.chat_handlers import ChatHandlers
from chatui.compare_handlers import CompareHandlers
from chatui.exports import ExportFiles
from tests.conftest import SHIPPED_MODELS, until
from tests.fakes import ScriptedBackend

ALICE = SimpleNamespace(session_hash="tab-1", username="alice")
BOB = SimpleNamespace(session_hash="tab-2", username="bob")
LONG = " ".join(f"w{i}" for i in range(400))


@pytest.fixture()
def world(tmp_path):
    backends = {"alpha": ScriptedBackend("alpha says hello"),
                "beta": ScriptedBackend("beta says hi")}
    entries = tuple(ModelEntry(id=i, name=f"{i.title()} Model", backend="llamacpp",
                               path=__file__, context_length=512) for i in backends)
    manager = ModelManager(ModelRegistry(path=SHIPPED_MODELS, entries=entries, broken=()),
                           lambda entry: backends[entry.id])
    store = Store(tmp_path)
    service = ConversationService(store, manager)
    yield SimpleNamespace(backends=backends, manager=manager, store=store, service=service,
                          preferences=Preferences(store), tmp=tmp_path)
    store.close()


def asking(model="alpha", cid=None, user="alice") -> Asking:
    return Asking(user, cid, model, "", SamplingSettings(temperature=0.0))


def run(service, plan) -> None:
    with service.reply(plan, threading.Event()) as replies:
        for _ in replies:
            pass


def two_models(world, user="alice") -> tuple[int, int, int]:
    """A question answered by alpha, then by beta through answer_with: (conversation,
    alpha's reply, beta's reply)."""
    plan = world.service.send(asking(user=user), "Name a colour.")
    run(world.service, plan)
    cid = plan.conversation_id
    first = world.service.messages(user, cid)[-1]
    run(world.service, world.service.answer_with(asking("beta", cid, user), first.id))
    second = world.service.messages(user, cid)[-1]
    return cid, first.id, second.id


def stored_counts(store: Store) -> tuple[int, int]:
    db = sqlite3.connect(store.path)
    try:
        return (db.execute("SELECT COUNT(*) FROM messages").fetchone()[0],
                db.execute("SELECT COUNT(*) FROM votes").fetchone()[0])
    finally:
        db.close()


def test_answer_with_adds_a_sibling_from_the_other_model_and_keeps_the_conversations_model(
        world):
    cid, first, second = two_models(world)
    tree = world.store.get_conversation("alice", cid, include_superseded=True).messages
    question = tree[0]
    replies = {m.id: m for m in tree if m.role == "assistant"}
    assert replies[first].parent_id == replies[second].parent_id == question.id  # siblings
    assert (replies[first].model, replies[second].model) == ("alpha", "beta")
    assert replies[second].content == "beta says hi"
    shown = world.store.get_conversation("alice", cid)
    assert [m.id for m in shown.messages] == [question.id, second]  # the new one is shown
    assert (shown.positions[second].index, shown.positions[second].count) == (2, 2)
    assert shown.model == "alpha"  # the next message goes to the picker's model, as before
    # The conversation continues on the branch shown, under beta's reply.
    run(world.service, world.service.send(asking("alpha", cid), "Another?"))
    assert world.service.messages("alice", cid)[2].parent_id == second


def test_answer_with_refuses_what_is_not_a_reply_shown_of_the_users_conversation(world):
    cid, first, second = two_models(world)
    question = world.service.messages("alice", cid)[0].id
    other = world.service.send(asking(), "Elsewhere.")
    run(world.service, other)
    elsewhere = world.service.messages("alice", other.conversation_id)[-1].id
    before = stored_counts(world.store)
    for user, message, what in (("alice", question, f"message {question}"),
                                ("alice", elsewhere, f"message {elsewhere}"),
                                ("alice", 10_000, "message 10000"),
                                ("bob", second, f"message {second}")):
        with pytest.raises(TreeError, match=what):
            world.service.answer_with(asking("beta", cid, user), message)
    with pytest.raises(UnknownModel):
        world.service.answer_with(asking("gamma", cid), second)
    assert stored_counts(world.store) == before  # nothing stored


def test_an_answer_runs_on_its_own_and_stop_ends_it(world):
    world.backends["beta"].words = LONG.split()
    world.backends["beta"].delay = 0.01
    cid, _, second = two_models(world)
    running = RunningReplies(world.service)
    try:
        started = running.start(world.service.answer_with(asking("beta", cid), second))
        assert until(lambda: started.live is not None and len(started.live.text) > 10)
        assert not running.stop("bob", cid)  # another user can neither find nor stop it
        assert running.stop("alice", cid)
        assert until(lambda: started.finished)
    finally:
        running.close()
    replies = [m for m in world.store.get_conversation("alice", cid, include_superseded=True)
               .messages if m.role == "assistant"]
    assert len(replies) == 3 and replies[-1].stopped and replies[-1].model == "beta"
    assert len(replies[-1].content.split()) < 400


def test_preferring_stores_an_open_chat_vote_and_a_second_replaces_it(world):
    cid, first, second = two_models(world)
    vote = world.preferences.prefer(Preference("alice", cid, second, "prefer"))
    stored = VoteStore(world.store).of("alice")
    assert [v.id for v in stored] == [vote.id]
    [kept] = stored
    assert (kept.blind, kept.source, kept.conversation_id) == (False, "chat", cid)
    assert kept.question_id == world.service.messages("alice", cid)[0].id
    assert kept.message_ids == [second, first]  # the preferred reply first
    assert [p.model for p in kept.panes] == ["beta", "alpha"]
    assert kept.outcome == "A" and kept.prompt == "Name a colour."
    assert [(b.a, b.b, b.outcome) for b in kept.battles()] == [("beta", "alpha", "a")]
    again = world.preferences.prefer(Preference("alice", cid, first, "tie"))
    [replaced] = VoteStore(world.store).of("alice")
    assert replaced.id == again.id and replaced.outcome == "tie"  # one per question
    assert world.preferences.current("alice", cid, second).id == again.id


def test_preferring_is_refused_with_one_model_another_users_or_conversations_message(world):
    cid, first, second = two_models(world)
    single = world.service.send(asking(), "Only alpha here.")
    run(world.service, single)
    run(world.service, world.service.regenerate(asking("alpha", single.conversation_id)))
    alone = world.service.messages("alice", single.conversation_id)[-1].id
    question = world.service.messages("alice", cid)[0].id
    before = stored_counts(world.store)
    for preference, what in (
            (Preference("alice", single.conversation_id, alone, "prefer"),
             f"message {alone}: its versions all come from one model"),
            (Preference("bob", cid, second, "prefer"), f"message {second} is not in"),
            (Preference("alice", single.conversation_id, second, "prefer"),
             f"message {second} is not in"),
            (Preference("alice", cid, question, "prefer"), f"message {question} is a question"),
            (Preference("alice", cid, second, "x" * 5000), f"message {second}: 'x+'")):
        with pytest.raises(PreferenceRefused, match=what) as refused:
            world.preferences.prefer(preference)
        assert "\n" not in str(refused.value) and len(str(refused.value)) < 200
    assert stored_counts(world.store) == before  # nothing stored


def test_the_leaderboard_counts_blind_and_open_votes_and_can_leave_the_open_out(world):
    cid, _, second = two_models(world)
    votes = VoteStore(world.store)
    panes = [VotedPane("A", "alpha", {}, "a"), VotedPane("B", "beta", {}, "b")]
    votes.add("alice", Vote("q", "A", panes, blind=True))  # Compare, blind: alpha wins
    votes.add("alice", Vote("q", "B", panes, blind=False))  # Compare, open: beta wins
    world.preferences.prefer(Preference("alice", cid, second, "prefer"))  # chat: beta
    assert (votes.counts("alice").blind, votes.counts("alice").open) == (1, 2)
    assert [v.source for v in votes.of("alice")] == ["compare", "compare", "chat"]
    assert [v.blind for v in votes.of("alice", include_open=False)] == [True]
    compare = CompareHandlers(world.manager, world.store, ExportFiles(world.tmp / "x"),
                              texts=english())
    rows, line = compare.board(True, ALICE)
    assert line == "Counts 1 blind vote and 2 open votes."
    assert [(row[1], row[5], row[6]) for row in rows] == [("Beta Model", 2, 1),
                                                          ("Alpha Model", 1, 2)]
    rows, line = compare.board(False, ALICE)
    assert line == "Counts 1 blind vote; leaves out 2 open votes."
    assert [(row[1], row[5], row[6]) for row in rows] == [("Alpha Model", 1, 0),
                                                          ("Beta Model", 0, 1)]
    filipino = CompareHandlers(world.manager, world.store, ExportFiles(world.tmp / "y"),
                               texts=load_texts("fil"))
    assert filipino.board(True, ALICE)[1] == "Binibilang ang 1 bulag na boto at 2 bukas na boto."
    assert compare.board(True, BOB)[1] == "Counts 0 blind votes and 0 open votes."


def test_the_votes_migration_keeps_old_votes_as_comparisons(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    db = sqlite3.connect(data / DB_NAME)
    upto = len(MIGRATIONS) - 1  # the step before chat votes
    for script in MIGRATIONS[:upto]:
        if callable(script):
            script(db)
            continue
        for statement in script if isinstance(script, tuple) else \
                filter(str.strip, script.split(";")):
            db.execute(statement)
    db.execute(f"PRAGMA user_version = {upto}")
    panes = json.dumps([{"label": "A", "model": "m1", "params": {}, "reply": "r1"},
                        {"label": "B", "model": "m2", "params": {}, "reply": "r2"}])
    db.executemany("INSERT INTO votes (user, created, prompt, system_prompt, outcome, blind,"
                   " panes) VALUES (?, 1, ?, '', ?, ?, ?)",
                   [("", "p1", "A", 1, panes), ("", "p2", "tie", 0, panes)])
    db.commit()
    db.close()
    store = Store(data)
    try:
        old = VoteStore(store).of("")
        assert [(v.prompt, v.outcome, v.blind, v.source, v.message_ids) for v in old] == \
            [("p1", "A", True, "compare", []), ("p2", "tie", False, "compare", [])]
        assert store.schema_version == len(MIGRATIONS)
    finally:
        store.close()


def test_the_page_answers_with_the_picked_model_names_it_and_prefers(world):
    chat = ChatHandlers(world.manager, world.store, texts=english())
    answers = AnswerControls(chat, texts=english())
    branches = BranchControls(chat, texts=english(), answers=answers)
    settings = SamplingSettings(temperature=0.0)
    outputs = list(chat.send("Name a colour.", None, False, "alpha", "", settings,
                             request=ALICE))
    cid = outputs[-1][2]
    rows, targets = branches.rows(cid, ALICE)
    assert rows == ""  # one version: no row yet
    first_reply = world.service.messages("alice", cid)[-1].id
    assert targets["choices"] == [("Reply 1", first_reply)] and targets["value"] == first_reply
    list(answers.answer(cid, None, "", settings, request=ALICE))  # no model picked yet
    list(answers.answer(cid, "m" * 100_000, "", settings, request=ALICE))  # no such model
    assert len(world.service.messages("alice", cid)) == 2
    outputs = list(answers.answer(cid, "beta", "", settings, request=ALICE))
    bubbles = outputs[-1][0]
    assert bubbles[-1]["content"].startswith("beta says hi")
    assert "Beta Model" in bubbles[-1]["content"].split("<sub>")[1]  # its footer
    assert until(lambda: chat.running.find("alice", cid) is None)
    rows = branches.rows(cid, ALICE)[0]
    assert "Reply 1" in rows and "· Beta Model" in rows and "Prefer this one" in rows
    shown = world.service.messages("alice", cid)[-1].id
    branches.flip(cid, SimpleNamespace(_data={"message": shown, "prefer": "prefer"}), ALICE)
    [vote] = VoteStore(world.store).of("alice")
    assert vote.source == "chat" and not vote.blind and vote.message_ids[0] == shown
    rows = branches.rows(cid, ALICE)[0]
    assert 'data-prefer="prefer" aria-pressed="true"' in rows
    assert "you prefer this reply" in rows
    # Bob can neither answer in Alice's conversation nor vote on it.
    list(answers.answer(cid, "beta", "", settings, request=BOB))
    branches.flip(cid, SimpleNamespace(_data={"message": shown, "prefer": "tie"}), BOB)
    assert len(world.service.messages("alice", cid)) == 2
    assert [v.outcome for v in VoteStore(world.store).of("alice")] == ["A"]
    assert VoteStore(world.store).of("bob") == []
    # A malformed click changes nothing.
    branches.flip(cid, SimpleNamespace(_data={"message": "x", "prefer": "prefer"}), ALICE)
    assert len(VoteStore(world.store).of("alice")) == 1


def test_the_page_answers_an_earlier_reply_again_on_a_branch_of_its_own(world):
    """"Answer with…" offers every reply shown; picking the first of two answers its
    question again: the new version's branch ends there, the old one keeps the follow-up."""
    chat = ChatHandlers(world.manager, world.store, texts=english())
    answers = AnswerControls(chat, texts=english())
    branches = BranchControls(chat, texts=english(), answers=answers)
    settings = SamplingSettings(temperature=0.0)
    cid = list(chat.send("Name a colour.", None, False, "alpha", "", settings,
                         request=ALICE))[-1][2]
    assert until(lambda: chat.running.find("alice", cid) is None)
    list(chat.send("And another?", cid, False, "alpha", "", settings, request=ALICE))
    assert until(lambda: chat.running.find("alice", cid) is None)
    _, targets = branches.rows(cid, ALICE)
    first, second = (choice[1] for choice in targets["choices"])
    assert [label for label, _ in targets["choices"]] == ["Reply 1", "Reply 2"]
    assert targets["value"] == second
    list(answers.answer(cid, "beta", "", settings, first, request=ALICE))
    assert until(lambda: chat.running.find("alice", cid) is None)
    shown = world.service.messages("alice", cid)
    assert [m.role for m in shown] == ["user", "assistant"] and shown[1].model == "beta"
    assert shown[1].parent_id == shown[0].id
    world.service.flip("alice", cid, shown[1].id, 1)
    assert [m.content for m in world.service.messages("alice", cid)][2] == "And another?"
    # A reply no longer shown (a stale pick) is refused; nothing is stored.
    before = len(world.store.get_conversation("alice", cid, include_superseded=True).messages)
    list(answers.answer(cid, "beta", "", settings, 10_000, request=ALICE))
    assert len(world.store.get_conversation("alice", cid,
                                            include_superseded=True).messages) == before


def test_blind_mode_hides_which_model_gave_each_version_until_the_user_judges(world):
    """With blind mode on, a question's replies from two models say "model hidden" in their
    footers, rows and the Inspector (also while the second streams), cost included; the
    preference brings the names back. Another user's choice is their own."""
    chat = ChatHandlers(world.manager, world.store, texts=english())
    answers = AnswerControls(chat, texts=english())
    branches = BranchControls(chat, texts=english(), answers=answers)
    settings = SamplingSettings(temperature=0.0)
    assert answers.blind_now(ALICE) is False
    cid = list(chat.send("Name a colour.", None, False, "alpha", "", settings,
                         request=ALICE))[-1][2]
    assert until(lambda: chat.running.find("alice", cid) is None)
    answers.set_blind(True, cid, ALICE)
    assert answers.blind_now(ALICE) is True and answers.blind_now(BOB) is False
    bubbles = list(chat.display("alice", cid))
    assert "Alpha Model" in bubbles[-1].footer  # one model so far: nothing to hide
    streamed = list(answers.answer(cid, "beta", "", settings, request=ALICE))
    footers = [update[0][-1]["content"].split("<sub>")[-1] for update in streamed]
    assert all("Beta Model" not in f for f in footers), footers
    assert "model hidden" in footers[-1] and "tokens/s" in footers[-1]
    assert until(lambda: chat.running.find("alice", cid) is None)
    rows, _ = branches.rows(cid, ALICE)
    assert "model hidden" in rows and "Beta Model" not in rows and "Alpha Model" not in rows
    _, details = chat.inspect(cid, ALICE)
    assert "model hidden" in details and "Beta Model" not in details
    first = world.service.messages("alice", cid)[-1].id
    world.service.flip("alice", cid, first, 1)
    assert "model hidden" in chat.display("alice", cid)[-1].footer
    branches.flip(cid, SimpleNamespace(_data={"message": first, "prefer": "tie"}), ALICE)
    rows, _ = branches.rows(cid, ALICE)
    assert "Alpha Model" in chat.display("alice", cid)[-1].footer and "Alpha Model" in rows
    answers.set_blind(False, cid, ALICE)
    assert answers.blind_now(ALICE) is False
