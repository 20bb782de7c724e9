"""Unattended evaluation runs: every prompt of a set through every candidate, in the
background, stored as it goes, resumed after a restart, scheduled to fit memory.

Candidates whose models fit the memory budget together run side by side (one reply at a
time each, sharing the CPU; replies to one llama.cpp model batch). Models that do not fit
together run in waves: load, every prompt, unload, next wave, instead of evicting each
other on every reply. Each reply waits until no person's reply is running or waiting (the
manager's background lane), so chat and Compare stay responsive during a run.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from backends.base import BackendError, GenParams, Message
from backends.sampling import stored
from chatcore.generation.context import ContextOverflow, with_system
from chatcore.evaluate.judge import JudgeRunner
from chatcore.evaluate.store import Candidate, EvalReply, EvalRun, EvalStore
from chatcore.generation.manager import ModelBusy, ModelManager, ModelUnavailable, UnknownModel
from chatcore.generation.memory import format_bytes
from chatcore.evaluate.prompt_sets import PromptSet
from chatcore.generation.replies import ReplyRequest
from chatcore.conversations.service import stored_reply

log = logging.getLogger(__name__)

MIN_CANDIDATES, MAX_CANDIDATES = 2, 4


class RunRefused(Exception):
    """A run that cannot start: its reason names the model and the planner's numbers."""


@dataclass(frozen=True)
class RunProgress:
    state: str
    done: int  # replies that ended, failed ones included
    failed: int
    total: int
    current: tuple[str, ...]  # labels of the candidates answering now
    seconds_left: float | None


def plan_waves(candidates: Sequence[Candidate], limits: dict[str, int],
               shared: Mapping[str, tuple[object, int]] | None = None) -> list[list[int]]:
    """Candidate indices grouped into waves whose models fit the budget together.

    Models are taken in the order they first appear and added to the current wave while the
    estimates on each device add up to at most that device's limit; every candidate on one
    model is in that model's wave (one load serves them all). `shared` gives a model's
    (key, bytes) of base weights it shares (a base and the base with an adapter): in one
    wave they are counted once."""
    shared = shared or {}
    held: set = set()
    by_model: dict[str, list[int]] = {}
    for index, candidate in enumerate(candidates):
        by_model.setdefault(candidate.model, []).append(index)
    waves: list[list[int]] = []
    used: dict[str, int] = {}
    for indices in by_model.values():
        candidate = candidates[indices[0]]
        need, device = candidate.memory_bytes or 0, candidate.device
        base = shared.get(candidate.model)
        saved = base[1] if base and base[0] in held else 0
        if not waves or used.get(device, 0) + need - saved > limits.get(device, 0):
            waves.append([])
            used, held, saved = {}, set(), 0
        waves[-1] += indices
        used[device] = used.get(device, 0) + need - saved
        held |= {base[0]} if base else set()
    return [sorted(wave) for wave in waves]


def estimate_seconds_left(replies: Sequence[EvalReply], total: int, answering: int,
                          now: float) -> float | None:
    """The time a run has left, from measured progress: a finished reply's mean time for
    each reply not begun, and what that mean leaves of each reply under way (so the figure
    falls while they run, not only when one ends), shared by the `answering` candidates.
    None before a reply has finished or once under a second is left to estimate."""
    spans = [r.finished - r.started for r in replies
             if r.state == "done" and r.started and r.finished]
    ended = sum(r.state != "running" for r in replies)
    if not spans or ended >= total:
        return None
    mean, parallel = sum(spans) / len(spans), max(1, answering)
    # The newest running rows are the ones under way; older ones were left by a pause.
    under_way = sorted((r.started for r in replies if r.state == "running" and r.started),
                       reverse=True)[:parallel]
    work = mean * (total - ended - len(under_way)) + sum(max(0.0, mean - (now - started))
                                                         for started in under_way)
    return work / parallel if work / parallel >= 1 else None


class _Job:
    """One run being driven: its thread, and the event that stops it and its replies."""

    def __init__(self, user: str, run_id: int) -> None:
        self.user, self.run_id = user, run_id
        self.stop = threading.Event()
        self.current: dict[int, str] = {}  # candidate index -> label, answering now
        self.thread: threading.Thread | None = None
        self._replies: set[threading.Event] = set()  # each reply's own cancel event
        self._lock = threading.Lock()

    def halt(self) -> None:
        with self._lock:
            self.stop.set()
            for cancel in self._replies:
                cancel.set()

    def reply_cancel(self) -> threading.Event:
        """A cancel event for one reply (closing a reply sets its own), set by `halt`."""
        cancel = threading.Event()
        with self._lock:
            if self.stop.is_set():
                cancel.set()
            self._replies.add(cancel)
        return cancel

    def done_with(self, cancel: threading.Event) -> None:
        with self._lock:
            self._replies.discard(cancel)


class EvalRunner:
    def __init__(self, manager: ModelManager, evals: EvalStore) -> None:
        self.manager = manager
        self.evals = evals
        self.judges = JudgeRunner(manager, evals)
        self._jobs: dict[int, _Job] = {}
        self._lock = threading.Lock()

    # -- planning --------------------------------------------------------------------------
    def candidates(self, setups: Sequence[tuple[str, GenParams]]) -> list[Candidate]:
        """The run's candidates with the planner's estimates; refused before anything runs
        when there are too few or too many, or a model cannot fit even alone."""
        if not MIN_CANDIDATES <= len(setups) <= MAX_CANDIDATES:
            raise RunRefused(f"a run compares {MIN_CANDIDATES} to {MAX_CANDIDATES} models; "
                             f"{len(setups)} chosen")
        found = []
        for model_id, params in setups:
            entry = self.manager.entry(model_id)
            if entry.is_remote:
                found.append(Candidate(model_id, entry.display_name, params.sampling.model_dump(), 0,
                                           "remote"))
                continue
            try:
                need, device = self.manager.plan(model_id)
            except ModelUnavailable as exc:
                raise RunRefused(f"{model_id} cannot run: {exc}") from exc
            limit = self.manager.room(device).limit
            if need > limit:
                raise RunRefused(
                    f"{model_id} cannot fit even alone: it needs {format_bytes(need)} and the "
                    f"budget on {device} is {format_bytes(limit)} (raise --max-memory, or pick "
                    "a smaller quantization)")
            found.append(Candidate(model_id, entry.display_name, params.sampling.model_dump(), need,
                                       device))
        return _distinct_labels(found)

    def start(self, user: str, prompt_set: PromptSet,
              setups: Sequence[tuple[str, GenParams]], system_prompt: str = "") -> int:
        """Plan and start a run of `prompt_set` over the candidates; returns its id."""
        candidates = self.candidates(setups)
        run_id = self.evals.create_run(user, prompt_set.name, list(prompt_set.prompts),
                                       candidates, system_prompt)
        self._launch(user, run_id)
        return run_id

    def resume_all(self) -> list[int]:
        """Go on with every run a stopped app left running (at start-up)."""
        resumed = []
        for user, run_id in self.evals.runs_in_state("running"):
            log.info("resuming evaluation run %s", run_id)
            self._launch(user, run_id)
            resumed.append(run_id)
        return resumed

    # -- control ---------------------------------------------------------------------------
    def pause(self, user: str, run_id: int) -> None:
        """Stop now; the reply in progress is dropped and redone on resume."""
        self.evals.set_state(user, run_id, "paused")
        self._halt(run_id)

    def resume(self, user: str, run_id: int) -> None:
        run = self.evals.run(user, run_id)
        if run.state not in ("paused", "running"):
            raise RunRefused(f"run {run_id} is {run.state}: only a paused run resumes")
        self.evals.set_state(user, run_id, "running", note="")
        self._launch(user, run_id)

    def cancel(self, user: str, run_id: int) -> None:
        """Stop for good; what was stored stays reviewable."""
        self.evals.set_state(user, run_id, "cancelled")
        self._halt(run_id)

    def close(self) -> None:
        """Stop every run's replies (app shutdown); their state stays "running", so the
        next start resumes them."""
        self.judges.close()
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.halt()
        for job in jobs:
            if job.thread is not None:
                job.thread.join()

    def wait(self, run_id: int, timeout: float | None = None) -> bool:
        """Wait for the run's thread to end; False after `timeout` (tests and scripts)."""
        with self._lock:
            job = self._jobs.get(run_id)
        if job is None or job.thread is None:
            return True
        job.thread.join(timeout)
        return not job.thread.is_alive()

    def progress(self, user: str, run_id: int) -> RunProgress:
        run = self.evals.run(user, run_id)
        rows = self.evals.replies(run_id)
        replies = [r for r in rows if r.state != "running"]
        failed = sum(r.state == "failed" for r in replies)
        with self._lock:
            job = self._jobs.get(run_id)
            current = tuple(job.current.values()) if job else ()
        left = estimate_seconds_left(rows, run.total, len(current), time.time()) \
            if run.state == "running" else None
        return RunProgress(run.state, len(replies), failed, run.total, current, left)

    def _halt(self, run_id: int) -> None:
        with self._lock:
            job = self._jobs.get(run_id)
        if job is not None:
            job.halt()
            if job.thread is not None and job.thread is not threading.current_thread():
                job.thread.join()

    def _launch(self, user: str, run_id: int) -> None:
        with self._lock:
            old = self._jobs.get(run_id)
            if old is not None and old.thread is not None and old.thread.is_alive():
                return
            job = _Job(user, run_id)
            job.thread = threading.Thread(target=self._drive, args=(job,),
                                          name=f"eval-run-{run_id}", daemon=True)
            self._jobs[run_id] = job
        job.thread.start()

    # -- the work --------------------------------------------------------------------------
    def _drive(self, job: _Job) -> None:
        try:
            run = self.evals.run(job.user, job.run_id)
            ended = {(r.prompt, r.candidate) for r in self.evals.replies(job.run_id)
                     if r.state != "running"}
            limits = {c.device: self.manager.room(c.device).limit for c in run.candidates
                      if c.device != "remote"}
            shared = {c.model: found for c in run.candidates if c.device != "remote"
                      and (found := self.manager.shared_weights(c.model))}
            for wave in plan_waves(run.candidates, limits, shared):
                if job.stop.is_set():
                    return
                self._run_wave(job, run, wave, ended)
            if not job.stop.is_set():
                self.evals.set_state(job.user, job.run_id, "done")
                log.info("evaluation run %s is done", job.run_id)
        except Exception:  # noqa: BLE001 - a run must not take the app down; logged in full
            log.exception("evaluation run %s failed", job.run_id)
            self.evals.set_state(job.user, job.run_id, "paused",
                                 "stopped by an internal error (see the log); resume to retry")

    def _run_wave(self, job: _Job, run: EvalRun, wave: list[int],
                  ended: set[tuple[int, int]]) -> None:
        """Every remaining reply of the wave's candidates, one thread per candidate; then the
        models this wave loaded are unloaded, so the next wave has the room."""
        before = set(self.manager.resident())
        workers = [threading.Thread(target=self._answer_all, args=(job, run, c, ended),
                                    name=f"eval-{job.run_id}-{c}", daemon=True) for c in wave]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        for model in {run.candidates[c].model for c in wave} - before:
            try:
                self.manager.unload(model)
            except ModelBusy:  # a person is using it now: it stays, LRU eviction applies
                pass

    def _answer_all(self, job: _Job, run: EvalRun, index: int,
                    ended: set[tuple[int, int]]) -> None:
        candidate = run.candidates[index]
        params = GenParams(stored(candidate.params))
        todo = [p for p in range(len(run.prompts)) if (p, index) not in ended]
        for position, prompt in enumerate(todo):
            if not self.manager.wait_quiet(job.stop):
                return
            with self._lock:
                job.current[index] = candidate.label
            try:
                failure = self._answer(job, run, prompt, index, params)
            finally:
                with self._lock:
                    job.current.pop(index, None)
            if failure:
                for rest in todo[position + 1:]:
                    self.evals.finish_reply(run.id, EvalReply(
                        rest, index, "failed", error=f"not run: {failure}"))
                return

    def _answer(self, job: _Job, run: EvalRun, prompt: int, index: int,
                params: GenParams) -> str:
        """One reply, stored when it ends. Returns why the model failed ("" when it did not
        fail as a model: a prompt too long for it fails only that reply)."""
        candidate = run.candidates[index]
        self.evals.begin_reply(run.id, prompt, index)
        started = time.time()
        messages = with_system(run.system_prompt, [Message("user", run.prompts[prompt].text)])
        problem: Exception | None = None
        cancel = job.reply_cancel()
        try:
            replies = self.manager.start(
                [ReplyRequest(candidate.model, messages, params, True, user=job.user)], cancel)
        except (UnknownModel, ModelUnavailable) as exc:  # its entry was removed or broke
            job.done_with(cancel)
            reason = f"{candidate.model} is no longer usable: {exc}"
            self.evals.finish_reply(run.id, EvalReply(prompt, index, "failed", error=reason,
                                                      started=started))
            return reason
        try:
            with replies:
                for _, event in replies:
                    if isinstance(event, Exception):
                        problem = event
                live = replies.live[0]
        finally:
            job.done_with(cancel)
        if job.stop.is_set() and problem is None and live.stopped:
            return ""  # paused, cancelled or shut down: the row stays "running", redone later
        if problem is not None:
            reason = str(problem)
            self.evals.finish_reply(run.id, EvalReply(prompt, index, "failed", live.text,
                                                      error=reason, started=started))
            model_failed = isinstance(problem, (ModelUnavailable, BackendError)) \
                and not isinstance(problem, ContextOverflow)
            return reason if model_failed else ""
        message = stored_reply(live)
        self.evals.finish_reply(run.id, EvalReply(
            prompt, index, "done", message.content, message.time_to_first_token,
            message.tokens_per_second, message.completion_tokens, message.finish_reason,
            started=started))
        return ""


def _distinct_labels(candidates: list[Candidate]) -> list[Candidate]:
    """Two candidates on one model get their settings in the name, so they can be told
    apart once revealed."""
    labels = [c.label for c in candidates]
    out = []
    for index, candidate in enumerate(candidates):
        if labels.count(candidate.label) > 1:
            settings = candidate.params
            label = (f"{candidate.label} (temperature {settings['temperature']}, "
                     f"top p {settings['top_p']})")
            if [c.params for c in candidates if c.label == candidate.label].count(settings) > 1:
                label = f"{candidate.label} #{labels[:index].count(candidate.label) + 1}"
            candidate = Candidate(candidate.model, label, candidate.params,
                                  candidate.memory_bytes, candidate.device)
        out.append(candidate)
    return out
