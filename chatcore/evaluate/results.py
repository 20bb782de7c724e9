"""What a run's votes say: the review queue over its stored replies, and the ratings, the
"which to choose" table and the judge's agreement, in one place for the page and the report.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from chatcore.compare.ratings import MIN_GAMES_FOR_INTERVAL
from chatcore.evaluate.ratings import (
    Choice,
    PairVote,
    Rating,
    RatingTable,
    choices,
    rating_tables,
    style_of,
)
from chatcore.evaluate.store import PERSON, EvalReply, EvalRun, EvalStore, EvalVote
from chatcore.i18n import Texts
from chatcore.evaluate.rubric import Agreement, agreement
from chatcore.evaluate.review_queue import ReviewItem, next_open, review_queue, reviewable



def interval_text(rating: Rating, texts: Texts) -> str:
    """A rating's 95% interval in words, or how many votes it still needs, in `texts`'
    language (the report passes English)."""
    if rating.games < MIN_GAMES_FOR_INTERVAL:
        return texts("evaluate.verdict.needs", n=MIN_GAMES_FOR_INTERVAL)
    return texts("evaluate.verdict.interval", low=f"{rating.low:.0f}",
                 high=f"{rating.high:.0f}")


@dataclass
class RunResults:
    run: EvalRun
    replies: dict[tuple[int, int], EvalReply]  # (prompt, candidate) -> reply
    votes: list[EvalVote]  # the person's
    judge_votes: dict[str, list[EvalVote]]  # judge model id -> its votes

    @classmethod
    def load(cls, evals: EvalStore, run: EvalRun) -> RunResults:
        replies = {(r.prompt, r.candidate): r for r in evals.replies(run.id)}
        everyone = evals.votes(run.id, judge=None)
        judges: dict[str, list[EvalVote]] = {}
        for vote in everyone:
            if vote.judge != PERSON:
                judges.setdefault(vote.judge, []).append(vote)
        return cls(run, replies, [v for v in everyone if v.judge == PERSON], judges)

    # -- the review queue --------------------------------------------------------------------
    def ready(self, prompt: int, candidate: int) -> bool:
        reply = self.replies.get((prompt, candidate))
        return reply is not None and reply.state == "done"

    def queue(self) -> list[ReviewItem]:
        """Pairs whose two replies are done, in the balanced round-robin order; the seed is
        the run's id, so the order is the same after a restart."""
        full = review_queue(len(self.run.prompts), len(self.run.candidates), seed=self.run.id)
        return reviewable(full, self.ready)

    def next_item(self) -> tuple[ReviewItem | None, int, int]:
        """The next pair to vote on (None when all are voted), votes cast, pairs ready."""
        queue = self.queue()
        voted = {v.key for v in self.votes}
        index = next_open(queue, voted)
        done = sum(1 for item in queue if (item.prompt, *item.pair) in voted)
        return (None if index is None else queue[index]), done, len(queue)

    # -- ratings -----------------------------------------------------------------------------
    def pair_votes(self, votes: list[EvalVote]) -> list[PairVote]:
        labels = [c.label for c in self.run.candidates]
        found = []
        for vote in votes:
            a, b = self.replies.get((vote.prompt, vote.a)), self.replies.get((vote.prompt, vote.b))
            if a is None or b is None:
                continue
            found.append(PairVote(labels[vote.a], labels[vote.b],
                                  "tie" if vote.outcome == "bad" else vote.outcome,
                                  self.run.prompts[vote.prompt].category,
                                  style_of(a.content), style_of(b.content)))
        return found

    def tables(self, judge: str = PERSON) -> list[RatingTable]:
        votes = self.votes if judge == PERSON else self.judge_votes.get(judge, [])
        return rating_tables(self.pair_votes(votes), seed=self.run.id)

    def speed(self) -> dict[str, float]:
        """Median decode speed of each candidate's replies in this run."""
        found = {}
        for index, candidate in enumerate(self.run.candidates):
            rates = [r.tokens_per_second for (p, c), r in self.replies.items()
                     if c == index and r.tokens_per_second]
            if rates:
                found[candidate.label] = statistics.median(rates)
        return found

    def memory(self) -> dict[str, int]:
        return {c.label: c.memory_bytes for c in self.run.candidates if c.memory_bytes}

    def choices(self, tables: list[RatingTable], texts: Texts) -> list[tuple[Choice, str]]:
        """One per table, with whether the best is clearly ahead, in words in `texts`'
        language (the report passes English). With fewer than MIN_GAMES_FOR_INTERVAL games it never is:
        a bootstrap over one or two votes gives a zero-width interval, which would look certain."""
        found = []
        for table, choice in zip(tables, choices(tables, self.speed(), self.memory())):
            games = next((r.games for r in table.plain if r.model == choice.best), 0)
            verdict = texts("evaluate.verdict.not_yet", n=MIN_GAMES_FOR_INTERVAL) if games < MIN_GAMES_FOR_INTERVAL \
                else texts("evaluate.verdict.overlap") if choice.overlaps_next \
                else texts("evaluate.verdict.yes")
            found.append((choice, verdict))
        return found

    def agreement(self, judge: str) -> Agreement:
        return agreement({v.key: v.outcome for v in self.votes},
                         {v.key: v.outcome for v in self.judge_votes.get(judge, [])})
