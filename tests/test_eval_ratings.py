"""Evaluation ratings: hand-computed Bradley-Terry cases, the style measures, and style control
recovering known strengths from synthetic votes with a known length bias."""
from __future__ import annotations

import math

import numpy as np
import pytest

from chatcore.evaluate.ratings import (
    STYLE_FIELDS, MissingStyleError, PairVote, RatingTable, Style, VoteError, choices,
    plain_fit, quality_speed_plot, rating_table, rating_tables, style_fit, style_of)
from chatcore.compare.ratings import leaderboard

SAME = Style(100, 0, 0, 0)  # equal styles: style control has nothing to adjust


def games(a: str, b: str, a_wins: int, b_wins: int, ties: int = 0, category: str = "",
          styles: bool = True) -> list[PairVote]:
    s = SAME if styles else None
    return [PairVote(a, b, outcome, category, s, s)
            for outcome, count in (("a", a_wins), ("b", b_wins), ("tie", ties))
            for _ in range(count)]


# -- 1. hand-computed cases ------------------------------------------------------------------
# prior=0: the exact maximum-likelihood fit (by default one virtual drawn game per model
# pulls every rating a little towards the mean, as on the Compare leaderboard).
def test_three_to_one_gives_the_win_ratio_gap():
    r = plain_fit(games("A", "B", 3, 1), prior=0)
    assert r["A"] - r["B"] == pytest.approx(400 * math.log10(3), abs=1e-4)
    assert (r["A"] + r["B"]) / 2 == pytest.approx(1000, abs=1e-9)


def test_ties_count_half_each():
    for votes in (games("A", "B", 1, 1, ties=2), games("A", "B", 0, 0, ties=3)):
        r = plain_fit(votes)
        assert r["A"] == pytest.approx(1000, abs=1e-6)
        assert r["B"] == pytest.approx(1000, abs=1e-6)


def test_plain_ratings_are_the_compare_leaderboards_on_a_cycle():
    # Compare and Evaluate share one fit and one bootstrap (there used to be an MM fit on one
    # side and this logistic one on the other, checked against each other here): the same
    # battles give the same ratings, intervals and games. tests/test_ratings.py checks the fit
    # against the likelihood equations on this cycle.
    votes = games("A", "B", 3, 1) + games("B", "C", 2, 1, ties=1) + games("C", "A", 4, 2)
    board = leaderboard([v.battle for v in votes], rounds=50, seed=2)
    table = rating_table(votes, rounds=50, seed=2)
    assert [(s.model, s.rating, s.low, s.high, s.games) for s in board] == [
        (r.model, r.rating, r.low, r.high, r.games) for r in table.plain]
    assert plain_fit(votes) == {s.model: s.rating for s in board}


def test_equal_styles_leave_style_fit_equal_to_plain_fit():
    votes = games("A", "B", 3, 1) + games("B", "C", 2, 1, ties=1) + games("C", "A", 4, 2)
    ratings, coefficients = style_fit(votes)
    assert coefficients == dict.fromkeys(STYLE_FIELDS, 0.0)
    for model, r in plain_fit(votes).items():
        assert ratings[model] == pytest.approx(r, abs=1e-6)


# -- 2. style measures -----------------------------------------------------------------------
def test_style_of_counts_a_markdown_reply():
    text = ("# Plan\n"
            "Use **two** steps and __care__.\n"
            "\n"
            "## Steps\n"
            "- mix\n"
            "  * stir well\n"
            "1. bake\n"
            "2) cool\n"
            "#not a header, 3.5 is not a list\n")
    # tokens per line: 2 + 10 (`__care__` is one \w+ run) + 0 + 3 + 2 + 3 + 3 + 3 + 12
    assert style_of(text) == Style(tokens=38, headers=2, list_items=4, bold=2)
    assert style_of("") == Style(0, 0, 0, 0)


# -- 3. acceptance: style control recovers known strengths under a length bias --------------
MODELS = ["A", "B", "C", "D"]
TRUE = np.array([1100.0, 1050.0, 1000.0, 850.0])  # mean 1000 already
LENGTH = np.array([100, 150, 300, 400])  # the weaker models write longer replies
GAMMA = 2.0  # logit per unit of (len_a - len_b) / (len_a + len_b): longer wins


def simulate(seed: int, n: int = 3000) -> tuple[list[PairVote], float]:
    """Votes from the true strengths plus the length bias, and the bias's true coefficient
    on the fit's scale (GAMMA times the standard deviation of the normalised difference)."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, 4, n)
    j = (i + rng.integers(1, 4, n)) % 4  # a different model
    length = (LENGTH[[i, j]] * rng.lognormal(0, 0.5, (2, n))).astype(int) + 1
    other = rng.integers(0, 4, (2, n, 3))  # headers, list items, bold: no effect on votes
    diff = (length[0] - length[1]) / (length[0] + length[1])
    z = (TRUE[i] - TRUE[j]) * math.log(10) / 400 + GAMMA * diff
    a_wins = rng.random(n) < 1 / (1 + np.exp(-z))
    votes = [PairVote(MODELS[i[k]], MODELS[j[k]], "a" if a_wins[k] else "b", "",
                      Style(int(length[0, k]), *map(int, other[0, k])),
                      Style(int(length[1, k]), *map(int, other[1, k])))
             for k in range(n)]
    return votes, GAMMA * float(diff.std())


@pytest.fixture(scope="module")
def biased() -> tuple[RatingTable, float]:
    votes, gamma = simulate(seed=0)
    return rating_table(votes, rounds=100, seed=1), gamma


def inside(table: list) -> bool:
    true = dict(zip(MODELS, TRUE))
    return all(r.low <= true[r.model] <= r.high for r in table)


def test_plain_ratings_reward_the_long_writer(biased):
    table, _ = biased
    order = [r.model for r in table.plain]
    assert order[0] == "C"  # true third, but writes 3x longer replies than A
    assert order.index("C") < order.index("A")
    assert not inside(table.plain)  # so the check below can fail without style control


def test_style_control_recovers_the_true_order_and_ratings(biased):
    table, _ = biased
    assert [r.model for r in table.style] == MODELS
    assert inside(table.style)
    assert sum(r.rating for r in table.style) / 4 == pytest.approx(1000, abs=1e-6)


def test_style_coefficients_find_the_length_bias_only(biased):
    table, gamma = biased
    assert table.coefficients["tokens"] == pytest.approx(gamma, abs=0.2)
    assert table.coefficients["tokens"] > 0.5
    for name in ("headers", "list_items", "bold"):
        assert abs(table.coefficients[name]) < 0.1


# -- 4. tables per category and the choices --------------------------------------------------
def test_rating_tables_split_by_category():
    votes = (games("A", "B", 3, 1, category="math") + games("A", "B", 1, 1, category="code")
             + games("B", "C", 2, 2))
    tables = rating_tables(votes, rounds=20, prior=0)  # exact fit: the gap below is 3:1's
    assert [t.category for t in tables] == ["", "code", "math"]
    assert [t.votes for t in tables] == [10, 2, 4]
    assert {r.model: r.games for r in tables[0].plain} == {"A": 6, "B": 10, "C": 4}
    assert {r.model for r in tables[1].style} == {"A", "B"}
    math_table = tables[2]
    assert math_table.plain[0].model == "A"
    assert math_table.plain[0].rating - math_table.plain[1].rating == pytest.approx(
        400 * math.log10(3), abs=1e-3)


def test_intervals_hold_the_estimate_and_repeat_with_the_seed():
    votes = games("A", "B", 7, 4, ties=2) + games("B", "C", 5, 5) + games("A", "C", 6, 3)
    table = rating_table(votes, rounds=50, seed=3)
    for r in table.plain + table.style:
        assert r.low <= r.rating <= r.high
        assert r.high - r.low > 0
    assert rating_table(votes, rounds=50, seed=3) == table
    assert rating_table(votes, rounds=50, seed=4) != table


def test_choices_tell_a_clear_winner_from_a_coin_toss():
    votes = (games("A", "B", 40, 10, category="clear")
             + games("A", "B", 20, 20, category="even"))
    tables = rating_tables(votes, rounds=100)
    found = {c.category: c for c in choices(tables, {"A": 12.5, "B": 30.0}, {"A": 4_000})}
    clear, even = found["clear"], found["even"]
    assert (clear.best, clear.runner_up, clear.overlaps_next) == ("A", "B", False)
    assert clear.rating == tables[1].style[0].rating
    assert (clear.tokens_per_second, clear.memory_bytes) == (12.5, 4_000)
    assert even.overlaps_next is True
    assert {even.best, even.runner_up} == {"A", "B"}
    assert even.tokens_per_second == {"A": 12.5, "B": 30.0}[even.best]


# -- 5. the plot -----------------------------------------------------------------------------
def test_quality_speed_plot_writes_a_png(tmp_path):
    votes = games("A", "B", 6, 2) + games("B", "C", 3, 3) + games("A", "C", 5, 1)
    table = rating_table(votes, rounds=20)
    path = quality_speed_plot(table, {"A": 9.0, "B": 25.0}, {"A": 8 << 30, "B": 2 << 30},
                              tmp_path / "plot.png")
    assert path == tmp_path / "plot.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    empty = quality_speed_plot(rating_table([]), {}, {}, tmp_path / "empty.png")
    assert empty.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- 6. edges --------------------------------------------------------------------------------
def test_self_votes_are_ignored():
    votes = games("A", "B", 3, 1) + games("A", "A", 5, 0) + games("C", "C", 2, 2)
    assert plain_fit(votes) == pytest.approx(plain_fit(games("A", "B", 3, 1)))
    table = rating_table(votes, rounds=10)
    assert table.votes == 4
    assert {r.model: r.games for r in table.plain} == {"A": 4, "B": 4}


def test_style_fit_needs_the_styles():
    votes = games("A", "B", 2, 1) + games("A", "B", 1, 1, styles=False)
    with pytest.raises(MissingStyleError, match="2 of 5 votes lack the styles"):
        style_fit(votes)
    assert isinstance(MissingStyleError(""), ValueError)
    table = rating_table(votes, rounds=10)
    assert [r.model for r in table.plain] == ["A", "B"]
    assert (table.style, table.coefficients) == ([], {})
    assert choices([table], {}, {})[0].best == "A"  # falls back to the plain ratings


def test_unknown_outcome_is_refused():
    with pytest.raises(VoteError, match="'bad'"):
        plain_fit([PairVote("A", "B", "bad")])


def test_no_votes_no_ratings():
    assert plain_fit([]) == {}
    assert style_fit([]) == ({}, {})
    assert rating_table([]) == RatingTable("", [], [], {}, 0)
    assert rating_tables([]) == [RatingTable("", [], [], {}, 0)]
    assert choices(rating_tables([]), {}, {}) == []
