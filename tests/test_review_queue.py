"""The review queue: coverage, round robin, position balance, determinism, and the helpers."""
from __future__ import annotations

from collections import Counter
from itertools import combinations

import pytest

from chatcore.evaluate.review_queue import (ReviewItem, next_open, outcome_for, progress, review_queue,
                                   reviewable)

SIZES = [(4, 3), (1, 2), (3, 4), (5, 2)]


def check_rules(queue: list[ReviewItem], prompts: int, candidates: int) -> None:
    pairs = list(combinations(range(candidates), 2))
    assert len(queue) == prompts * len(pairs)
    # Every prompt x unordered pair exactly once, with two different valid candidates.
    assert Counter((item.prompt, item.pair) for item in queue) == \
        Counter((p, pair) for p in range(prompts) for pair in pairs)
    for item in queue:
        assert item.left != item.right and item.pair in pairs
    # Round robin: each block of len(pairs) items covers every pair once, spread over prompts.
    for start in range(0, len(queue), len(pairs)):
        block = queue[start:start + len(pairs)]
        assert sorted(item.pair for item in block) == pairs
        assert len({item.prompt for item in block}) == min(prompts, len(pairs))
    # Position balance: alternating orientation per pair, so the counts differ by <= 1.
    for pair in pairs:
        shown = [(item.left, item.right) for item in queue if item.pair == pair]
        assert all(x != y for x, y in zip(shown, shown[1:])), f"{pair} did not alternate"
        orders = Counter(shown)
        assert abs(orders[pair] - orders[pair[::-1]]) <= 1
        if prompts >= 2:
            assert len(orders) == 2, f"{pair} shown in one order only"


@pytest.mark.parametrize("prompts,candidates", SIZES)
def test_queue_rules_hold_for_several_seeds(prompts, candidates):
    for seed in range(6):
        check_rules(review_queue(prompts, candidates, seed=seed), prompts, candidates)


def test_first_round_covers_all_pairs_on_different_prompts():
    for seed in range(10):
        first = review_queue(4, 3, seed=seed)[:3]
        assert {item.pair for item in first} == {(0, 1), (0, 2), (1, 2)}
        assert len({item.prompt for item in first}) == 3


def test_same_seed_same_queue_and_seeds_vary():
    assert review_queue(3, 4, seed=7) == review_queue(3, 4, seed=7)
    queues = {tuple(review_queue(3, 4, seed=seed)) for seed in range(8)}
    assert len(queues) > 1


def test_even_count_splits_exactly_in_half():
    queue = review_queue(4, 3, seed=1)
    for pair in [(0, 1), (0, 2), (1, 2)]:
        lefts = Counter(item.left for item in queue if item.pair == pair)
        assert lefts[pair[0]] == lefts[pair[1]] == 2


def test_degenerate_sizes():
    assert review_queue(0, 3) == [] and review_queue(3, 1) == [] and review_queue(3, 0) == []
    with pytest.raises(ValueError):
        review_queue(-1, 2)


def test_pair_is_unordered():
    assert ReviewItem(0, 2, 1).pair == (1, 2) == ReviewItem(0, 1, 2).pair


def test_next_open_and_progress_count_mirrors_as_done():
    queue = [ReviewItem(0, 1, 0), ReviewItem(1, 0, 2), ReviewItem(2, 2, 1), ReviewItem(0, 2, 0)]
    assert next_open(queue, set()) == 0 and progress(queue, set()) == (0, 4)
    done = {(0, 0, 1)}  # canonical key of the mirrored first item
    assert next_open(queue, done) == 1 and progress(queue, done) == (1, 4)
    done |= {(1, 0, 2), (0, 0, 2)}  # same order; and a later item voted out of order
    assert next_open(queue, done) == 2 and progress(queue, done) == (3, 4)
    done.add((2, 1, 2))
    assert next_open(queue, done) is None and progress(queue, done) == (4, 4)
    assert next_open(queue, {(5, 0, 1), (1, 1, 0)}) == 0  # other prompt, wrong pair
    assert next_open([], set()) is None and progress([], set()) == (0, 0)


def test_next_open_walks_a_whole_queue():
    queue = review_queue(3, 3, seed=2)
    done: list[tuple[int, int, int]] = []
    while (index := next_open(queue, done)) is not None:
        item = queue[index]
        done.append((item.prompt, *item.pair))
    assert done == [(item.prompt, *item.pair) for item in queue]  # in queue order
    assert progress(queue, done) == (9, 9)


def test_reviewable_keeps_items_with_both_replies_ready():
    queue = review_queue(3, 3, seed=0)
    failed = {(1, 2)}  # prompt 1, candidate 2's reply failed
    kept = reviewable(queue, lambda prompt, candidate: (prompt, candidate) not in failed)
    assert kept == [item for item in queue if not (item.prompt == 1 and 2 in item.pair)]
    assert len(kept) == 7
    assert reviewable(queue, lambda p, c: True) == queue
    assert reviewable(queue, lambda p, c: False) == []


@pytest.mark.parametrize("choice,shown,expected", [
    ("A", ReviewItem(3, 0, 2), (0, 2, "a")),
    ("A", ReviewItem(3, 2, 0), (0, 2, "b")),
    ("B", ReviewItem(3, 0, 2), (0, 2, "b")),
    ("B", ReviewItem(3, 2, 0), (0, 2, "a")),
    ("tie", ReviewItem(3, 0, 2), (0, 2, "tie")),
    ("tie", ReviewItem(3, 2, 0), (0, 2, "tie")),
    ("bad", ReviewItem(3, 0, 2), (0, 2, "bad")),
    ("bad", ReviewItem(3, 2, 0), (0, 2, "bad")),
])
def test_outcome_for_is_canonical(choice, shown, expected):
    assert outcome_for(shown, choice) == expected


def test_outcome_for_refuses_unknown_choices():
    for choice in ("a", "C", "", "both bad"):
        with pytest.raises(ValueError, match="'A', 'B', 'tie', 'bad'|A, B, tie, bad"):
            outcome_for(ReviewItem(0, 0, 1), choice)
    with pytest.raises(ValueError):
        outcome_for(ReviewItem(0, 1, 1), "A")
