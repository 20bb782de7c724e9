"""The order in which a person reviews an evaluation run's replies, two at a time, blind.

A run answers P prompts with K candidates (2-4 models, known here only by index 0..K-1).
Every prompt x unordered candidate pair is reviewed once, in the spirit of the anonymous
arena (lm-sys FastChat, serve/gradio_block_arena_anony.py), with three guarantees:

- Round robin: the queue is P rounds; each round holds every pair once, before any pair gets
  its second item, so a person who stops early still has a vote on every pair. Within a round
  pair j goes to prompt (round + j) mod P (through a seeded order of the prompts), so a round
  spans min(P, pairs) different prompts and every pair meets every prompt once in P rounds.
- Position balance: a pair's orientation alternates between its consecutive appearances, so
  its two orders are shown equally often (one apart when P is odd), and both with P >= 2.
- Determinism: a seeded random.Random picks the order of the prompts, the order of the pairs
  within each round and which orientation each pair shows first, so the same seed (the run's
  id) gives the same queue after a restart.

Votes are stored in canonical order (a < b, `outcome_for`), never in the shown order.
Standard library only.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

CHOICES = ("A", "B", "tie", "bad")


@dataclass(frozen=True)
class ReviewItem:
    prompt: int  # prompt index
    left: int  # candidate index shown as "A"
    right: int  # candidate index shown as "B"

    @property
    def pair(self) -> tuple[int, int]:
        """The unordered pair, as (smaller index, larger index)."""
        return (self.left, self.right) if self.left < self.right else (self.right, self.left)


def review_queue(prompts: int, candidates: int, seed: int = 0) -> list[ReviewItem]:
    """Every prompt x unordered candidate pair once, in balanced round-robin order.

    len(result) == prompts * candidates * (candidates - 1) // 2; fewer than 2 candidates or no
    prompts give []. Negative counts raise ValueError.
    """
    if prompts < 0 or candidates < 0:
        raise ValueError(f"prompts and candidates must be >= 0, got {prompts} and {candidates}")
    pairs = [(i, j) for i in range(candidates) for j in range(i + 1, candidates)]
    if not prompts or not pairs:
        return []
    rng = random.Random(seed)
    prompt_order = list(range(prompts))
    rng.shuffle(prompt_order)
    rng.shuffle(pairs)  # which pair is j, i.e. which prompt each pair starts on
    flipped_first = [rng.random() < 0.5 for _ in pairs]
    queue: list[ReviewItem] = []
    for round_ in range(prompts):
        members = list(range(len(pairs)))
        rng.shuffle(members)  # the order of the pairs within this round
        for j in members:
            a, b = pairs[j]
            prompt = prompt_order[(round_ + j) % prompts]
            # Pair j's appearance number is the round: alternate orientation round by round.
            if flipped_first[j] != (round_ % 2 == 1):
                a, b = b, a
            queue.append(ReviewItem(prompt, a, b))
    return queue


def _voted(item: ReviewItem, done: Collection[tuple[int, int, int]]) -> bool:
    return (item.prompt, item.left, item.right) in done \
        or (item.prompt, item.right, item.left) in done


def next_open(queue: Sequence[ReviewItem], done: Collection[tuple[int, int, int]]) -> int | None:
    """Index of the first item with no vote in `done` (keys (prompt, x, y) in either order), or
    None when every item has one. Callers add failed or skipped items to `done`."""
    for index, item in enumerate(queue):
        if not _voted(item, done):
            return index
    return None


def progress(queue: Sequence[ReviewItem], done: Collection[tuple[int, int, int]]) -> tuple[int, int]:
    """(items voted, items in the queue), for "23 of 60"; a key in either order counts."""
    return sum(1 for item in queue if _voted(item, done)), len(queue)


def reviewable(queue: Sequence[ReviewItem], ready: Callable[[int, int], bool]) -> list[ReviewItem]:
    """The items, in queue order, whose two replies are ready: ready(prompt, candidate)."""
    return [item for item in queue if ready(item.prompt, item.left)
            and ready(item.prompt, item.right)]


def outcome_for(item: ReviewItem, choice: str) -> tuple[int, int, str]:
    """The person's choice on a shown item as a stored vote (a, b, outcome), a < b.

    "A" (the left reply is better), "B" (the right one), "tie", "bad" (both bad). The outcome
    is "a" when candidate a is better, "b" when candidate b is, else "tie" or "bad".
    """
    a, b = item.pair
    if a == b:
        raise ValueError(f"an item compares two candidates, got {a} against itself")
    if choice == "A":
        return a, b, "a" if item.left == a else "b"
    if choice == "B":
        return a, b, "a" if item.right == a else "b"
    if choice in ("tie", "bad"):
        return a, b, choice
    raise ValueError(f"unknown choice {choice!r}, expected one of {', '.join(CHOICES)}")
