"""Quality against what a token costs, as Artificial Analysis charts it: each candidate's
rating (with its interval) against its cost per million output tokens, and the cheapest
model that is not clearly worse than the best (its interval reaches the best's)."""
from __future__ import annotations

from dataclasses import dataclass

from chatcore.costs.book import CostBook
from chatcore.costs.settings import CostSettings
from chatcore.evaluate.ratings import Rating, RatingTable, label_points
from chatcore.evaluate.store import EvalRun
from chatcore.generation.registry import ModelRegistry


@dataclass(frozen=True)
class RunCosts:
    """The candidates' output cost per million tokens in one `currency` (label -> amount),
    and the labels left out: unmeasured, or priced in another currency."""

    currency: str
    per_million: dict[str, float]
    left_out: tuple[str, ...] = ()


def run_costs(run: EvalRun, book: CostBook, registry: ModelRegistry,
              settings: CostSettings) -> RunCosts:
    """Each candidate's cost now, in the settings' currency (no exchange rates: a remote
    price in another currency is left out and named)."""
    found: dict[str, float] = {}
    left_out = []
    for candidate in run.candidates:
        entry = registry.get(candidate.model)
        cost = book.cost(entry, settings) if entry is not None else None
        if cost is not None and cost.known and cost.currency == settings.currency:
            found[candidate.label] = cost.output_per_million or 0.0
        else:
            left_out.append(candidate.label)
    return RunCosts(settings.currency, found, tuple(left_out))


def cheapest_not_worse(table: RatingTable, costs: RunCosts) -> Rating | None:
    """The cheapest candidate whose interval reaches the best's (not clearly worse), from
    the style-controlled ratings where there are some; None when none has a cost."""
    ranked = table.style or table.plain
    if not ranked:
        return None
    best = ranked[0]
    close = [r for r in ranked if r.model in costs.per_million and r.high >= best.low]
    return min(close, key=lambda r: (costs.per_million[r.model], -r.rating), default=None)


def quality_cost_figure(table: RatingTable, costs: RunCosts):
    """Rating (95% interval) against cost per million output tokens, each point labelled
    with its model's name; the cheaper and better corner is the top left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked = table.style or table.plain
    placed = [r for r in ranked if r.model in costs.per_million]
    fig, ax = plt.subplots(figsize=(7, 5))
    for r in placed:
        x = costs.per_million[r.model]
        ax.errorbar(x, r.rating, yerr=[[r.rating - r.low], [r.high - r.rating]], fmt="none",
                    ecolor="#888888", capsize=4, zorder=1)
        ax.scatter(x, r.rating, s=70, alpha=0.8, zorder=2, color="#dd8452")
    label_points(ax, [(r.model, costs.per_million[r.model], r.rating) for r in placed])
    missing = [r.model for r in ranked if r not in placed]
    if not ranked:
        ax.text(0.5, 0.5, "No votes yet", ha="center", va="center", transform=ax.transAxes)
    elif missing:
        fig.text(0.01, 0.01, f"No cost in {costs.currency}: " + ", ".join(missing), fontsize=8)
    kind = "style-controlled rating" if table.style else "rating"
    ax.set_xlabel(f"{costs.currency} per million output tokens")
    ax.set_ylabel(f"{kind} (Elo scale, 95% interval)")
    where = f": {table.category}" if table.category else ""
    ax.set_title(f"Quality vs cost per token{where}")
    ax.grid(alpha=0.3)
    return fig
