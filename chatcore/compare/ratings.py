"""A local leaderboard from a person's own blind side-by-side votes.

Public arenas rank models by everyone's taste; this ranks the models on this machine by the
votes of the one person using it. Each vote over 2-4 anonymous panes becomes pairwise battles,
a Bradley-Terry model (fitted by Hunter's MM algorithm) turns them into Elo-scale ratings, and
a seeded bootstrap gives each rating an interval so a handful of votes does not look certain.
Standard library only.
"""
from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

OUTCOMES = ("a", "b", "tie")
_FLOOR = 1e-12  # smallest strength, so a winless model (prior 0) still has a logarithm


@dataclass(frozen=True)
class Battle:
    a: str
    b: str
    outcome: str  # "a" (a better), "b" (b better), "tie" (equal or both bad)


@dataclass(frozen=True)
class Standing:
    model: str
    rating: float
    low: float
    high: float
    wins: int
    losses: int
    ties: int

    @property
    def games(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def win_rate(self) -> float:
        """(wins + half the ties) / games; 0.0 with no games."""
        return (self.wins + 0.5 * self.ties) / self.games if self.games else 0.0


def battles_from_vote(models: Sequence[str], winner: int | None) -> list[Battle]:
    """One vote over 2-4 panes as pairwise battles.

    `winner` is the index of the best pane, or None for a tie / all bad (every pair ties).
    Pairs of the same model id are skipped: a model against itself says nothing about rank.
    """
    if not 2 <= len(models) <= 4:
        raise ValueError(f"a vote covers 2-4 panes, got {len(models)}")
    if winner is None:
        return [Battle(models[i], models[j], "tie") for i in range(len(models))
                for j in range(i + 1, len(models)) if models[i] != models[j]]
    if not 0 <= winner < len(models):
        raise ValueError(f"winner {winner} is not a pane index (0-{len(models) - 1})")
    best = models[winner]
    return [Battle(best, other, "a") for i, other in enumerate(models)
            if i != winner and other != best]


def bradley_terry(battles: Sequence[Battle], prior: float = 0.0, iterations: int = 1000,
                  tolerance: float = 1e-10) -> dict[str, float]:
    """Maximum-likelihood Bradley-Terry ratings by Hunter's (2004) MM algorithm.

    A tie is half a win for each side; battles of a model against itself are ignored. Ratings
    are Elo-scale (400 * log10 strength), centred so their mean over the models is 1000.
    `prior` adds that many virtual games, half won and half lost, against a reference player of
    strength 1 for every model, so an undefeated or winless model stays finite. With prior 0
    the result is the exact MLE; that is for well-connected data (every model has won and lost
    somewhere): otherwise strengths run off towards the floor and the iteration cap.
    """
    score: dict[str, float] = defaultdict(float)
    games: dict[tuple[str, str], float] = defaultdict(float)
    for battle in battles:
        if battle.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {battle.outcome!r}, expected one of {OUTCOMES}")
        if battle.a == battle.b:
            continue
        pair = (battle.a, battle.b) if battle.a < battle.b else (battle.b, battle.a)
        games[pair] += 1
        score[battle.a] += {"a": 1.0, "b": 0.0, "tie": 0.5}[battle.outcome]
        score[battle.b] += {"a": 0.0, "b": 1.0, "tie": 0.5}[battle.outcome]
    models = sorted(score)
    if not models:
        return {}
    opponents: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for (i, j), n in games.items():
        opponents[i].append((j, n))
        opponents[j].append((i, n))
    strength = dict.fromkeys(models, 1.0)
    for _ in range(iterations):
        new = {}
        for m in models:
            denom = sum(n / (strength[m] + strength[o]) for o, n in opponents[m])
            denom += prior / (strength[m] + 1.0) if prior > 0 else 0.0
            new[m] = max((score[m] + prior / 2) / denom, _FLOOR)
        if prior <= 0:  # no anchor: fix the scale (geometric mean 1) so it cannot drift
            scale = math.exp(sum(math.log(p) for p in new.values()) / len(new))
            new = {m: max(p / scale, _FLOOR) for m, p in new.items()}
        change = max(abs(new[m] - strength[m]) / strength[m] for m in models)
        strength = new
        if change < tolerance:
            break
    raw = {m: 400 * math.log10(p) for m, p in strength.items()}
    shift = 1000 - sum(raw.values()) / len(raw)
    return {m: r + shift for m, r in raw.items()}


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (q in 0..1) of a non-empty list."""
    xs, k = sorted(values), (len(values) - 1) * q
    lo = math.floor(k)
    return xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * (k - lo)


def leaderboard(battles: Sequence[Battle], prior: float = 1.0, rounds: int = 200,
                seed: int = 0) -> list[Standing]:
    """Standings sorted by rating, highest first (ties of rating by model id).

    Intervals are the 2.5-97.5 percentiles of `rounds` bootstrap resamples of the battles
    (random.Random(seed), so the same votes give the same table), widened if needed to hold
    the point estimate. A model absent from a resample is left out of that resample's ratings.
    Self-battles are ignored. Empty input -> [].
    """
    battles = [b for b in battles if b.a != b.b]
    ratings = bradley_terry(battles, prior=prior)
    counts = {m: [0, 0, 0] for m in ratings}  # wins, losses, ties
    for b in battles:  # column of (a, b) per outcome: a win/loss or a tie for both
        (ca, cb) = {"a": (0, 1), "b": (1, 0), "tie": (2, 2)}[b.outcome]
        counts[b.a][ca] += 1
        counts[b.b][cb] += 1
    samples: dict[str, list[float]] = {m: [] for m in ratings}
    rng = random.Random(seed)
    for _ in range(rounds if battles else 0):
        for m, r in bradley_terry(rng.choices(battles, k=len(battles)), prior=prior).items():
            samples[m].append(r)
    table = []
    for m, r in ratings.items():
        low = min(_percentile(samples[m], 0.025), r) if samples[m] else r
        high = max(_percentile(samples[m], 0.975), r) if samples[m] else r
        table.append(Standing(m, r, low, high, *counts[m]))
    return sorted(table, key=lambda s: (-s.rating, s.model))
