"""A judge model votes on a run's pairs through the fixed rubric (chatcore/evaluate/rubric.py), in
both orders, in the background lane; its votes are stored under its model id, apart from
the person's."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from backends.base import GenParams
from backends.sampling import SamplingSettings
from chatcore.evaluate.results import RunResults
from chatcore.evaluate.store import EvalStore, EvalVote
from chatcore.evaluate.rubric import combine, judge_messages, parse_verdict
from chatcore.generation.manager import ModelManager
from chatcore.generation.replies import ReplyRequest

log = logging.getLogger(__name__)

# Greedy, so a judge's verdict on the same pair is the same every time.
JUDGE_PARAMS = GenParams(SamplingSettings(temperature=0.0, max_new_tokens=384))


@dataclass
class JudgeProgress:
    judge: str
    done: int
    total: int
    running: bool
    error: str = ""


class JudgeRunner:
    def __init__(self, manager: ModelManager, evals: EvalStore) -> None:
        self.manager = manager
        self.evals = evals
        self._lock = threading.Lock()
        self._jobs: dict[int, tuple[threading.Thread, threading.Event, JudgeProgress]] = {}

    def start(self, user: str, run_id: int, judge: str) -> None:
        """Judge every pair of the run whose replies are done and that this judge has not
        voted on yet; a second call while one runs does nothing."""
        self.manager.entry(judge)  # an unknown id fails here, in the caller
        run = self.evals.run(user, run_id)
        with self._lock:
            old = self._jobs.get(run_id)
            if old is not None and old[0].is_alive():
                return
            stop = threading.Event()
            progress = JudgeProgress(judge, 0, 0, True)
            thread = threading.Thread(target=self._judge, args=(user, run, judge, stop, progress),
                                      name=f"eval-judge-{run_id}", daemon=True)
            self._jobs[run_id] = (thread, stop, progress)
        thread.start()

    def progress(self, run_id: int) -> JudgeProgress | None:
        with self._lock:
            job = self._jobs.get(run_id)
        return job[2] if job else None

    def wait(self, run_id: int, timeout: float | None = None) -> bool:
        with self._lock:
            job = self._jobs.get(run_id)
        if job is None:
            return True
        job[0].join(timeout)
        return not job[0].is_alive()

    def stop(self, run_id: int) -> None:
        with self._lock:
            job = self._jobs.get(run_id)
        if job is not None:
            job[1].set()
            job[0].join()

    def close(self) -> None:
        with self._lock:
            runs = list(self._jobs)
        for run_id in runs:
            self.stop(run_id)

    def _judge(self, user: str, run, judge: str, stop: threading.Event,
               progress: JudgeProgress) -> None:
        try:
            results = RunResults.load(self.evals, run)
            voted = {v.key for v in results.judge_votes.get(judge, [])}
            todo = [item for item in results.queue() if (item.prompt, *item.pair) not in voted]
            progress.total = len(todo)
            for item in todo:
                a, b = item.pair
                first = self._verdict(user, results, item.prompt, a, b, judge, stop)
                second = self._verdict(user, results, item.prompt, b, a, judge, stop)
                if stop.is_set():
                    return
                self.evals.add_vote(run.id, EvalVote(item.prompt, a, b, combine(first, second),
                                                     judge=judge, shown_first=a))
                progress.done += 1
        except Exception as exc:  # noqa: BLE001 - shown beside the judge's table, logged
            log.exception("judging run %s with %s failed", run.id, judge)
            progress.error = str(exc)
        finally:
            progress.running = False

    def _verdict(self, user: str, results: RunResults, prompt: int, first: int, second: int,
                 judge: str, stop: threading.Event) -> str | None:
        if stop.is_set() or not self.manager.wait_quiet(stop):
            return None
        text = results.run.prompts[prompt]
        messages = judge_messages(text.text, results.replies[(prompt, first)].content,
                                  results.replies[(prompt, second)].content, text.reference)
        answer, problem = "", None
        cancel = threading.Event()  # closing the reply sets it; `stop` is the judge's own
        with self.manager.start([ReplyRequest(judge, messages, JUDGE_PARAMS, True, user=user)],
                                cancel) as replies:
            for _, event in replies:
                if stop.is_set():
                    cancel.set()
                if isinstance(event, Exception):
                    problem = event
            answer = replies.live[0].text
        if problem is not None:
            raise problem
        return parse_verdict(answer)
