"""Evaluation runs with the real engines: SmolLM2 through llama.cpp and through transformers
4-bit, a run that goes model by model to fit the budget, a person served before the run, and
an app killed with SIGKILL mid-run that resumes where it stopped."""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time

import pytest

from backends.base import Chunk, GenParams, Message
from backends.sampling import SamplingSettings
from chatcore.generation.registry import ModelEntry, ModelRegistry, load_registry
from chatcore.evaluate.runner import EvalRunner
from chatcore.evaluate.store import EvalStore
from chatcore.generation.factory import make_backend
from chatcore.generation.manager import ModelManager
from chatcore.generation.memory import MemoryBudget
from chatcore.evaluate.prompt_sets import EvalPrompt, make_set
from chatcore.conversations.store import DB_NAME, Store
from tests.conftest import SAFETY_S, SHIPPED_MODELS, start_app, until
from tests.test_compare import STORY_PROMPT
from tests.helpers import greedy

pytestmark = pytest.mark.slow

USER = ""  # the page's user without --auth
# A hang guard for whole runs of a few short replies, never a timing.
RUN_GUARD_S = 20 * SAFETY_S
PROMPTS = make_set("three", [EvalPrompt("Name the capital of France.", "facts", "Paris"),
                             EvalPrompt("What is 2 + 2?", "math", "4"),
                             EvalPrompt("Say hello in one word.", "chat")])
SHORT = greedy(16)


def test_a_run_over_two_engines_goes_model_by_model_within_the_budget(tmp_path):
    # 1 GB holds SmolLM2 through llama.cpp (about 370 MB) or through transformers 4-bit
    # (about 820 MB), not both: the run must load one, answer every prompt, unload, go on.
    manager = ModelManager(load_registry(SHIPPED_MODELS), make_backend,
                           MemoryBudget.parse("1GB"))
    evals = EvalStore(Store(tmp_path))
    runner = EvalRunner(manager, evals)
    seen: list[frozenset[str]] = []
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            seen.append(frozenset(manager.resident()))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        run_id = runner.start(USER, PROMPTS, [("smollm2-135m", SHORT),
                                              ("smollm2-135m-4bit", SHORT)])
        assert runner.wait(run_id, RUN_GUARD_S), "the run did not finish"
    finally:
        watching.set()
        watcher.join()
        manager.unload_all()
    assert max(len(s) for s in seen) == 1, "two models were resident at once"
    assert {"smollm2-135m"} in seen and {"smollm2-135m-4bit"} in seen
    replies = evals.replies(run_id)
    assert [(r.prompt, r.candidate, r.state) for r in replies] == [
        (p, c, "done") for p in range(3) for c in range(2)], [r.error for r in replies]
    for reply in replies:
        assert reply.content.strip() and reply.completion_tokens > 0
        assert reply.finish_reason in ("stop", "length")
        assert reply.time_to_first_token is not None and reply.tokens_per_second is not None
    # Greedy SmolLM2 on either engine knows this one.
    assert all("Paris" in r.content for r in replies if r.prompt == 0)
    assert evals.run(USER, run_id).state == "done"


def test_a_chat_request_during_a_run_is_answered_before_the_runs_next_reply(
        tmp_path, smollm2_path):
    entry = ModelEntry(id="smol", name="SmolLM2", backend="llamacpp", path=str(smollm2_path))
    manager = ModelManager(ModelRegistry(path=SHIPPED_MODELS, entries=(entry,), broken=()),
                           make_backend)
    evals = EvalStore(Store(tmp_path))
    runner = EvalRunner(manager, evals)
    many = make_set("many", [EvalPrompt(f"Tell me a fact about the number {n}.")
                             for n in range(6)])
    run_id = runner.start(USER, many, [("smol", SHORT),
                                       ("smol", GenParams(SamplingSettings(temperature=0.5, seed=1, max_new_tokens=24)))])
    try:
        assert until(lambda: any(r.state == "done" for r in evals.replies(run_id)),
                     RUN_GUARD_S)
        before = evals.replies(run_id)
        ended = sum(r.state != "running" for r in before)
        in_progress = sum(r.state == "running" for r in before)
        chat = greedy(96)
        last = None
        with manager.start([("smol", [Message("user", STORY_PROMPT)], chat)],
                           threading.Event()) as replies:
            for _, event in replies:
                assert not isinstance(event, Exception), event
                if isinstance(event, Chunk) and event.finish_reason:
                    last = event
        after = sum(r.state != "running" for r in evals.replies(run_id))
        assert last is not None and last.usage.completion_tokens == 96
        # The two replies running when the person asked may end meanwhile; no other may.
        assert after <= ended + in_progress, (ended, in_progress, after)
        assert runner.wait(run_id, RUN_GUARD_S)
        assert len([r for r in evals.replies(run_id) if r.state == "done"]) == 12
    finally:
        runner.close()
        manager.unload_all()


def test_an_app_killed_mid_run_resumes_and_finishes_without_duplicates(tmp_path, smollm2_path):
    # Two llama.cpp entries on two copies of one file (entries on the same file would share
    # its weights, and both fit), and a budget that holds one: the run goes entry by entry,
    # so exactly one reply is in progress when the app is killed.
    registry = tmp_path / "models.yaml"
    copies = {name: tmp_path / f"{name}.gguf" for name in ("smol-a", "smol-b")}
    for copy in copies.values():
        shutil.copyfile(smollm2_path, copy)
    registry.write_text("models:\n" + "".join(
        f"  - {{id: {name}, name: {name}, backend: llamacpp, path: '{path}',"
        " context_length: 1024, parallel: 1}\n" for name, path in copies.items()))
    data = tmp_path / "data"
    manager = ModelManager(load_registry(registry), make_backend, MemoryBudget.parse("300MB"))
    store = Store(data)
    runner = EvalRunner(manager, EvalStore(store))
    story = greedy(48)
    candidates = runner.candidates([("smol-a", story), ("smol-b", story)])
    prompts = [EvalPrompt(f"Write a story about a {animal}.") for animal in
               ("cat", "dog", "horse", "goat")]
    run_id = EvalStore(store).create_run(USER, "stories", prompts, candidates)
    store.close()
    args = ["--models", str(registry), "--data-dir", str(data), "--max-memory", "300MB",
            "--model", "smol-a"]

    def rows() -> list[tuple]:
        with sqlite3.connect(data / DB_NAME) as db:
            return db.execute("SELECT prompt, candidate, state, attempts, finished FROM"
                              " eval_replies WHERE run_id = ?", (run_id,)).fetchall()

    app = start_app(args)  # resumes the "running" run it finds
    try:
        assert until(lambda: sum(r[2] == "done" for r in rows()) >= 2
                     and any(r[2] == "running" for r in rows()), RUN_GUARD_S), rows()
        os.kill(app.process.pid, signal.SIGKILL)
        app.process.wait(SAFETY_S)
    finally:
        if app.process.poll() is None:
            app.process.kill()
    at_kill = rows()
    kept = {(p, c) for p, c, state, *_ in at_kill if state == "done"}
    assert sum(state == "running" for _, _, state, *_ in at_kill) == 1
    restarted = time.time()
    app = start_app(args)
    try:
        def state() -> str:
            with sqlite3.connect(data / DB_NAME) as db:
                return db.execute("SELECT state FROM eval_runs WHERE id = ?",
                                  (run_id,)).fetchone()[0]
        assert until(lambda: state() == "done", RUN_GUARD_S), (state(), rows())
    finally:
        app.process.terminate()
        try:
            app.process.wait(SAFETY_S)
        except subprocess.TimeoutExpired:
            app.process.kill()
    final = rows()
    assert sorted((p, c) for p, c, *_ in final) == [(p, c) for p in range(4) for c in range(2)]
    assert all(state == "done" for _, _, state, *_ in final)
    redone = sum(attempts - 1 for *_, attempts, _ in final)
    assert redone == 1, final  # only the reply in progress at the kill
    # What was done before the kill was kept, not asked again.
    assert all(finished < restarted for p, c, _, _, finished in final if (p, c) in kept)
