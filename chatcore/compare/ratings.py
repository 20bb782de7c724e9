"""Ratings from pairwise votes: the one Bradley-Terry fit, with style control as an option, and
its seeded bootstrap. The Compare tab's leaderboard and Evaluate's tables both use them.

Public arenas rank models by everyone's taste; this ranks the models on this machine by the
votes of the one person using it. A vote becomes pairwise battles (a vs b: a better, b better or
a tie), and each battle is one row of a logistic regression

    P(a beats b) = sigmoid((beta_a - beta_b) + sum_k gamma_k * f_k)

Without the f_k it is plain Bradley-Terry. With them it is LMArena's style control (lm-sys
FastChat `elo_analysis.py`, blog "Does style matter?"): people (and judge models) prefer longer,
more formatted replies regardless of what they say, so f_k compares one style measure of the two
replies, (x_a - x_b) / (x_a + x_b) (0 when both are 0), divided by its standard deviation over
the battles; beta is then quality with style held equal, and gamma_k says how much the voter
rewards more of style k (positive: more wins). A tie is half a win for each side (target 0.5,
which has the same gradient and Hessian as a win row and a loss row at weight 0.5 each).

`prior` adds that many virtual drawn games per model against a reference player of beta 0, so
an undefeated or winless model stays finite: with the default PRIOR of one game, a model that
beat another in all of three votes leads it by about 400 points rather than running off. With
prior 0 the result is the exact maximum-likelihood fit, where one exists (every model has won
and lost somewhere); a run's tables and the leaderboard both use PRIOR.

The fit is Newton's method (IRLS) with step halving, written with numpy: the pinned stack has no
scipy or scikit-learn. The likelihood does not change when every beta moves by the same amount;
each Newton step is the least-squares (minimum-norm) solution, so the fit never moves along that
direction, and a style measure that is 0 in every battle is left out (its gamma is 0). Ratings
are Elo-scale, 400/ln(10) * beta, centred so their mean over the models is 1000. A seeded
bootstrap over the battles gives each rating a 95% interval, so a handful of votes does not look
certain.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

BATTLE_OUTCOMES = ("a", "b", "tie")  # a battle's outcome, from a's point of view
PRIOR = 1.0  # virtual drawn games per model (see the module docstring)
ROUNDS = 200  # bootstrap resamples
# A bootstrap over one or two votes resamples the same votes and gives a zero-width interval,
# which would look certain; below this many games a rating's interval is not shown.
MIN_GAMES_FOR_INTERVAL = 5
ELO = 400 / math.log(10)  # logit -> Elo points
_TARGET = {"a": 1.0, "b": 0.0, "tie": 0.5}

# One battle's style measures: (reply a's, reply b's), each a sequence of numbers, one per
# measure, in the same order for every battle.
StyleMeasures = tuple[Sequence[float], Sequence[float]]


class VoteError(ValueError):
    """A battle the fit cannot read (an unknown outcome)."""


@dataclass(frozen=True)
class Battle:
    a: str
    b: str
    outcome: str  # "a" (a better), "b" (b better), "tie" (equal or both bad)


@dataclass(frozen=True)
class Rating:
    model: str
    rating: float  # Elo scale, mean 1000 over the fit's models
    low: float  # bootstrap 2.5 percentile, widened to hold `rating`
    high: float  # bootstrap 97.5 percentile, widened to hold `rating`
    games: int


@dataclass(frozen=True)
class Fit:
    ratings: dict[str, float]  # model -> Elo-scale rating, mean 1000
    coefficients: tuple[float, ...]  # gamma per style measure, in their order; () without


@dataclass(frozen=True)
class Ratings:
    """A fit with bootstrap intervals."""
    ratings: list[Rating]  # best first (equal ratings by model id)
    coefficients: tuple[float, ...]  # gamma per style measure, in their order; () without
    battles: int  # battles that entered the fit (a model against itself is left out)


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


# -- the fit ---------------------------------------------------------------------------------
def _newton(x: np.ndarray, y: np.ndarray, w: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Maximise sum w*(y log p + (1-y) log(1-p)), p = sigmoid(x @ theta), from theta = 0."""
    def objective(theta: np.ndarray) -> float:
        z = x @ theta
        return float(-(w * (y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z))).sum())

    theta = np.zeros(x.shape[1])
    current = objective(theta)
    for _ in range(iterations):
        p = np.exp(-np.logaddexp(0, -(x @ theta)))  # sigmoid, without overflow
        gradient = x.T @ (w * (y - p))
        hessian = (x.T * (w * p * (1 - p))) @ x
        step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        if gradient @ step < 1e-12:  # predicted gain (Newton decrement): converged
            return theta + step
        t = 1.0
        while (new := objective(theta + t * step)) < current and t > 1e-6:
            t /= 2  # Newton overshot (far from the optimum): halve until the fit improves
        theta, current = theta + t * step, new
    log.warning("rating fit stopped after %d Newton steps without converging", iterations)
    return theta


class _Design:
    """The battles as regression rows: one column per model, then one per style measure."""

    def __init__(self, battles: Sequence[Battle],
                 style: Sequence[StyleMeasures] | None = None) -> None:
        for b in battles:
            if b.outcome not in BATTLE_OUTCOMES:
                raise VoteError(f"vote {b.a} vs {b.b} has the outcome {b.outcome!r}; "
                                f"expected one of {', '.join(BATTLE_OUTCOMES)}")
        if style is not None and len(style) != len(battles):
            raise ValueError(f"{len(style)} style measures for {len(battles)} battles")
        kept = [i for i, b in enumerate(battles) if b.a != b.b]  # itself: says nothing
        battles = [battles[i] for i in kept]
        self.models = sorted({b.a for b in battles} | {b.b for b in battles})
        index = {m: i for i, m in enumerate(self.models)}
        self.x = np.zeros((len(battles), len(self.models)))
        rows = np.arange(len(battles))
        self.x[rows, [index[b.a] for b in battles]] = 1.0
        self.x[rows, [index[b.b] for b in battles]] = -1.0
        self.y = np.array([_TARGET[b.outcome] for b in battles])
        self.games = np.abs(self.x).sum(axis=0).astype(int)
        self.styles: np.ndarray | None = None
        if style is not None and kept:
            a = np.array([style[i][0] for i in kept], float).reshape(len(kept), -1)
            b = np.array([style[i][1] for i in kept], float).reshape(len(kept), -1)
            total = a + b
            diff = np.divide(a - b, total, out=np.zeros_like(total), where=total > 0)
            std = diff.std(axis=0)
            self.styles = diff / np.where(std > 0, std, 1.0)

    def solve(self, w: np.ndarray, prior: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ratings, which models had games, style coefficients) under battle weights `w`."""
        m = len(self.models)
        x, y = self.x, self.y
        live = np.zeros(0, bool)
        if self.styles is not None:
            live = np.any(self.styles != 0, axis=0)  # a measure 0 everywhere: gamma 0
            x = np.hstack([x, self.styles[:, live]])
        if prior > 0:  # one drawn row per model against the reference, at weight `prior`
            x = np.vstack([x, np.hstack([np.eye(m), np.zeros((m, x.shape[1] - m))])])
            y = np.concatenate([y, np.full(m, 0.5)])
            w = np.concatenate([w, np.full(m, float(prior))])
        theta = _newton(x, y, w)
        present = np.abs(self.x).T @ w[:len(self.y)] > 0
        elo = ELO * theta[:m]
        elo += 1000 - elo[present].mean()
        gamma = np.zeros(len(live))
        gamma[live] = theta[m:]
        return elo, present, gamma


def fit(battles: Sequence[Battle], *, style: Sequence[StyleMeasures] | None = None,
        prior: float = PRIOR) -> Fit:
    """The ratings (Elo scale, mean 1000) and, given `style` (one StyleMeasures per battle),
    the style coefficients of the style-controlled fit. Battles of a model against itself are
    left out; an unknown outcome raises VoteError. No battles -> empty."""
    design = _Design(battles, style)
    if not design.models:
        return Fit({}, ())
    elo, _, gamma = design.solve(np.ones(len(design.y)), prior)
    return Fit(dict(zip(design.models, elo.tolist())), tuple(gamma.tolist()))


def bootstrap(battles: Sequence[Battle], *, style: Sequence[StyleMeasures] | None = None,
              prior: float = PRIOR, rounds: int = ROUNDS, seed: int = 0) -> Ratings:
    """The fit, with 95% intervals: the 2.5-97.5 percentiles of `rounds` resamples of the
    battles (numpy Generator(seed), so the same battles give the same intervals, and two calls
    with one seed draw the same resamples), widened if needed to hold the point estimate. A
    model with no game in a resample is left out of that resample."""
    design = _Design(battles, style)
    n = len(design.y)
    if not design.models:
        return Ratings([], (), 0)
    elo, _, gamma = design.solve(np.ones(n), prior)
    samples: list[list[float]] = [[] for _ in design.models]
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
        resampled, present, _ = design.solve(w, prior)
        for i in np.flatnonzero(present):
            samples[i].append(float(resampled[i]))
    table = []
    for i, model in enumerate(design.models):
        r = float(elo[i])
        low = min(float(np.percentile(samples[i], 2.5)), r) if samples[i] else r
        high = max(float(np.percentile(samples[i], 97.5)), r) if samples[i] else r
        table.append(Rating(model, r, low, high, int(design.games[i])))
    return Ratings(sorted(table, key=lambda t: (-t.rating, t.model)), tuple(gamma.tolist()), n)


def leaderboard(battles: Sequence[Battle], prior: float = PRIOR, rounds: int = ROUNDS,
                seed: int = 0) -> list[Standing]:
    """The Compare tab's standings, best first (equal ratings by model id), with bootstrap
    intervals and each model's wins, losses and ties. Self-battles are ignored. Empty -> []."""
    battles = [b for b in battles if b.a != b.b]
    rated = bootstrap(battles, prior=prior, rounds=rounds, seed=seed)
    counts = {r.model: [0, 0, 0] for r in rated.ratings}  # wins, losses, ties
    for b in battles:  # column of (a, b) per outcome: a win/loss or a tie for both
        (ca, cb) = {"a": (0, 1), "b": (1, 0), "tie": (2, 2)}[b.outcome]
        counts[b.a][ca] += 1
        counts[b.b][cb] += 1
    return [Standing(r.model, r.rating, r.low, r.high, *counts[r.model])
            for r in rated.ratings]
