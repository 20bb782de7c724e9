"""Side-by-side votes: what one vote holds, and the CSV and JSON files they export to.

A vote keeps everything needed to audit a ranking later: the prompt, every pane's model,
parameters and reply, and whether the person voted blind. Votes come from Compare (blind or
open) and from the chat, where a person prefers one of a reply's versions from two models
(always open: the names are shown; `source` "chat", with the conversation, the question and
the replies it judged). The leaderboard counts the blind and the open ones apart and can
leave the open ones out.
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field

from chatcore.compare.ratings import Battle, battles_from_vote
from chatcore.conversations.store import Store

SOURCES = ("compare", "chat")  # where a vote was cast
NO_WINNER = ("tie", "bad")  # a vote's outcomes besides the better pane's label: "A", ...
FORMAT = "local-chat/votes"


@dataclass
class VotedPane:
    label: str
    model: str
    params: dict
    reply: str
    time_to_first_token: float | None = None
    tokens_per_second: float | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    thought: str = ""  # a thinking model's thought, hidden until the vote
    thought_seconds: float | None = None
    thought_tokens: int | None = None


@dataclass
class Vote:
    prompt: str
    outcome: str  # the better pane's label, "tie", or "bad" (all bad)
    panes: list[VotedPane]
    system_prompt: str = ""
    blind: bool = False
    created: float = field(default_factory=time.time)
    id: int | None = None
    source: str = "compare"
    conversation_id: int | None = None  # a chat vote's conversation,
    question_id: int | None = None  # the question its replies answer,
    message_ids: list[int] = field(default_factory=list)  # and the replies, as the panes

    def __post_init__(self) -> None:
        labels = [pane.label for pane in self.panes]
        if self.outcome not in (*NO_WINNER, *labels):
            raise ValueError(f"vote outcome {self.outcome!r} is none of {[*labels, *NO_WINNER]}")
        if self.source not in SOURCES:
            raise ValueError(f"vote source {self.source!r} is none of {list(SOURCES)}")

    @property
    def winner(self) -> int | None:
        """Index of the better pane; None for a tie or all bad."""
        labels = [pane.label for pane in self.panes]
        return labels.index(self.outcome) if self.outcome in labels else None

    def battles(self) -> list[Battle]:
        return battles_from_vote([pane.model for pane in self.panes], self.winner)


def all_battles(votes: list[Vote]) -> list[Battle]:
    return [battle for vote in votes for battle in vote.battles()]


def votes_to_json(votes: list[Vote]) -> str:
    return json.dumps({"format": FORMAT, "version": 1, "votes": [asdict(v) for v in votes]},
                      ensure_ascii=False, indent=2)


CSV_COLUMNS = ["vote_id", "created", "blind", "source", "outcome", "prompt", "system_prompt", "label",
               "model", "result", "params", "reply", "time_to_first_token",
               "tokens_per_second", "completion_tokens", "finish_reason"]


def votes_to_csv(votes: list[Vote]) -> str:
    """One row per pane of each vote; `result` says how that pane did: win, loss or tie."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for vote in votes:
        winner = vote.winner
        for index, pane in enumerate(vote.panes):
            result = "tie" if winner is None else ("win" if index == winner else "loss")
            writer.writerow([
                vote.id, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(vote.created)),
                int(vote.blind), vote.source, vote.outcome, vote.prompt, vote.system_prompt, pane.label,
                pane.model, result, json.dumps(pane.params, sort_keys=True), pane.reply,
                pane.time_to_first_token, pane.tokens_per_second, pane.completion_tokens,
                pane.finish_reason])
    return out.getvalue()


@dataclass(frozen=True)
class VoteCounts:
    """How many of a person's votes were cast blind and how many open (names shown)."""

    blind: int
    open: int


COLUMNS = ("id, created, prompt, system_prompt, outcome, blind, panes, source, conversation_id,"
           " question_id, message_ids")


def vote_from_row(row: tuple) -> Vote:
    """A `votes` table row, as COLUMNS lists them."""
    (vote_id, created, prompt, system_prompt, outcome, blind, panes, source, conversation_id,
     question_id, message_ids) = row
    return Vote(prompt=prompt, outcome=outcome, system_prompt=system_prompt,
                blind=bool(blind), created=created, id=vote_id,
                panes=[VotedPane(**pane) for pane in json.loads(panes)], source=source,
                conversation_id=conversation_id, question_id=question_id,
                message_ids=list(json.loads(message_ids)))


class VoteStore:
    """The votes table of the app's one database (chatcore/conversations/store.py)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def add(self, user: str, vote: Vote) -> int:
        """Keep the vote; a chat vote replaces the user's earlier one on the same question
        of the same conversation (one preference per question, the latest)."""
        with self._store.transaction() as db:
            if vote.source == "chat":
                db.execute("DELETE FROM votes WHERE user = ? AND source = 'chat' AND"
                           " conversation_id = ? AND question_id = ?",
                           (user, vote.conversation_id, vote.question_id))
            cursor = db.execute(
                "INSERT INTO votes (user, created, prompt, system_prompt, outcome, blind, panes,"
                " source, conversation_id, question_id, message_ids)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (user, vote.created, vote.prompt, vote.system_prompt, vote.outcome,
                 int(vote.blind), json.dumps([asdict(p) for p in vote.panes]), vote.source,
                 vote.conversation_id, vote.question_id, json.dumps(vote.message_ids)))
            return int(cursor.lastrowid)

    def of(self, user: str, include_open: bool = True) -> list[Vote]:
        """The user's votes, oldest first, as they were cast (only the blind ones without
        `include_open`)."""
        with self._store.transaction() as db:
            rows = db.execute(
                f"SELECT {COLUMNS} FROM votes WHERE user = ?"
                f"{'' if include_open else ' AND blind = 1'} ORDER BY id", (user,)).fetchall()
        return [vote_from_row(row) for row in rows]

    def counts(self, user: str) -> VoteCounts:
        with self._store.transaction() as db:
            blind, total = db.execute("SELECT COALESCE(SUM(blind), 0), COUNT(*) FROM votes"
                                      " WHERE user = ?", (user,)).fetchone()
        return VoteCounts(blind=int(blind), open=int(total) - int(blind))

    def on_question(self, user: str, conversation_id: int, question_id: int) -> Vote | None:
        """The user's chat vote on the replies to one question, if any."""
        with self._store.transaction() as db:
            row = db.execute(
                f"SELECT {COLUMNS} FROM votes WHERE user = ? AND source = 'chat' AND"
                f" conversation_id = ? AND question_id = ? ORDER BY id DESC LIMIT 1",
                (user, conversation_id, question_id)).fetchone()
        return vote_from_row(row) if row else None
