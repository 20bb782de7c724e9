"""Ratings for an evaluation run, per category, with and without style control.

The fit and its bootstrap are the Compare leaderboard's (chatcore/compare/ratings.py: one
Bradley-Terry fit, style control an option of it, the same prior). What is Evaluate's own is
here: the style measures of a reply, the judged pairs with their category and both replies'
styles, a table per category with the plain and the style-controlled ratings side by side, the
"which to choose" rows and the quality-against-speed plot.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from chatcore.compare.ratings import (
    PRIOR,
    ROUNDS,
    Battle,
    Rating,
    StyleMeasures,
    VoteError,
    bootstrap,
    fit,
)

__all__ = ["STYLE_FIELDS", "Choice", "MissingStyleError", "PairVote", "Rating", "RatingTable",
           "Style", "VoteError", "choices", "plain_fit", "quality_speed_figure", "quality_speed_plot",
           "label_points", "rating_table", "save_figure",
           "rating_tables", "style_fit", "style_of"]


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

    @property
    def battle(self) -> Battle:
        return Battle(self.a, self.b, self.outcome)


@dataclass(frozen=True)
class RatingTable:
    category: str  # "" = every category ("Overall")
    plain: list[Rating]  # Bradley-Terry, best first
    style: list[Rating]  # style-controlled, best first; [] when a vote lacks styles
    coefficients: dict[str, float]  # style measure -> gamma (positive: voters like more of it)
    votes: int  # votes that entered the fit (self-votes left out)


def _measures(votes: Sequence[PairVote]) -> list[StyleMeasures] | None:
    """Both replies' style measures for each vote, in STYLE_FIELDS order; None when a vote
    (other than a model against itself, which the fit leaves out) lacks them."""
    if any(v.a != v.b and (v.style_a is None or v.style_b is None) for v in votes):
        return None
    zero = (0,) * len(STYLE_FIELDS)

    def measured(style: Style | None) -> tuple[int, ...]:
        return zero if style is None else tuple(getattr(style, f) for f in STYLE_FIELDS)

    return [(measured(v.style_a), measured(v.style_b)) for v in votes]


def plain_fit(votes: Sequence[PairVote], prior: float = PRIOR) -> dict[str, float]:
    """Bradley-Terry ratings (the fit without style), Elo scale, mean 1000."""
    return fit([v.battle for v in votes], prior=prior).ratings


def style_fit(votes: Sequence[PairVote],
              prior: float = PRIOR) -> tuple[dict[str, float], dict[str, float]]:
    """Style-controlled ratings and the style coefficients (gamma per measure, per standard
    deviation of its normalised difference). Raises MissingStyleError if a vote lacks styles."""
    measures = _measures(votes)
    if measures is None:
        judged = [v for v in votes if v.a != v.b]
        count = sum(1 for v in judged if v.style_a is None or v.style_b is None)
        raise MissingStyleError(
            f"{count} of {len(judged)} votes lack the styles of their replies; style "
            "control needs both replies' styles on every vote")
    found = fit([v.battle for v in votes], style=measures, prior=prior)
    return found.ratings, dict(zip(STYLE_FIELDS, found.coefficients))


# -- tables ----------------------------------------------------------------------------------
def rating_table(votes: Sequence[PairVote], category: str = "", rounds: int = ROUNDS,
                 seed: int = 0, prior: float = PRIOR) -> RatingTable:
    """Both fits over the votes of `category` ("" = all), with 95% bootstrap intervals.

    Both bootstraps draw the same resamples (one seed), so the two sides of the table rest on
    the same votes. The style-controlled side is empty when any vote lacks its replies' styles
    (one table never mixes two sets of votes).
    """
    chosen = [v for v in votes if not category or v.category == category]
    battles = [v.battle for v in chosen]
    plain = bootstrap(battles, prior=prior, rounds=rounds, seed=seed)
    if not plain.ratings:
        return RatingTable(category, [], [], {}, 0)
    measures = _measures(chosen)
    if measures is None:
        return RatingTable(category, plain.ratings, [], {}, plain.battles)
    styled = bootstrap(battles, style=measures, prior=prior, rounds=rounds, seed=seed)
    return RatingTable(category, plain.ratings, styled.ratings,
                       dict(zip(STYLE_FIELDS, styled.coefficients)), plain.battles)


def rating_tables(votes: Sequence[PairVote], rounds: int = ROUNDS, seed: int = 0,
                  prior: float = PRIOR) -> list[RatingTable]:
    """The overall table (always there, empty without votes), then one per category with
    votes, categories sorted by name."""
    categories = sorted({v.category for v in votes if v.category and v.a != v.b})
    return [rating_table(votes, c, rounds, seed, prior) for c in ["", *categories]]


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
    return save_figure(quality_speed_figure(table, speed, memory), path)


def label_points(ax, points: list[tuple[str, float, float]]) -> None:
    """Name each point (label, x, y) beside it: to its right in the left half of the axis,
    to its left in the right half, so long names stay inside the plot."""
    if not points:
        return
    xs = [x for _, x, _ in points]
    low, high = min(xs), max(xs)
    ax.margins(x=0.15, y=0.1)
    for label, x, y in points:
        right_half = high > low and x > (low + high) / 2
        note = ax.annotate(label, (x, y), xytext=(-6 if right_half else 6, 6),
                           textcoords="offset points", fontsize=9,
                           ha="right" if right_half else "left")
        note.set_in_layout(False)


def save_figure(fig, path: Path) -> Path:
    """Write a figure as a PNG and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def quality_speed_figure(table: RatingTable, speed: dict[str, float],
                         memory: dict[str, int]):
    """The figure of quality_speed_plot, each point labelled with its model's name."""
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
    label_points(ax, [(r.model, speed[r.model], r.rating) for r in placed])
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
    return fig
