"""The one Bradley-Terry fit and the leaderboard, checked against hand-computed values."""
from __future__ import annotations

import math

import pytest

from chatcore.compare.ratings import Battle, Standing, battles_from_vote, fit, leaderboard


def games(a: str, b: str, a_wins: int, b_wins: int, ties: int = 0) -> list[Battle]:
    return ([Battle(a, b, "a")] * a_wins + [Battle(a, b, "b")] * b_wins
            + [Battle(a, b, "tie")] * ties)


def test_two_players_ratio_is_win_ratio():
    r = fit(games("A", "B", 3, 1), prior=0).ratings
    assert r["A"] - r["B"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert (r["A"] + r["B"]) / 2 == pytest.approx(1000, abs=1e-9)


def test_chain_each_edge_matches_its_own_record():
    # The graph A-B-C is a tree, so the likelihood splits into one factor per edge with
    # independent ratios pA/pB and pB/pC: each is maximised at its own win ratio, 3.
    r = fit(games("A", "B", 3, 1) + games("B", "C", 3, 1), prior=0).ratings
    assert r["A"] - r["B"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert r["B"] - r["C"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert r["A"] - r["C"] == pytest.approx(400 * math.log10(9), abs=1e-6)
    assert sum(r.values()) / 3 == pytest.approx(1000, abs=1e-9)


def test_ties_count_half_each():
    r = fit(games("A", "B", 1, 1, ties=2), prior=0).ratings
    assert r["A"] == pytest.approx(1000, abs=1e-9)
    assert r["B"] == pytest.approx(1000, abs=1e-9)


def test_cycle_satisfies_the_likelihood_equations():
    battles = games("A", "B", 3, 1) + games("B", "C", 2, 1, ties=1) + games("C", "A", 4, 2)
    r = fit(battles, prior=0).ratings
    p = {m: 10 ** (x / 400) for m, x in r.items()}
    n = {("A", "B"): 4, ("B", "C"): 4, ("C", "A"): 6}
    observed = {"A": 3 + 2, "B": 1 + 2 + 0.5, "C": 1 + 4 + 0.5}
    for model in "ABC":
        expected = sum(k * p[model] / (p[model] + p[other])
                       for pair, k in n.items() if model in pair
                       for other in pair if other != model)
        assert expected == pytest.approx(observed[model], abs=1e-6)
    assert r["C"] > r["A"] > r["B"]


def test_prior_keeps_an_undefeated_model_finite():
    r = fit(games("A", "B", 3, 0), prior=1).ratings
    assert all(math.isfinite(x) for x in r.values())
    assert r["A"] > r["B"]
    # Without the prior it is no longer an MLE, but still finite numbers in the right order.
    r0 = fit(games("A", "B", 3, 0), prior=0).ratings
    assert all(math.isfinite(x) for x in r0.values()) and r0["A"] > r0["B"]


def test_prior_symmetric_case_solves_the_equations_with_the_reference():
    r = fit(games("A", "B", 2, 0), prior=1).ratings
    assert r["A"] - 1000 == pytest.approx(1000 - r["B"], abs=1e-9)
    # By symmetry pA = 1/pB here, so the centred ratings are the absolute strengths. A's
    # equation: 2 real wins + 1/2 virtual = 2 pA/(pA+pB) + 1 * pA/(pA+1).
    pa, pb = 10 ** ((r["A"] - 1000) / 400), 10 ** ((r["B"] - 1000) / 400)
    assert 2.5 == pytest.approx(2 * pa / (pa + pb) + pa / (pa + 1), abs=1e-6)
    assert pa ** 3 - pa ** 2 - 3 * pa - 5 == pytest.approx(0, abs=1e-6)  # same, as a cubic


def test_battles_from_vote():
    assert battles_from_vote(["x", "y", "z"], 1) == [Battle("y", "x", "a"), Battle("y", "z", "a")]
    assert battles_from_vote(["x", "y", "z"], None) == [
        Battle("x", "y", "tie"), Battle("x", "z", "tie"), Battle("y", "z", "tie")]
    assert battles_from_vote(["x", "x", "y"], 0) == [Battle("x", "y", "a")]
    assert battles_from_vote(["x", "x"], None) == []
    with pytest.raises(ValueError):
        battles_from_vote(["x", "y"], 2)
    with pytest.raises(ValueError):
        battles_from_vote(["x"], None)


def test_unknown_outcome_is_refused():
    with pytest.raises(ValueError):
        fit([Battle("A", "B", "win")])


def test_leaderboard_counts_intervals_order_and_determinism():
    battles = (games("A", "B", 2, 1) + games("A", "C", 0, 0, ties=1) + games("C", "B", 1, 0)
               + [Battle("A", "A", "a")])  # a self-battle counts for nothing
    table = leaderboard(battles, rounds=50)
    by_model = {s.model: s for s in table}
    assert [(s.wins, s.losses, s.ties) for s in (by_model[m] for m in "ABC")] == [
        (2, 1, 1), (1, 3, 0), (1, 0, 1)]
    assert by_model["A"].games == 4 and by_model["A"].win_rate == pytest.approx(2.5 / 4)
    assert by_model["B"].win_rate == pytest.approx(0.25)
    assert all(s.low <= s.rating <= s.high for s in table)
    assert any(s.low < s.high for s in table)
    assert [s.rating for s in table] == sorted((s.rating for s in table), reverse=True)
    assert table[-1].model == "B"
    assert sum(s.rating for s in table) / 3 == pytest.approx(1000)
    assert leaderboard(battles, rounds=50) == table
    assert leaderboard([]) == []


def test_equal_ratings_sort_by_model_id():
    table = leaderboard(games("b", "a", 1, 1), rounds=10)
    assert [s.model for s in table] == ["a", "b"]
    assert Standing("m", 1000, 1000, 1000, 0, 0, 0).win_rate == 0.0
