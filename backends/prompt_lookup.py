"""Prompt-lookup drafting: guess a reply's next tokens from its own prompt and text so far.

A reply that quotes, edits or summarizes its prompt writes long runs of tokens it has
already seen. When the last few tokens also occur earlier, the tokens that followed them
there are a cheap guess at what comes next; the batch checks such a guess in the same
`llama_decode` as the sequence's next token (speculative decoding without a second model).
The guess only decides what is computed, never what is written: each position is still
sampled with the reply's own sampler chain.

Drafts are not free on a CPU: every drafted token widens the step of every reply in the
batch. So the number drafted adapts to how the guesses fare, as llama.cpp's server does:
it doubles (up to max_draft) after a step that took every draft and halves after one that
took none; when even one draft is refused, drafting rests for REST_STEPS steps (free text
would otherwise widen every step for a guess that is rarely right).

The index of n-grams grows with each verified token, so a lookup costs a few dictionary
reads rather than a scan of a context of thousands of tokens at every step.
"""
from __future__ import annotations

from collections.abc import Iterable

MAX_NGRAM = 3  # longest suffix looked up; a longer match is a better guess
MIN_NGRAM = 3  # shortest suffix looked up: shorter ones match free text too often
MAX_DRAFT = 8  # tokens drafted at most per step and sequence
REST_STEPS = 16  # steps without drafts after a single drafted token was refused


class DraftRoom:
    """How many tokens to draft next, adapted to how the drafts fare (whatever makes them:
    prompt lookup here, a draft model in backends/draft_model.py)."""

    def __init__(self, max_draft: int = MAX_DRAFT) -> None:
        self.max_draft = max_draft
        self.room = max(1, max_draft // 2)  # tokens drafted next time, adapted by `judge`
        self._resting = 0  # steps left without drafts

    def take(self, limit: int | None = None) -> int:
        """Tokens to draft at this step (0 while resting), at most `limit`."""
        if self._resting > 0:
            self._resting -= 1
            return 0
        return max(0, self.room if limit is None else min(limit, self.room))

    def judge(self, drafted: int, accepted: int) -> None:
        """Draft more after a step whose drafts were all taken, fewer after none were."""
        if drafted and accepted == drafted:
            self.room = min(self.max_draft, self.room * 2)
        elif drafted and accepted == 0:
            if self.room == 1:
                self._resting = REST_STEPS
            self.room = max(1, self.room // 2)


class PromptLookup:
    """The verified tokens of one reply (prompt and text so far) and where each n-gram of
    them last occurred, to draft the tokens that followed it there."""

    def __init__(self, tokens: Iterable[int] = (), max_ngram: int = MAX_NGRAM,
                 min_ngram: int = MIN_NGRAM, max_draft: int = MAX_DRAFT) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"n-gram sizes must be 1 <= min <= max (got {min_ngram}, "
                             f"{max_ngram})")
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self.adapt = DraftRoom(max_draft)  # how many to draft next
        self._tokens: list[int] = []
        # n-gram -> the index just past its latest occurrence that has a token after it
        self._after: dict[tuple[int, ...], int] = {}
        self.extend(tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        """Add verified tokens (never drafts that may be rejected)."""
        for token in tokens:
            self._tokens.append(token)
            end = len(self._tokens) - 1  # the n-grams ending just before the new token
            for n in range(self.min_ngram, self.max_ngram + 1):
                if end - n >= 0:
                    self._after[tuple(self._tokens[end - n:end])] = end

    def draft(self, limit: int | None = None) -> list[int]:
        """The tokens that followed the longest earlier occurrence of the last n tokens
        (n = max_ngram down to min_ngram), at most `limit`; empty when none matches."""
        room = self.adapt.take(limit)
        if room <= 0:
            return []
        for n in range(min(self.max_ngram, len(self._tokens)), self.min_ngram - 1, -1):
            start = self._after.get(tuple(self._tokens[-n:]))
            if start is not None:
                return self._tokens[start:start + room]
        return []

    def judge(self, drafted: int, accepted: int) -> None:
        """Draft more after a step whose drafts were all taken, fewer after none were."""
        self.adapt.judge(drafted, accepted)
