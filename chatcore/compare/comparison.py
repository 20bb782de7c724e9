"""One side-by-side comparison: two to four panes, each with its own model and history.

The panes get the same prompts; each keeps its own conversation, so a follow-up goes to
every model with that model's earlier replies. In blind mode the chosen models are dealt
to the panes in a shuffled order and shown only as "Model A", "Model B", ... until the
person votes on a round.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from backends.base import GenParams, Message
from chatcore.generation.context import with_system
from chatcore.i18n import Texts, english
from chatcore.conversations.store import StoredMessage
from chatcore.compare.votes import Vote, VotedPane

LABELS = "ABCD"
MIN_PANES, MAX_PANES = 2, len(LABELS)


@dataclass
class Pane:
    model_id: str
    params: GenParams


@dataclass
class Round:
    """One prompt and what each pane answered; an error instead of a reply where it failed."""

    prompt: str
    replies: list[StoredMessage | None]
    errors: list[str]

    @classmethod
    def begin(cls, prompt: str, panes: int) -> Round:
        return cls(prompt, [None] * panes, [""] * panes)


@dataclass
class Comparison:
    panes: list[Pane]
    system: str = ""
    blind: bool = False
    revealed: bool = True
    rounds: list[Round] = field(default_factory=list)
    voted: int = 0  # rounds that have a vote; a vote is on the latest round
    inspector: str = ""  # what each pane's model received in the latest round
    attachments: list[int] = field(default_factory=list)  # every pane gets them

    @classmethod
    def start(cls, setups: Sequence[tuple[str, GenParams]], system: str = "",
              blind: bool = False, rng: random.Random | None = None) -> Comparison:
        """Blind comparisons deal the chosen models to the panes in a shuffled order."""
        if not MIN_PANES <= len(setups) <= MAX_PANES:
            raise ValueError(f"a comparison has {MIN_PANES} to {MAX_PANES} panes, "
                             f"not {len(setups)}")
        setups = list(setups)
        if blind:
            (rng or random.Random()).shuffle(setups)
        return cls([Pane(model_id, params) for model_id, params in setups], system=system,
                   blind=blind, revealed=not blind)

    @staticmethod
    def label(index: int, *, texts: Texts) -> str:
        """A pane's name before the models are shown: "Model A" in `texts`' language."""
        return texts("compare.pane", label=LABELS[index])

    def title(self, index: int, name_of: Callable[[str], str], *, texts: Texts) -> str:
        """What a pane is called on the page: its label until the names may be shown."""
        if not self.revealed:
            return self.label(index, texts=texts)
        return f"{self.label(index, texts=texts)}: {name_of(self.panes[index].model_id)}"

    def history(self, index: int) -> list[StoredMessage]:
        """This pane's own conversation: every finished round it answered."""
        messages = []
        for round_ in self.rounds:
            reply = round_.replies[index]
            if reply is not None and not round_.errors[index]:
                messages += [StoredMessage("user", round_.prompt), reply]
        return messages

    def prompt_for(self, index: int, text: str) -> list[Message]:
        return with_system(self.system, [*self.history(index), Message("user", text)])

    @property
    def can_vote(self) -> bool:
        return len(self.rounds) > self.voted

    def vote(self, outcome: str) -> Vote:
        """The vote on the latest round; afterwards the names are shown."""
        if not self.can_vote:
            raise ValueError("there is no new round to vote on: send a prompt first")
        latest = self.rounds[-1]
        panes = []
        for index, pane in enumerate(self.panes):
            reply = latest.replies[index]
            panes.append(VotedPane(
                label=LABELS[index], model=pane.model_id, params=pane.params.sampling.model_dump(),
                reply=reply.content if reply else "",
                time_to_first_token=reply.time_to_first_token if reply else None,
                tokens_per_second=reply.tokens_per_second if reply else None,
                completion_tokens=reply.completion_tokens if reply else None,
                finish_reason="error" if latest.errors[index] or reply is None
                else reply.finish_reason,
                thought=reply.thought if reply else "",
                thought_seconds=reply.thought_seconds if reply else None,
                thought_tokens=reply.thought_tokens if reply else None))
        vote = Vote(prompt=latest.prompt, outcome=outcome, panes=panes,
                    system_prompt=self.system, blind=not self.revealed)
        self.voted = len(self.rounds)
        self.revealed = True
        return vote

    def to_markdown(self, name_of: Callable[[str], str]) -> str:
        """The whole comparison, round by round, every pane's reply under its title."""
        lines = ["# Side-by-side comparison", ""]
        if self.system.strip():
            lines += [f"System prompt: {self.system.strip()}", ""]
        for number, round_ in enumerate(self.rounds, start=1):
            lines += [f"## Round {number}", "", f"**You:** {round_.prompt}", ""]
            for index, reply in enumerate(round_.replies):
                text = f"⚠️ {round_.errors[index]}" if round_.errors[index] else \
                    (reply.content if reply else "")
                model = name_of(reply.model) if reply and reply.model and self.revealed \
                    else None
                title = f"{self.label(index, texts=english())}: {model}" if model \
                    else self.title(index, name_of, texts=english())
                lines += [f"### {title}", "", text, ""]
        return "\n".join(lines).rstrip() + "\n"
