"""Ratings for an evaluation run, per category, with and without style control.

People (and judge models) prefer longer, more formatted replies regardless of what they say,
so a plain Bradley-Terry rating partly ranks verbosity. Following LMArena's style control
(lm-sys FastChat `elo_analysis.py`, blog "Does style matter?"), each judged pair is one row of
a logistic regression

    P(a beats b) = sigmoid((beta_a - beta_b) + sum_k gamma_k * f_k)

where f_k compares one style measure of the two replies, (x_a - x_b) / (x_a + x_b) (0 when both
are 0), divided by its standard deviation over the votes. beta is then quality with style held
equal; gamma_k says how much the voter rewards more of style k (positive: more wins). Without
the f_k it is plain Bradley-Terry. A tie is half a win for each side (target 0.5, which has the
same gradient and Hessian as a win row and a loss row at weight 0.5 each).

The fit is Newton's method (IRLS) with step halving, written here with numpy: the pinned stack
has no scipy or scikit-learn, and the fit is 30 lines. The likelihood does not change when every
beta moves by the same amount, so a ridge (lambda/2)*|theta|^2 with lambda = RIDGE on all
parameters fixes that gauge, keeps an undefeated model finite and keeps an all-zero style
column at 0. It moves rating differences by about RIDGE / games * 174 Elo (under 1e-4 Elo for
four votes), so the result is the exact maximum-likelihood fit for any data where that exists.
Ratings are Elo-scale, 400/ln(10) * beta, centred on 1000 (as in chatcore/compare/ratings.py). A seeded
bootstrap over the votes gives each rating a 95% interval.
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

OUTCOMES = ("a", "b", "tie")
RIDGE = 1e-7  # see the module docstring
# The ridge of a run's tables: one virtual drawn game per model against the mean (a game at
# p = 1/2 adds 1/4 to the curvature), the prior chatcore/compare/ratings.py gives the leaderboard, so
# a model unbeaten in three votes rates about +380, not +1300.
PRIOR_RIDGE = 0.25
ELO = 400 / math.log(10)  # logit -> Elo points
_TARGET = {"a": 1.0, "b": 0.0, "tie": 0.5}


class VoteError(ValueError):
    """A vote the fit cannot read (an unknown outcome)."""


class MissingStyleError(ValueError):
    """Votes without both replies' styles, which style control cannot use."""


@dataclass(frozen=True)
class Style:
    """What style control adjusts for, measured on one reply."""
    tokens: int  # words and punctuation marks: a tokenizer-free length
    headers: int  # Markdown header lines
    list_items: int  # Markdown list lines
    bold: int  # **bold** or __bold__ spans


STYLE_FIELDS = tuple(f.name for f in fields(Style))
_TOKEN = re.compile(r"\w+|[^\w\s]")
_HEADER = re.compile(r"^#{1,6} ", re.M)
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d+[.)]) ", re.M)
_BOLD = re.compile(r"\*\*[^*\n]+?\*\*|__[^_\n]+?__")


def style_of(text: str) -> Style:
    """The style measures of one reply, by regular expression (no tokenizer, no parser)."""
    return Style(len(_TOKEN.findall(text)), len(_HEADER.findall(text)),
                 len(_LIST_ITEM.findall(text)), len(_BOLD.findall(text)))


@dataclass(frozen=True)
class PairVote:
    """One judged pair; `outcome` is from a's point of view ("both bad" is stored as "tie")."""
    a: str
    b: str
    outcome: str  # "a", "b" or "tie"
    category: str = ""
    style_a: Style | None = None
    style_b: Style | None = None


@dataclass(frozen=True)
class Rating:
    model: str
    rating: float  # Elo scale, mean 1000 over the table's models
    low: float  # bootstrap 2.5 percentile, widened to hold `rating`
    high: float  # bootstrap 97.5 percentile, widened to hold `rating`
    games: int


@dataclass(frozen=True)
class RatingTable:
    category: str  # "" = every category ("Overall")
    plain: list[Rating]  # Bradley-Terry, best first
    style: list[Rating]  # style-controlled, best first; [] when a vote lacks styles
    coefficients: dict[str, float]  # style measure -> gamma (positive: voters like more of it)
    votes: int  # votes that entered the fit (self-votes left out)


# -- the fit ---------------------------------------------------------------------------------
def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, ridge: float = RIDGE,
         iterations: int = 100) -> np.ndarray:
    """Maximise sum w*(y log p + (1-y) log(1-p)) - ridge/2 |theta|^2, p = sigmoid(x @ theta)."""
    def objective(theta: np.ndarray) -> float:
        z = x @ theta
        return float(-(w * (y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z))).sum()
                     - ridge / 2 * theta @ theta)

    theta = np.zeros(x.shape[1])
    current = objective(theta)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(x @ theta)))
        gradient = x.T @ (w * (y - p)) - ridge * theta
        hessian = (x.T * (w * p * (1 - p))) @ x + ridge * np.eye(len(theta))
        step = np.linalg.solve(hessian, gradient)
        if gradient @ step < 1e-12:  # predicted gain (Newton decrement): converged
            return theta + step
        t = 1.0
        while (new := objective(theta + t * step)) < current and t > 1e-6:
            t /= 2  # Newton overshot (far from the optimum): halve until the fit improves
        theta, current = theta + t * step, new
    log.warning("rating fit stopped after %d Newton steps without converging", iterations)
    return theta


@dataclass(frozen=True)
class _Design:
    """The votes as regression rows: one column per model, then one per style measure."""
    models: list[str]
    x: np.ndarray
    y: np.ndarray
    games: np.ndarray  # per model
    styles: np.ndarray | None  # standardised style differences; None when a vote lacks styles

    @classmethod
    def of(cls, votes: Sequence[PairVote]) -> _Design:
        for v in votes:
            if v.outcome not in OUTCOMES:
                raise VoteError(f"vote {v.a} vs {v.b} has the outcome {v.outcome!r}; "
                                f"expected one of {', '.join(OUTCOMES)}")
        votes = [v for v in votes if v.a != v.b]  # a model against itself says nothing
        models = sorted({v.a for v in votes} | {v.b for v in votes})
        index = {m: i for i, m in enumerate(models)}
        x = np.zeros((len(votes), len(models)))
        rows = np.arange(len(votes))
        x[rows, [index[v.a] for v in votes]] = 1.0
        x[rows, [index[v.b] for v in votes]] = -1.0
        y = np.array([_TARGET[v.outcome] for v in votes])
        styles = None
        if votes and all(v.style_a is not None and v.style_b is not None for v in votes):
            a = np.array([[getattr(v.style_a, f) for f in STYLE_FIELDS] for v in votes], float)
            b = np.array([[getattr(v.style_b, f) for f in STYLE_FIELDS] for v in votes], float)
            total = a + b
            diff = np.divide(a - b, total, out=np.zeros_like(total), where=total > 0)
            std = diff.std(axis=0)
            styles = diff / np.where(std > 0, std, 1.0)
        return cls(models, x, y, np.abs(x).sum(axis=0).astype(int), styles)

    def require_styles(self, votes: Sequence[PairVote]) -> None:
        if self.styles is None and self.models:
            count = sum(1 for v in votes
                        if v.a != v.b and (v.style_a is None or v.style_b is None))
            raise MissingStyleError(
                f"{count} of {len(self.y)} votes lack the styles of their replies; style "
                "control needs both replies' styles on every vote")

    def ratings(self, w: np.ndarray, style: bool,
                ridge: float = RIDGE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ratings, which models had games, style coefficients) under vote weights `w`."""
        m = len(self.models)
        x = np.hstack([self.x, self.styles]) if style else self.x
        theta = _fit(x, self.y, w, ridge)
        present = np.abs(self.x).T @ w > 0
        elo = ELO * theta[:m]
        elo += 1000 - elo[present].mean()
        return elo, present, theta[m:]


def plain_fit(votes: Sequence[PairVote], ridge: float = RIDGE) -> dict[str, float]:
    """Bradley-Terry ratings (the logistic model without style), Elo scale, mean 1000."""
    design = _Design.of(votes)
    if not design.models:
        return {}
    elo, _, _ = design.ratings(np.ones(len(design.y)), False, ridge)
    return dict(zip(design.models, elo.tolist()))


def style_fit(votes: Sequence[PairVote],
              ridge: float = RIDGE) -> tuple[dict[str, float], dict[str, float]]:
    """Style-controlled ratings and the style coefficients (gamma per measure, per standard
    deviation of its normalised difference). Raises MissingStyleError if a vote lacks styles."""
    design = _Design.of(votes)
    design.require_styles(votes)
    if not design.models:
        return {}, {}
    elo, _, gamma = design.ratings(np.ones(len(design.y)), True, ridge)
    return dict(zip(design.models, elo.tolist())), dict(zip(STYLE_FIELDS, gamma.tolist()))


# -- tables ----------------------------------------------------------------------------------
def rating_table(votes: Sequence[PairVote], category: str = "", rounds: int = 200,
                 seed: int = 0, ridge: float = RIDGE) -> RatingTable:
    """Both fits over the votes of `category` ("" = all), with 95% bootstrap intervals.

    Each of `rounds` resamples draws the votes with replacement (numpy Generator(seed), so the
    same votes give the same table) and refits both models on the same draw; a model with no
    game in a resample is left out of that resample. The style-controlled side is empty when
    any vote lacks its replies' styles (one table never mixes two sets of votes).
    """
    chosen = [v for v in votes if not category or v.category == category]
    design = _Design.of(chosen)
    fits = [False] + ([True] if design.styles is not None else [])
    if not design.models:
        return RatingTable(category, [], [], {}, 0)
    n = len(design.y)
    points = [design.ratings(np.ones(n), style, ridge) for style in fits]
    samples: list[list[list[float]]] = [[[] for _ in design.models] for _ in fits]
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
        for k, style in enumerate(fits):
            elo, present, _ = design.ratings(w, style, ridge)
            for i in np.flatnonzero(present):
                samples[k][i].append(float(elo[i]))
    tables = []
    for (elo, _, _), sample in zip(points, samples):
        table = []
        for i, model in enumerate(design.models):
            r = float(elo[i])
            low = min(float(np.percentile(sample[i], 2.5)), r) if sample[i] else r
            high = max(float(np.percentile(sample[i], 97.5)), r) if sample[i] else r
            table.append(Rating(model, r, low, high, int(design.games[i])))
        tables.append(sorted(table, key=lambda t: (-t.rating, t.model)))
    coefficients = dict(zip(STYLE_FIELDS, points[1][2].tolist())) if len(fits) > 1 else {}
    return RatingTable(category, tables[0], tables[1] if len(fits) > 1 else [], coefficients,
                       n)


def rating_tables(votes: Sequence[PairVote], rounds: int = 200, seed: int = 0,
                  ridge: float = RIDGE) -> list[RatingTable]:
    """The overall table (always there, empty without votes), then one per category with
    votes, categories sorted by name."""
    categories = sorted({v.category for v in votes if v.category and v.a != v.b})
    return [rating_table(votes, c, rounds, seed, ridge) for c in ["", *categories]]


@dataclass(frozen=True)
class Choice:
    """Which model to pick for one category, and whether the votes can tell it apart."""
    category: str
    best: str
    rating: float
    overlaps_next: bool  # intervals of best and runner-up overlap: "not clearly better"
    runner_up: str | None
    tokens_per_second: float | None
    memory_bytes: int | None


def choices(tables: Sequence[RatingTable], speed: dict[str, float],
            memory: dict[str, int]) -> list[Choice]:
    """One choice per table with ratings, from the style-controlled ratings (the plain ones
    where the table has no style side), so the pick is not a reward for verbosity."""
    found = []
    for table in tables:
        ranked = table.style or table.plain
        if not ranked:
            continue
        best = ranked[0]
        second = ranked[1] if len(ranked) > 1 else None
        found.append(Choice(table.category, best.model, best.rating,
                            second is not None and best.low <= second.high,
                            second.model if second else None,
                            speed.get(best.model), memory.get(best.model)))
    return found


def quality_speed_plot(table: RatingTable, speed: dict[str, float], memory: dict[str, int],
                       path: Path) -> Path:
    """A PNG of style-controlled rating (with its interval) against tokens/s, marker area
    proportional to memory, so the trade-off between the candidates shows at a glance.
    Models without a speed cannot be placed and are named in a note under the plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked = table.style or table.plain
    placed = [r for r in ranked if speed.get(r.model)]
    biggest = max((memory.get(r.model, 0) for r in placed), default=0)
    fig, ax = plt.subplots(figsize=(7, 5))
    for r in placed:
        mem = memory.get(r.model)
        area = max(600 * mem / biggest, 12) if mem and biggest else 60
        ax.errorbar(speed[r.model], r.rating, yerr=[[r.rating - r.low], [r.high - r.rating]],
                    fmt="none", ecolor="#888888", capsize=4, zorder=1)
        ax.scatter(speed[r.model], r.rating, s=area, alpha=0.7, zorder=2,
                   facecolors="#4c72b0" if mem else "none", edgecolors="#4c72b0")
        ax.annotate(r.model, (speed[r.model], r.rating), xytext=(6, 6),
                    textcoords="offset points", fontsize=9)
    missing = [r.model for r in ranked if r not in placed]
    if not ranked:
        ax.text(0.5, 0.5, "No votes yet", ha="center", va="center", transform=ax.transAxes)
    elif missing:
        fig.text(0.01, 0.01, "No speed measured: " + ", ".join(missing), fontsize=8)
    kind = "style-controlled rating" if table.style else "rating"
    ax.set_xlabel("tokens/s (median decode speed)")
    ax.set_ylabel(f"{kind} (Elo scale, 95% interval)")
    where = f": {table.category}" if table.category else ""
    ax.set_title(f"Quality vs speed (marker size = memory){where}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
