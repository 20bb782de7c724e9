"""Evaluation runs in SQLite: prompt sets, runs, every reply with its figures, and votes.

A run keeps its own copy of the prompts and of each candidate's model, name and settings,
so it still opens (read-only) after its set or a model entry is deleted. A reply row is
written as "running" when the reply begins and becomes "done" or "failed" when it ends, each
write its own committed transaction: a killed app finds at most the replies that were in
progress still "running", and redoes just those.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from chatcore.evaluate.prompt_sets import EvalPrompt, PromptSet, builtin_sets, make_set, name_key
from chatcore.conversations.store import Store

RUN_STATES = ("running", "paused", "cancelled", "done", "refused")
VOTE_OUTCOMES = ("a", "b", "tie", "bad")
PERSON = ""  # the `judge` of a person's vote; a judge model's vote carries its model id


class EvalNotFound(Exception):
    """No such run or prompt set for this user."""


class SetNameTaken(Exception):
    """A prompt set cannot take this name: `taken_by` (one of the user's sets, or a built-in
    one when `builtin`) already has it. Nothing was saved."""

    def __init__(self, taken_by: str, builtin: bool) -> None:
        whose = "a built-in set" if builtin else "another of your sets"
        super().__init__(f"{whose} is already called {taken_by!r}; pick another name")
        self.taken_by, self.builtin = taken_by, builtin


@dataclass(frozen=True)
class Candidate:
    """One contestant: a model entry with its own sampling settings. The same weights
    through two engines, or one model with two settings, are two candidates."""

    model: str
    label: str  # the name shown once revealed; unique within the run
    params: dict  # SamplingSettings.model_dump()
    memory_bytes: int | None = None  # the planner's estimate when the run was planned
    device: str = "cpu"


@dataclass
class EvalReply:
    prompt: int
    candidate: int
    state: str  # running, done, failed
    content: str = ""
    time_to_first_token: float | None = None
    tokens_per_second: float | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    error: str = ""
    attempts: int = 0
    started: float | None = None
    finished: float | None = None


@dataclass(frozen=True)
class EvalVote:
    prompt: int
    a: int  # candidate indices, a < b: stored votes do not depend on the shown order
    b: int
    outcome: str  # a, b, tie, bad
    judge: str = PERSON
    shown_first: int = 0  # the candidate shown as "A"
    created: float = field(default_factory=time.time)

    @property
    def key(self) -> tuple[int, int, int]:
        return self.prompt, self.a, self.b


@dataclass
class EvalRun:
    id: int
    set_name: str
    prompts: list[EvalPrompt]
    candidates: list[Candidate]
    system_prompt: str
    state: str
    note: str
    created: float
    updated: float

    @property
    def total(self) -> int:
        return len(self.prompts) * len(self.candidates)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "cancelled", "refused")


_REPLY_COLUMNS = ("prompt", "candidate", "state", "content", "time_to_first_token",
                  "tokens_per_second", "completion_tokens", "finish_reason", "error",
                  "attempts", "started", "finished")


class EvalStore:
    """The evaluation tables of the app's one database (see chatcore/conversations/store.py)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # -- prompt sets -----------------------------------------------------------------------
    def prompt_sets(self, user: str) -> list[PromptSet]:
        with self._store.transaction() as db:
            rows = db.execute("SELECT name, prompts FROM prompt_sets WHERE user = ?"
                              " ORDER BY name COLLATE NOCASE", (user,)).fetchall()
        return [make_set(name, _prompts(prompts)) for name, prompts in rows]

    def save_prompt_set(self, user: str, prompt_set: PromptSet, old_name: str = "") -> None:
        """Create the set, or with `old_name` update the set of that name (renaming it).

        A name is the user's for one set only (by name_key, so "thesis " is "Thesis") and is
        never a built-in set's: a clash raises SetNameTaken and changes nothing, so saving
        or renaming can never replace another set. Check and write are one transaction. A
        set saved under its own unchanged name is always updated, even where older versions
        let a near-twin name in beside it."""
        now = time.time()
        prompts = json.dumps([asdict(p) for p in prompt_set.prompts], ensure_ascii=False)
        with self._store.transaction() as db:
            rows = db.execute("SELECT id, name FROM prompt_sets WHERE user = ?",
                              (user,)).fetchall()
            own = next((row_id for row_id, name in rows if old_name and name == old_name),
                       None)
            if own is None or prompt_set.name != old_name:
                _check_free(prompt_set.name, [name for row_id, name in rows if row_id != own])
            if own is None:
                db.execute("INSERT INTO prompt_sets (user, name, prompts, created, updated)"
                           " VALUES (?, ?, ?, ?, ?)", (user, prompt_set.name, prompts, now, now))
            else:
                db.execute("UPDATE prompt_sets SET name = ?, prompts = ?, updated = ?"
                           " WHERE id = ?", (prompt_set.name, prompts, now, own))

    def delete_prompt_set(self, user: str, name: str) -> None:
        with self._store.transaction() as db:
            cursor = db.execute("DELETE FROM prompt_sets WHERE user = ? AND name = ?",
                                (user, name))
        if cursor.rowcount == 0:
            raise EvalNotFound(f"there is no prompt set called {name!r}")

    # -- runs ------------------------------------------------------------------------------
    def create_run(self, user: str, set_name: str, prompts: list[EvalPrompt],
                   candidates: list[Candidate], system_prompt: str = "",
                   state: str = "running", note: str = "") -> int:
        now = time.time()
        with self._store.transaction() as db:
            cursor = db.execute(
                "INSERT INTO eval_runs (user, set_name, prompts, candidates, system_prompt,"
                " state, note, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (user, set_name, json.dumps([asdict(p) for p in prompts], ensure_ascii=False),
                 json.dumps([asdict(c) for c in candidates], ensure_ascii=False),
                 system_prompt, state, note, now, now))
            return int(cursor.lastrowid)

    def runs(self, user: str) -> list[EvalRun]:
        """Newest first."""
        with self._store.transaction() as db:
            rows = db.execute(f"SELECT {_RUN_COLUMNS} FROM eval_runs WHERE user = ?"
                              " ORDER BY id DESC", (user,)).fetchall()
        return [_run(row) for row in rows]

    def run(self, user: str, run_id: int) -> EvalRun:
        with self._store.transaction() as db:
            row = db.execute(f"SELECT {_RUN_COLUMNS} FROM eval_runs WHERE id = ? AND user = ?",
                             (run_id, user)).fetchone()
        if row is None:
            raise EvalNotFound(f"evaluation run {run_id} does not exist")
        return _run(row)

    def runs_in_state(self, state: str) -> list[tuple[str, int]]:
        """(user, run id) of every user's runs in `state`, oldest first: what to resume."""
        with self._store.transaction() as db:
            return [tuple(r) for r in db.execute(
                "SELECT user, id FROM eval_runs WHERE state = ? ORDER BY id", (state,))]

    def set_state(self, user: str, run_id: int, state: str, note: str | None = None) -> None:
        if state not in RUN_STATES:
            raise ValueError(f"run state {state!r} is none of {RUN_STATES}")
        with self._store.transaction() as db:
            cursor = db.execute(
                "UPDATE eval_runs SET state = ?, note = COALESCE(?, note), updated = ?"
                " WHERE id = ? AND user = ?", (state, note, time.time(), run_id, user))
        if cursor.rowcount == 0:
            raise EvalNotFound(f"evaluation run {run_id} does not exist")

    # -- replies ---------------------------------------------------------------------------
    def begin_reply(self, run_id: int, prompt: int, candidate: int) -> None:
        """Mark a reply as in progress, counting the attempt (a redone reply has two)."""
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO eval_replies (run_id, prompt, candidate, state, attempts, started)"
                " VALUES (?, ?, ?, 'running', 1, ?) ON CONFLICT (run_id, prompt, candidate)"
                " DO UPDATE SET state = 'running', attempts = attempts + 1,"
                " started = excluded.started", (run_id, prompt, candidate, time.time()))

    def finish_reply(self, run_id: int, reply: EvalReply) -> None:
        """Store a reply that ended, done or failed (one row per prompt and candidate)."""
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO eval_replies (run_id, prompt, candidate, state, content,"
                " time_to_first_token, tokens_per_second, completion_tokens, finish_reason,"
                " error, attempts, started, finished) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (run_id, prompt, candidate) DO UPDATE SET state = excluded.state,"
                " content = excluded.content, time_to_first_token ="
                " excluded.time_to_first_token, tokens_per_second = excluded.tokens_per_second,"
                " completion_tokens = excluded.completion_tokens, finish_reason ="
                " excluded.finish_reason, error = excluded.error, finished = excluded.finished",
                (run_id, reply.prompt, reply.candidate, reply.state, reply.content,
                 reply.time_to_first_token, reply.tokens_per_second, reply.completion_tokens,
                 reply.finish_reason, reply.error, max(reply.attempts, 1), reply.started,
                 time.time()))

    def replies(self, run_id: int) -> list[EvalReply]:
        with self._store.transaction() as db:
            rows = db.execute(f"SELECT {', '.join(_REPLY_COLUMNS)} FROM eval_replies"
                              " WHERE run_id = ? ORDER BY prompt, candidate", (run_id,))
            return [EvalReply(*row) for row in rows.fetchall()]

    # -- votes -----------------------------------------------------------------------------
    def add_vote(self, run_id: int, vote: EvalVote) -> None:
        """A vote on one pair of one prompt; voting again on the pair replaces it."""
        if vote.outcome not in VOTE_OUTCOMES:
            raise ValueError(f"vote outcome {vote.outcome!r} is none of {VOTE_OUTCOMES}")
        if not vote.a < vote.b:
            raise ValueError(f"a vote's candidates are stored in order: {vote.a} < {vote.b}")
        with self._store.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO eval_votes (run_id, prompt, a, b, judge, outcome,"
                " shown_first, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, vote.prompt, vote.a, vote.b, vote.judge, vote.outcome,
                 vote.shown_first, vote.created))

    def votes(self, run_id: int, judge: str | None = PERSON) -> list[EvalVote]:
        """A person's votes (the default), one judge's, or with judge=None every vote."""
        sql = ("SELECT prompt, a, b, outcome, judge, shown_first, created FROM eval_votes"
               " WHERE run_id = ?")
        args: tuple = (run_id,)
        if judge is not None:
            sql, args = sql + " AND judge = ?", (run_id, judge)
        with self._store.transaction() as db:
            return [EvalVote(*row) for row in db.execute(sql + " ORDER BY created", args)]


def _check_free(name: str, others: list[str]) -> None:
    """SetNameTaken if a built-in set or one of `others` has `name` (by name_key)."""
    key = name_key(name)
    for builtin in builtin_sets():
        if name_key(builtin.name) == key:
            raise SetNameTaken(builtin.name, builtin=True)
    for other in others:
        if name_key(other) == key:
            raise SetNameTaken(other, builtin=False)


_RUN_COLUMNS = ("id, set_name, prompts, candidates, system_prompt, state, note, created,"
                " updated")


def _prompts(text: str) -> list[EvalPrompt]:
    return [EvalPrompt(**p) for p in json.loads(text)]


def _run(row: tuple) -> EvalRun:
    run_id, set_name, prompts, candidates, system_prompt, state, note, created, updated = row
    return EvalRun(run_id, set_name, _prompts(prompts),
                   [Candidate(**c) for c in json.loads(candidates)], system_prompt, state, note,
                   created, updated)
