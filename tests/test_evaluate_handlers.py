"""The Evaluate tab's callbacks over scripted backends (page logic, not engines): sets are
saved, imported all-or-nothing and exported; a run over 3 models and 4 prompts fills a blind
review queue where every pair appears in both orders; votes move the ratings; the report
holds every reply."""
from __future__ import annotations

import json
from types import SimpleNamespace

from backends.sampling import SamplingSettings
from chatcore.generation.registry import ModelEntry, ModelRegistry
from chatcore.evaluate.runner import EvalRunner
from chatcore.evaluate.store import EvalStore
from chatcore.generation.manager import ModelManager
from chatcore.conversations.store import Store
from chatui.exports import ExportFiles
from chatcore.i18n import english
from chatui.evaluate_handlers import EvaluateHandlers
from chatui.prompt_set_handlers import BUILTIN, MINE
from tests.conftest import SAFETY_S, SHIPPED_MODELS
from tests.fakes import ScriptedBackend

CAROL = SimpleNamespace(session_hash="tab-9", username="carol")
REPLIES = {"short": "Yes.", "long": "## Answer\n\n- one\n- two\n- three\n\n**Plenty** of words "
           "here, and more words, and still more words to make it long.",
           "mid": "A reply of middling length with a few words."}


def page(tmp_path, **extra: ScriptedBackend) -> EvaluateHandlers:
    backends = {name: ScriptedBackend(text) for name, text in REPLIES.items()} | extra
    entries = tuple(ModelEntry(id=i, name=i.title(), backend="llamacpp", path=__file__)
                    for i in backends)
    manager = ModelManager(ModelRegistry(path=SHIPPED_MODELS, entries=entries, broken=()),
                           lambda entry: backends[entry.id])
    evals = EvalStore(Store(tmp_path / "data"))
    return EvaluateHandlers(manager, evals, EvalRunner(manager, evals),
                            ExportFiles(tmp_path / "exports"), texts=english())


def four_prompt_set(handlers: EvaluateHandlers) -> str:
    rows = [["What is 2+2?", "math", "4"], ["Capital of France?", "facts", "Paris"],
            ["What is 3*3?", "math", "9"], ["Largest ocean?", "facts", ""], ["", "", ""]]
    picker, status = handlers.sets.save_set(None, "Mixed", rows, CAROL)
    assert status == "Saved “Mixed” (4 prompts)."
    return MINE + "Mixed"


def settings(temperature: float) -> SamplingSettings:
    return SamplingSettings(temperature=temperature, max_new_tokens=32)


def run_three(handlers: EvaluateHandlers) -> int:
    choice = four_prompt_set(handlers)
    picker, status = handlers.start_run(choice, "", ["short", "long", "mid", None],
                                        [settings(0.0), settings(0.0), settings(0.7),
                                         settings(0.7)], request=CAROL)
    run_id = picker["value"]
    assert status.startswith(f"Run #{run_id} started: 4 prompts × 3 models")
    assert handlers.runner.wait(run_id, SAFETY_S)
    return run_id


def test_sets_are_listed_saved_duplicated_and_deleted(tmp_path):
    handlers = page(tmp_path)
    builtins = [value for _, value in handlers.sets.set_choices("carol")]
    assert any(v.startswith(BUILTIN) and "Filipino" in v for v in builtins)
    choice = four_prompt_set(handlers)
    name, rows = handlers.sets.open_set(choice, CAROL)
    assert handlers.sets.set_note(choice, CAROL) == ""
    assert "built-in" in handlers.sets.set_note(BUILTIN + "Coding", CAROL)
    assert name == "Mixed" and rows[1] == ["Capital of France?", "facts", "Paris"]
    picker, status = handlers.sets.duplicate_set(choice, CAROL)
    assert picker["value"] == MINE + "Mixed (copy)"
    _, status = handlers.sets.delete_set(BUILTIN + "Coding", CAROL)
    assert "cannot be deleted" in status
    _, status = handlers.sets.delete_set(choice, CAROL)
    assert status.startswith("Deleted “Mixed”")
    assert [v for _, v in handlers.sets.set_choices("carol") if v.startswith(MINE)] == [
        MINE + "Mixed (copy)"]
    # built-ins only
    assert handlers.sets.set_choices("someone else") == handlers.sets.set_choices("")
    _, status = handlers.sets.save_set(None, "  ", [["x", "", ""]], CAROL)
    assert status.startswith("⚠️ Not saved:")


def test_a_malformed_import_names_the_line_and_imports_nothing(tmp_path):
    handlers = page(tmp_path)
    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": "also fine", "category": "x"}\n{oops\n',
                   encoding="utf-8")
    _, status = handlers.sets.import_set(str(bad), CAROL)
    assert status.startswith("⚠️ Nothing imported:") and "line 3" in status
    assert not [v for _, v in handlers.sets.set_choices("carol") if v.startswith(MINE)]
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "Kumusta?", "category": "pagbati"}\n', encoding="utf-8")
    picker, status = handlers.sets.import_set(str(good), CAROL)
    assert picker["value"] == MINE + "good" and status == "Imported 1 prompt as “good”."
    file, status = handlers.sets.export_set(MINE + "good", "jsonl", CAROL)
    exported = json.loads(open(file["value"], encoding="utf-8").read())
    assert exported["category"] == "pagbati" and exported["prompt"] == "Kumusta?"


def test_review_queue_covers_every_pair_in_both_orders_and_votes_move_ratings(tmp_path):
    handlers = page(tmp_path)
    run_id = run_three(handlers)
    assert "12 of 12 replies · done" in handlers.progress_html(run_id, CAROL)
    assert handlers.followed_status(run_id, CAROL) == (f"Run #{run_id}: done.", None)
    shown: list[tuple[int, int, int]] = []
    labels = {0: "Short", 1: "Long", 2: "Mid"}
    while True:
        header, prompt, reference, a, b, item = handlers.next_pair(run_id, CAROL)
        if item is None:
            assert header == "All 12 pairs reviewed."
            break
        assert header.startswith(f"**Pair {len(shown) + 1} of 12**")
        said = {" ".join(text.split()) for text in REPLIES.values()}  # scripted: words only
        assert a in said and b in said and a != b
        shown.append(tuple(item))
        # The person always prefers the long reply, and otherwise the short one.
        left, right = item[1], item[2]
        choice = "A" if left == 1 else "B" if right == 1 else ("A" if left == 0 else "B")
        revealed = handlers.vote(choice, item, run_id, CAROL)
        assert f"A was **{labels[left]}**, B was **{labels[right]}**" in revealed
    pairs = {(min(l, r), max(l, r)) for _, l, r in shown}
    assert pairs == {(0, 1), (0, 2), (1, 2)}
    for pair in pairs:
        orders = {(l, r) for _, l, r in shown if (min(l, r), max(l, r)) == pair}
        assert len(orders) == 2, f"pair {pair} shown in one order only"
    # Every pair gets a vote before any pair gets a second one.
    assert {(min(l, r), max(l, r)) for _, l, r in shown[:3]} == pairs
    rating_rows, choose_rows, note = handlers.ratings(run_id, CAROL)
    categories = {row[0] for row in rating_rows}
    assert categories == {"Overall", "facts", "math"}
    overall = [row for row in rating_rows if row[0] == "Overall"]
    assert [row[1] for row in overall] == ["Long", "Short", "Mid"]
    assert choose_rows[0][:2] == ["Overall", "Long"]
    # Each scripted model always writes the same length, so length and model cannot be told
    # apart here (tests/test_eval_ratings.py checks the style fit on data where they can).
    assert note.startswith("Style control: ") and "length coefficient" in note
    files, status = handlers.export_report(run_id, CAROL)
    report = next(p for p in files["value"] if p.endswith(".md"))
    text = open(report, encoding="utf-8").read()
    assert "# Evaluation: Mixed" in text and "## Which to choose" in text
    assert text.count("Yes.") == 4 and "Capital of France?" in text
    assert any(p.endswith(".png") for p in files["value"])
    assert any(p.endswith("-votes.csv") for p in files["value"])


def test_a_run_over_a_deleted_set_and_model_still_opens(tmp_path):
    handlers = page(tmp_path)
    run_id = run_three(handlers)
    handlers.sets.delete_set(MINE + "Mixed", CAROL)
    handlers.manager.replace_registry(ModelRegistry(path=SHIPPED_MODELS, entries=(),
                                                    broken=()))
    header, prompt, _, a, b, item = handlers.next_pair(run_id, CAROL)
    assert item is not None and prompt
    assert "12 of 12 replies" in handlers.progress_html(run_id, CAROL)
    _, status = handlers.control("resume", run_id, CAROL)
    assert "only a paused run resumes" in status


def test_a_start_without_a_set_or_with_one_model_is_refused(tmp_path):
    handlers = page(tmp_path)
    _, status = handlers.start_run(None, "", ["short", None, None, None], [settings(0.0)] * 4,
                                   request=CAROL)
    assert status == "⚠️ Pick a prompt set first."
    choice = four_prompt_set(handlers)
    _, status = handlers.start_run(choice, "", ["short", None, None, None],
                                   [settings(0.0)] * 4, request=CAROL)
    assert status == "⚠️ Not started: a run compares 2 to 4 models; 1 chosen"


def test_a_judge_votes_in_both_orders_and_is_kept_apart(tmp_path):
    handlers = page(tmp_path, judge=ScriptedBackend("I compared them. Verdict: A"))
    run_id = run_three(handlers)
    handlers.start_judge(run_id, "judge", CAROL)
    assert handlers.judges.wait(run_id, SAFETY_S)
    status = handlers.judge_status(run_id, CAROL)
    # "Verdict: A" in both orders means the first shown wins each time: it flips, so a tie.
    assert "**judge**: 12 votes (kept apart from yours" in status
    rows, choose, note = handlers.ratings(run_id, CAROL)
    assert {row[0] for row in rows} == {"Overall (judge judge)", "facts (judge judge)",
                                        "math (judge judge)"}
    assert choose == [] and note == "No votes of yours yet: the rows are the judge's."
    votes = handlers.evals.votes(run_id, judge="judge")
    assert len(votes) == 12 and {v.outcome for v in votes} == {"tie"}
    assert handlers.evals.votes(run_id) == []  # the person's votes: none
