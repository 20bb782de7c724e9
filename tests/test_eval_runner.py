"""Evaluation runs with scripted backends: the scheduling logic (waves that fit memory, the
background lane, pause and cancel, failures), never proof that an engine works; the real
engines run in tests/test_eval_engines.py."""
from __future__ import annotations

import threading
import time

import pytest

from backends.base import GenParams, Message
from backends.sampling import SamplingSettings
from chatcore.generation.registry import ModelEntry, ModelRegistry
from chatcore.evaluate.runner import EvalRunner, RunRefused, estimate_seconds_left, plan_waves
from chatcore.evaluate.store import Candidate, EvalReply, EvalStore
from chatcore.generation.manager import ModelManager
from chatcore.generation.memory import MemoryBudget
from chatcore.evaluate.prompt_sets import EvalPrompt, make_set
from chatcore.conversations.store import Store
from tests.conftest import SAFETY_S, SHIPPED_MODELS, until
from tests.fakes import ScriptedBackend, reply_chunks

MB = 1_000_000
USER = "alice"
THREE = make_set("three", [EvalPrompt("one?", "facts"), EvalPrompt("two?", "facts"),
                           EvalPrompt("three?", "math", "3")])


def setup(tmp_path, backends: dict[str, ScriptedBackend], budget_mb: int | None = None):
    entries = tuple(ModelEntry(id=i, name=f"Model {i}", backend="llamacpp", path=__file__)
                    for i in backends)
    budget = MemoryBudget({"cpu": budget_mb * MB}) if budget_mb else None
    manager = ModelManager(ModelRegistry(path=SHIPPED_MODELS, entries=entries, broken=()),
                           lambda entry: backends[entry.id], budget)
    evals = EvalStore(Store(tmp_path))
    return manager, evals, EvalRunner(manager, evals)


def params(**kw) -> GenParams:
    return GenParams(SamplingSettings(**{"temperature": 0.0, **kw}))


def test_waves_group_models_that_fit_together():
    c = [Candidate("a", "A", {}, 300 * MB), Candidate("b", "B", {}, 300 * MB),
         Candidate("a", "A2", {}, 300 * MB), Candidate("c", "C", {}, 500 * MB)]
    assert plan_waves(c, {"cpu": 700 * MB}) == [[0, 1, 2], [3]]
    assert plan_waves(c, {"cpu": 500 * MB}) == [[0, 2], [1], [3]]
    assert plan_waves(c, {"cpu": 2000 * MB}) == [[0, 1, 2, 3]]


def test_the_time_left_falls_while_replies_run_and_is_gone_at_the_end():
    """Two candidates, six replies of 10 s each measured; two under way since t=100."""
    done = [EvalReply(p, c, "done", started=90.0, finished=100.0) for p in range(2)
            for c in range(2)]
    running = [EvalReply(2, c, "running", started=100.0) for c in range(2)]
    figures = [estimate_seconds_left(done + running, 6, 2, now) for now in (100, 104, 108)]
    assert figures == [10.0, 6.0, 2.0]  # what the mean leaves of the two under way
    assert estimate_seconds_left(done + running, 6, 2, 112.0) is None  # overdue: no "0 s"
    assert estimate_seconds_left(done, 4, 0, 200.0) is None  # every reply ended
    assert estimate_seconds_left(running, 6, 2, 100.0) is None  # nothing measured yet
    stale = [EvalReply(3, 0, "running", started=10.0)]  # left by a pause, redone later
    assert estimate_seconds_left(done + running + stale, 8, 2, 100.0) == 20.0


def test_a_run_stores_every_reply_with_its_figures(tmp_path):
    manager, evals, runner = setup(tmp_path, {"a": ScriptedBackend("alpha beta"),
                                              "b": ScriptedBackend("gamma delta epsilon")})
    run_id = runner.start(USER, THREE, [("a", params()), ("b", params(temperature=0.5))])
    assert runner.wait(run_id, SAFETY_S)
    replies = evals.replies(run_id)
    assert [(r.prompt, r.candidate, r.state) for r in replies] == [
        (p, c, "done") for p in range(3) for c in range(2)]
    assert {r.content for r in replies} == {"alpha beta", "gamma delta epsilon"}
    assert all(r.completion_tokens in (2, 3) and r.finish_reason == "stop"
               and r.time_to_first_token is not None and r.attempts == 1 for r in replies)
    run = evals.run(USER, run_id)
    assert run.state == "done" and run.candidates[1].params["temperature"] == 0.5
    progress = runner.progress(USER, run_id)
    assert (progress.done, progress.total, progress.failed) == (6, 6, 0)


def test_models_that_do_not_fit_together_run_one_after_the_other(tmp_path):
    backends = {"a": ScriptedBackend("x " * 20, delay=0.005, memory=600 * MB),
                "b": ScriptedBackend("y " * 20, delay=0.005, memory=600 * MB)}
    manager, evals, runner = setup(tmp_path, backends, budget_mb=1000)
    seen: list[set[str]] = []
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            seen.append({m for m, b in backends.items() if b.loaded})
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    run_id = runner.start(USER, THREE, [("a", params()), ("b", params())])
    assert runner.wait(run_id, SAFETY_S)
    watching.set()
    watcher.join()
    assert max(len(s) for s in seen) == 1, "two models were resident at once"
    assert {"a"} in seen and {"b"} in seen
    assert backends["a"].loads == 1 and backends["b"].loads == 1  # no thrashing
    assert len([r for r in evals.replies(run_id) if r.state == "done"]) == 6


def test_a_model_too_big_alone_is_refused_before_the_run(tmp_path):
    manager, evals, runner = setup(tmp_path, {"a": ScriptedBackend(memory=100 * MB),
                                              "b": ScriptedBackend(memory=2000 * MB)}, 1000)
    with pytest.raises(RunRefused, match=r"b cannot fit even alone: it needs 2\.0 GB and the "
                                         r"budget on cpu is 1\.0 GB"):
        runner.start(USER, THREE, [("a", params()), ("b", params())])
    with pytest.raises(RunRefused, match="2 to 4 models; 1 chosen"):
        runner.start(USER, THREE, [("a", params())])
    assert evals.runs(USER) == []


def test_a_failing_model_marks_its_remaining_replies_and_the_others_finish(tmp_path):
    manager, evals, runner = setup(tmp_path, {"a": ScriptedBackend("fine reply"),
                                              "b": ScriptedBackend("x y z", fail_at=1)})
    run_id = runner.start(USER, THREE, [("a", params()), ("b", params())])
    assert runner.wait(run_id, SAFETY_S)
    by = {(r.prompt, r.candidate): r for r in evals.replies(run_id)}
    assert all(by[(p, 0)].state == "done" for p in range(3))
    assert by[(0, 1)].state == "failed" and "scripted failure at word 1" in by[(0, 1)].error
    assert all(by[(p, 1)].state == "failed" and by[(p, 1)].error.startswith("not run: ")
               for p in (1, 2))
    assert evals.run(USER, run_id).state == "done"
    assert runner.progress(USER, run_id).failed == 3


def test_pause_stops_at_once_and_resume_redoes_only_the_reply_in_progress(tmp_path):
    backends = {"a": ScriptedBackend("w " * 40, delay=0.01),
                "b": ScriptedBackend("v " * 40, delay=0.01)}
    manager, evals, runner = setup(tmp_path, backends, budget_mb=None)
    run_id = runner.start(USER, THREE, [("a", params()), ("b", params())])
    assert until(lambda: any(r.state == "done" for r in evals.replies(run_id)), SAFETY_S)
    runner.pause(USER, run_id)
    paused = evals.replies(run_id)
    produced = backends["a"].produced + backends["b"].produced
    time.sleep(0.2)
    assert backends["a"].produced + backends["b"].produced == produced, "paused but computing"
    assert evals.run(USER, run_id).state == "paused"
    assert runner.progress(USER, run_id).state == "paused"
    runner.resume(USER, run_id)
    assert runner.wait(run_id, SAFETY_S)
    replies = evals.replies(run_id)
    assert len(replies) == 6 and all(r.state == "done" for r in replies)
    redone = sum(r.attempts - 1 for r in replies)
    assert redone == sum(r.state == "running" for r in paused) <= 2  # one per candidate


def test_cancel_keeps_what_was_stored(tmp_path):
    manager, evals, runner = setup(tmp_path, {"a": ScriptedBackend("w " * 40, delay=0.01),
                                              "b": ScriptedBackend("v " * 40, delay=0.01)})
    run_id = runner.start(USER, THREE, [("a", params()), ("b", params())])
    assert until(lambda: any(r.state == "done" for r in evals.replies(run_id)), SAFETY_S)
    runner.cancel(USER, run_id)
    assert evals.run(USER, run_id).state == "cancelled"
    with pytest.raises(RunRefused, match="only a paused run resumes"):
        runner.resume(USER, run_id)
    assert any(r.state == "done" for r in evals.replies(run_id))


def test_a_person_is_served_before_the_runs_next_reply(tmp_path):
    backends = {"a": ScriptedBackend("r " * 10, delay=0.01),
                "b": ScriptedBackend("s " * 10, delay=0.01),
                "chat": ScriptedBackend("c " * 60, delay=0.01)}
    manager, evals, runner = setup(tmp_path, backends)
    many = make_set("many", [EvalPrompt(f"question {i}") for i in range(8)])
    run_id = runner.start(USER, many, [("a", params()), ("b", params())])
    assert until(lambda: any(r.state == "done" for r in evals.replies(run_id)), SAFETY_S)
    before = evals.replies(run_id)
    ended = sum(r.state != "running" for r in before)
    in_progress = sum(r.state == "running" for r in before)
    chunks = list(reply_chunks(manager, "chat", [Message("user", "hi")], params()))
    after = sum(r.state != "running" for r in evals.replies(run_id))
    assert chunks[-1].usage.completion_tokens == 60
    # Only the replies already running when the person asked may end meanwhile.
    assert after <= ended + in_progress
    assert runner.wait(run_id, SAFETY_S)
    assert len(evals.replies(run_id)) == 16


def test_a_run_resumes_after_a_restart_without_duplicates(tmp_path):
    backends = {"a": ScriptedBackend("w " * 30, delay=0.01),
                "b": ScriptedBackend("v " * 30, delay=0.01)}
    manager, evals, runner = setup(tmp_path, backends)
    run_id = runner.start(USER, THREE, [("a", params()), ("b", params())])
    assert until(lambda: any(r.state == "done" for r in evals.replies(run_id)), SAFETY_S)
    runner.close()  # the app stops: the run stays "running"
    assert evals.run(USER, run_id).state == "running"
    restarted = EvalRunner(manager, EvalStore(Store(tmp_path)))
    assert restarted.resume_all() == [run_id]
    assert restarted.wait(run_id, SAFETY_S)
    replies = evals.replies(run_id)
    assert sorted((r.prompt, r.candidate) for r in replies) == [
        (p, c) for p in range(3) for c in range(2)]
    assert all(r.state == "done" for r in replies)
    assert sum(r.attempts - 1 for r in replies) <= 2


def test_two_candidates_on_one_model_get_names_that_tell_them_apart(tmp_path):
    manager, evals, runner = setup(tmp_path, {"a": ScriptedBackend()})
    labels = [c.label for c in runner.candidates([("a", params()),
                                                  ("a", params(temperature=0.9))])]
    assert labels == ["Model a (temperature 0.0, top p 0.9)",
                      "Model a (temperature 0.9, top p 0.9)"]
    assert [c.label for c in runner.candidates([("a", params()), ("a", params())])] == [
        "Model a #1", "Model a #2"]
