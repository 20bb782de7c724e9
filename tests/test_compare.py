"""Side by side: panes stream together, one Stop stops all, blind votes, the leaderboard.

Scripted backends prove the page and manager logic; the real SmolLM2 in two engines proves
the panes really run together (how fast is the bench's business, not a test's).
"""
from __future__ import annotations

import csv
import io
import json
import random
import threading
from types import SimpleNamespace

import pytest

from chatcore.i18n import english
from backends.base import Chunk, GenParams, Message
from backends.sampling import SamplingSettings
from chatcore.compare.comparison import Comparison
from chatcore.generation.registry import ModelEntry, ModelRegistry
from chatcore.generation.cpu_share import CpuShare
from chatcore.generation.factory import make_backend
from chatcore.generation.manager import ModelManager
from chatcore.compare.ratings import leaderboard
from chatcore.conversations.store import Store
from chatcore.compare.votes import VoteStore, all_battles, votes_to_csv, votes_to_json
from chatui.exports import ExportFiles
from chatui.compare_handlers import CompareHandlers
from tests.conftest import SAFETY_S, SHIPPED_MODELS, generation_threads
from tests.fakes import ScriptedBackend, reply_chunks
from tests.helpers import greedy

BOB = SimpleNamespace(session_hash="tab-2", username="bob")
IDS = ("alpha", "beta", "gamma", "delta")
WORDS = " ".join(f"w{i}" for i in range(30))
STORY_PROMPT = "Write a long story about a dragon who learns to cook."


def scripted_page(tmp_path, delay: float = 0.01, **backend_args):
    backends = {i: ScriptedBackend(f"{i} says {WORDS}", delay=delay, **backend_args)
                for i in IDS}
    entries = tuple(ModelEntry(id=i, name=i.title(), backend="llamacpp", path=__file__)
                    for i in IDS)
    registry = ModelRegistry(path=SHIPPED_MODELS, entries=entries, broken=())
    manager = ModelManager(registry, lambda entry: backends[entry.id])
    store = Store(tmp_path)
    return SimpleNamespace(manager=manager, store=store, backends=backends,
                           compare=CompareHandlers(manager, store, ExportFiles(tmp_path / "exports"),
                                                   texts=english()))


@pytest.fixture()
def page(tmp_path):
    page = scripted_page(tmp_path)
    yield page
    page.store.close()


def pane_settings(models, temperature=0.0, max_tokens=64):
    """Every pane's model and settings (four panes, the first len(models) shown)."""
    models = list(models) + [IDS[0]] * (4 - len(models))
    return models, [SamplingSettings(temperature=temperature, max_new_tokens=max_tokens)] * 4


def send(page, text, comparison=None, models=IDS[:2], blind=False, request=BOB):
    return list(page.compare.send(text, comparison, blind, str(len(models)), "",
                                  *pane_settings(models), request=request))


def pane_texts(update) -> list[str]:
    """What each shown pane's last reply says (its footer cut off)."""
    texts = []
    for pane in update[:4]:
        messages = pane["value"]
        texts.append(messages[-1]["content"].split("\n\n<sub>")[0] if messages else "")
    return texts


def test_panes_interleave_every_pane_has_text_before_any_finishes(page):
    updates = send(page, "hello", models=IDS[:3])
    finished_at = None
    for number, update in enumerate(updates):
        if finished_at is None and any("tokens" in (p["value"][-1]["content"] if p["value"]
                                                    else "") for p in update[:3]):
            finished_at = number
    assert finished_at is not None, "no pane ever showed its finished footer"
    before = [pane_texts(u)[:3] for u in updates[:finished_at]]
    assert any(all(t not in ("", "…") for t in texts) for texts in before), \
        "no update showed text in every pane before the first one finished"
    last = pane_texts(updates[-1])
    for model_id, text in zip(IDS[:3], last):
        assert text == f"{model_id} says {WORDS}"


def test_the_merged_stream_interleaves_events_of_all_replies(page):
    requests = [(i, [Message("user", "hi")], GenParams()) for i in IDS]
    with page.manager.start(requests, threading.Event()) as replies:
        order = [index for index, event in replies if isinstance(event, Chunk) and event.text]
    first_seen = {i: order.index(i) for i in range(4)}
    last_seen = {i: len(order) - 1 - order[::-1].index(i) for i in range(4)}
    assert max(first_seen.values()) < min(last_seen.values())


def test_stop_ends_every_pane_and_no_worker_outlives_it(tmp_path):
    page = scripted_page(tmp_path, delay=0.05)
    stream = page.compare.send("hello", None, False, "3", "", *pane_settings(IDS[:3]),
                               request=BOB)
    update = next(stream)
    while not all(t not in ("", "…") for t in pane_texts(update)[:3]):
        update = next(stream)
    page.compare.stop(BOB)
    updates = list(stream)
    comparison = updates[-1][4]
    latest = comparison.rounds[-1]
    assert [r.finish_reason for r in latest.replies] == ["cancelled"] * 3
    assert all(b.produced < 30 for b in page.backends.values())
    assert generation_threads() == []
    assert all("stopped" in p["value"][-1]["content"] for p in updates[-1][:3])
    page.store.close()


def test_a_pane_that_fails_shows_its_error_and_the_others_finish(tmp_path):
    page = scripted_page(tmp_path)
    page.backends["beta"].fail_at = 3
    update = send(page, "hello")[-1]
    alpha, beta = (p["value"][-1]["content"] for p in update[:2])
    assert alpha.startswith(f"alpha says {WORDS}")
    assert "scripted failure at word 3" in beta
    comparison = update[4]
    assert comparison.rounds[0].errors == ["", "scripted failure at word 3"]
    page.store.close()


@pytest.mark.slow
def test_follow_ups_go_to_every_pane_with_its_own_history_and_models_can_be_swapped(page):
    seen = {i: [] for i in IDS}
    for model_id, backend in page.backends.items():
        original = backend.stream_chat

        def recording(messages, params, cancel, model_id=model_id, original=original):
            seen[model_id].append([(m.role, m.content) for m in messages])
            return original(messages, params, cancel)
        backend.stream_chat = recording
    comparison = send(page, "first")[-1][4]
    comparison = send(page, "second", comparison)[-1][4]
    assert seen["beta"][-1] == [("user", "first"), ("assistant", f"beta says {WORDS}"),
                                ("user", "second")]
    comparison = send(page, "third", comparison, models=("alpha", "gamma"))[-1][4]
    assert seen["gamma"][-1][1] == ("assistant", f"beta says {WORDS}")  # pane B's history
    assert [p.model_id for p in comparison.panes] == ["alpha", "gamma"]


@pytest.mark.slow
def test_blind_labels_stay_hidden_until_the_vote_and_are_shuffled_across_rounds(page):
    update = send(page, "hello", blind=True)[-1]
    comparison = update[4]
    assert [p["label"] for p in update[:2]] == ["Model A", "Model B"]
    for pane in update[:2]:
        shown = json.dumps(pane["value"])
        assert "Alpha" not in shown and "Beta" not in shown
    assert [p["visible"] for p in update[7:9]] == [False, False]  # the model pickers
    assert update[6]["visible"] is True  # the vote row
    *after, status, board = page.compare.vote("A", comparison, BOB)
    winner = comparison.panes[0].model_id.title()
    assert after[0]["label"] == f"Model A: {winner}"
    assert f"Model A ({winner}) better" in status
    assert after[6]["visible"] is False and after[7]["visible"] is True
    assert board[0][1] == winner
    stored = page.compare.votes.of("bob")
    assert stored[0].blind and stored[0].outcome == "A" and stored[0].prompt == "hello"
    assert {p.model for p in stored[0].panes} == {"alpha", "beta"}
    assert all(p.reply.endswith(WORDS) for p in stored[0].panes)

    orders = {tuple(p.model_id for p in Comparison.start(
        [("alpha", GenParams()), ("beta", GenParams()), ("gamma", GenParams())],
        blind=True, rng=random.Random(seed)).panes) for seed in range(20)}
    assert len(orders) >= 4, f"blind deals hardly vary: {orders}"
    dealt = {send(page, "again", blind=True)[-1][4].panes[0].model_id for _ in range(12)}
    assert dealt == {"alpha", "beta"}, "the page's blind rounds never swapped the order"


def test_a_vote_needs_a_new_round_and_is_kept_with_everything(page):
    comparison = send(page, "hello")[-1][4]
    assert page.compare.vote("tie", comparison, BOB)[-2].startswith("Vote saved: a tie")
    again = page.compare.vote("A", comparison, BOB)
    assert again[-2] == "Send a prompt first, then vote on the replies."
    assert len(page.compare.votes.of("bob")) == 1
    assert page.compare.votes.of("someone else") == []
    vote = page.compare.votes.of("bob")[0]
    assert vote.panes[0].params["temperature"] == 0.0
    assert vote.panes[0].completion_tokens == 32 and vote.panes[0].time_to_first_token > 0


def test_votes_export_to_csv_and_json(page):
    comparison = send(page, "hello, \"quoted\"\nand a new line")[-1][4]
    page.compare.vote("B", comparison, BOB)
    file_update, status = page.compare.export_votes("csv", BOB)
    rows = list(csv.DictReader(io.StringIO(open(file_update["value"]).read())))
    assert status.startswith("Exported 1 vote")
    assert [(r["model"], r["result"]) for r in rows] == [("alpha", "loss"), ("beta", "win")]
    assert rows[0]["prompt"] == "hello, \"quoted\"\nand a new line"
    document = json.loads(votes_to_json(page.compare.votes.of("bob")))
    assert document["votes"][0]["panes"][1]["reply"] == f"beta says {WORDS}"
    assert votes_to_csv([]).strip() == ",".join(csv.reader(io.StringIO(
        votes_to_csv([]))).__next__())


@pytest.mark.slow
def test_the_leaderboard_follows_the_votes(page):
    for winner in ("A", "A", "B", "A"):
        comparison = send(page, "hello")[-1][4]
        page.compare.vote(winner, comparison, BOB)
    standings = leaderboard(all_battles(page.compare.votes.of("bob")))
    assert [(s.model, s.wins, s.losses) for s in standings] == [("alpha", 3, 1),
                                                                ("beta", 1, 3)]
    rows = page.compare.leaderboard_rows(BOB)
    assert rows[0][:2] == [1, "Alpha"] and rows[0][4] == "75%"
    assert page.compare.api_leaderboard(BOB)[0]["model"] == "alpha"


def test_a_vote_answers_with_the_board_the_page_asked_for(page):
    """With open votes left out, the board a vote sends back counts only blind ones (no
    moment where every vote shows)."""
    open_round = send(page, "hello")[-1][4]
    page.compare.vote("A", open_round, BOB)
    blind_round = send(page, "hello", blind=True)[-1][4]
    *_, board = page.compare.vote("B", blind_round, BOB, include_open=False)
    loser = blind_round.panes[0].model_id.title()
    assert [(row[1], row[5], row[6]) for row in board] == [
        (blind_round.panes[1].model_id.title(), 1, 0), (loser, 0, 1)]
    rows, counts = page.compare.board(False, BOB)
    assert rows == board and counts == "Counts 1 blind vote; leaves out 1 open vote."


def test_save_as_conversations_and_export_markdown(page):
    comparison = send(page, "hello", blind=True)[-1][4]
    assert page.compare.save_conversations(comparison, BOB).startswith("Vote first")
    assert page.compare.export_markdown(comparison)[1].startswith("Vote first")
    page.compare.vote("bad", comparison, BOB)
    comparison = send(page, "more", comparison)[-1][4]
    assert page.compare.save_conversations(comparison, BOB).startswith("Saved 2 conversations")
    saved = {c.title: page.store.get_conversation("bob", c.id)
             for c in page.store.list_conversations("bob")}
    assert sorted(c.model for c in saved.values()) == ["alpha", "beta"]
    assert all([m.role for m in c.messages] == ["user", "assistant"] * 2
               for c in saved.values())
    file_update, _ = page.compare.export_markdown(comparison)
    text = open(file_update["value"], encoding="utf-8").read()
    assert "## Round 2" in text and "### Model A: " in text and f"beta says {WORDS}" in text


def test_cpu_share_splits_cores_between_models_and_counts_a_batch_once():
    share = CpuShare(cores=4)
    assert share.threads() == 4
    with share.share("a") as first:
        assert first() == 4
        with share.share("b"):
            assert first() == 2
            with share.share("c"):
                assert first() == 1
            with share.share("b"):  # a second reply batched by model b
                assert first() == 2 and share.running == 2
        assert first() == 4
    assert share.running == 0


# -- the real model ------------------------------------------------------------------------
@pytest.mark.slow
def test_real_smollm2_in_two_engines_streams_side_by_side(smollm2_path, dequantized_cache,
                                                         tmp_path):
    """llama.cpp Q4_1 and transformers fp32 on the same weights, in two panes.

    Each engine, once it has computed its first token, waits for the other's first token: if
    the panes ran one after the other, the backends would never count two replies at once.
    How much faster side by side is than in turn is the bench's figure (bench/), not a test's.
    """
    entries = (ModelEntry(id="q4", name="SmolLM2 Q4_1", backend="llamacpp",
                          path=str(smollm2_path)),
               ModelEntry(id="fp32", name="SmolLM2 fp32", backend="transformers",
                          path=str(smollm2_path)))
    registry = ModelRegistry(path=SHIPPED_MODELS, entries=entries, broken=())
    manager = ModelManager(registry, lambda e: make_backend(e, cache_dir=dequantized_cache))
    store = Store(tmp_path)
    compare = CompareHandlers(manager, store, ExportFiles(tmp_path / "exports"),
                              texts=english())
    models, settings = ["q4", "fp32", "q4", "q4"], [SamplingSettings(temperature=0.0,
                                                                      max_new_tokens=64)] * 4
    params = greedy(64)
    prompt = [Message("user", STORY_PROMPT)]
    in_turn = {m: "".join(c.text for c in reply_chunks(manager, m, prompt, params,
                                                              threading.Event()))
               for m in ("q4", "fp32")}

    lock = threading.Lock()
    running = {"now": 0, "most": 0}
    firsts = {m: threading.Event() for m in ("q4", "fp32")}
    for model_id, other in (("q4", "fp32"), ("fp32", "q4")):
        backend = manager.load(model_id)  # resident already: the same instance
        original = backend.stream_chat

        def counting(messages, params, cancel, model_id=model_id, other=other,
                     original=original):
            with lock:
                running["now"] += 1
                running["most"] = max(running["most"], running["now"])
            try:
                for chunk in original(messages, params, cancel):
                    if chunk.text and not firsts[model_id].is_set():
                        firsts[model_id].set()
                        firsts[other].wait(SAFETY_S)  # a hang guard only
                    yield chunk
            finally:
                with lock:
                    running["now"] -= 1
        backend.stream_chat = counting

    updates = list(compare.send(STORY_PROMPT, None, False, "2", "", models, settings,
                                request=BOB))
    assert running["most"] == 2, "the two panes' replies never ran at the same time"
    assert all(first.is_set() for first in firsts.values())

    growth = [pane_texts(u)[:2] for u in updates[:-1]]
    both_streaming = [texts for texts in growth if all(t not in ("", "…") for t in texts)]
    assert both_streaming, "the two panes never showed text at the same time"
    for pane in range(2):
        assert len({texts[pane] for texts in growth}) >= 4, f"pane {pane} did not stream"
    comparison = updates[-1][4]
    replies = [r.content for r in comparison.rounds[0].replies]
    # Greedy: the same words either way (torch's sums may differ in the last bits when the
    # thread count changes, so the fp32 reply is held to its opening).
    assert replies[0] == in_turn["q4"]
    assert replies[1][:40] == in_turn["fp32"][:40]
    assert [r.completion_tokens for r in comparison.rounds[0].replies] == [64, 64]
    compare.vote("tie", comparison, BOB)
    stored = VoteStore(store).of("bob")[0]
    assert [p.reply for p in stored.panes] == replies
    assert compare.save_conversations(comparison, BOB).startswith("Saved 2")
    manager.unload_all()
    store.close()


def test_two_panes_on_one_model_take_turns_and_say_so(page):
    updates = send(page, "hello", models=("alpha", "alpha"))
    shown = json.dumps([u[:2] for u in updates])
    assert "Waiting for Alpha: 1 request ahead" in shown
    assert pane_texts(updates[-1])[:2] == [f"alpha says {WORDS}"] * 2
