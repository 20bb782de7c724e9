"""A run as files: a Markdown report (set, models, settings, ratings per category, the plot,
every prompt with its replies side by side) and the replies and votes as CSV and JSON."""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict
from pathlib import Path

from chatcore.evaluate.ratings import RatingTable, quality_speed_plot, save_figure
from chatcore.evaluate.results import RunResults, interval_text
from chatcore.evaluate.store import PERSON
from chatcore.evaluate.rubric import RUBRIC
from chatcore.evaluate.value import RunCosts, cheapest_not_worse, quality_cost_figure
from chatcore.generation.memory import format_bytes
from chatcore.i18n import english

FORMAT = "local-chat/evaluation"


def export_run(results: RunResults, folder: Path, stem: str,
               costs: RunCosts | None = None) -> list[Path]:
    """Write `<stem>.md` (with the charts beside it when there are ratings: quality against
    speed `<stem>.png`, and against cost `<stem>-cost.png` given the candidates' `costs`),
    `-replies.csv`, `-votes.csv` and `.json`; returns the paths, the report first."""
    folder.mkdir(parents=True, exist_ok=True)
    tables = results.tables()
    plots: list[Path] = []
    if results.votes and tables[0].style:
        plots.append(quality_speed_plot(tables[0], results.speed(), results.memory(),
                                        folder / f"{stem}.png"))
        if costs is not None:
            plots.append(save_figure(quality_cost_figure(tables[0], costs),
                                     folder / f"{stem}-cost.png"))
    report = folder / f"{stem}.md"
    report.write_text(report_markdown(results, tables, [p.name for p in plots], costs),
                      encoding="utf-8")
    paths = [report] + plots
    for suffix, text in (("-replies.csv", replies_csv(results, costs)),
                         ("-votes.csv", votes_csv(results)),
                         (".json", run_json(results, costs))):
        path = folder / f"{stem}{suffix}"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def report_markdown(results: RunResults, tables: list[RatingTable],
                    plot_names: list[str] | None = None, costs: RunCosts | None = None) -> str:
    run = results.run
    labels = [c.label for c in run.candidates]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created))
    lines = [f"# Evaluation: {run.set_name}", "",
             f"Run {run.id}, started {when}, {run.state}; {len(run.prompts)} prompts × "
             f"{len(run.candidates)} models; {len(results.votes)} votes"
             + (f" ({bad} of them both bad)" if (bad := sum(v.outcome == "bad"
                                                             for v in results.votes)) else "")
             + ".", ""]
    if run.system_prompt.strip():
        lines += [f"System prompt: {run.system_prompt.strip()}", ""]
    speed = results.speed()
    priced = costs.per_million if costs else {}
    per_m = f"{costs.currency} per M output tokens" if costs else "Cost per M output tokens"
    lines += ["## Models", "", "| Model | Entry | Settings | Memory (planned) | Median tok/s | "
              f"{per_m} |", "|---|---|---|---|---|---|"]
    for c in run.candidates:
        settings = ", ".join(f"{k} {v}" for k, v in c.params.items() if v is not None)
        memory = format_bytes(c.memory_bytes) if c.memory_bytes else c.device
        rate = f"{speed[c.label]:.1f}" if c.label in speed else "–"
        cost = f"{priced[c.label]:.4g}" if c.label in priced else "–"
        lines.append(f"| {_cell(c.label)} | `{c.model}` | {settings} | {memory} | {rate} | "
                     f"{cost} |")
    lines += [""]
    if not results.votes:
        lines += ["No votes of yours yet: review the queue in the Evaluate tab.", ""]
    else:
        lines += ["## Which to choose", "",
                  "| Category | Best (style-controlled) | Clearly ahead? | Runner-up | tok/s | "
                  "Memory |", "|---|---|---|---|---|---|"]
        for choice, verdict in results.choices(tables, english()):
            lines.append(
                f"| {choice.category or 'Overall'} | {_cell(choice.best)} | "
                f"{verdict} | "
                f"{_cell(choice.runner_up or '–')} | "
                f"{f'{choice.tokens_per_second:.1f}' if choice.tokens_per_second else '–'} | "
                f"{format_bytes(choice.memory_bytes) if choice.memory_bytes else '–'} |")
        if costs is not None and (cheap := cheapest_not_worse(tables[0], costs)):
            lines += ["", f"Cheapest not clearly worse than the best: **{_cell(cheap.model)}**"
                      f" ({costs.per_million[cheap.model]:.4g} {costs.currency} per million "
                      "output tokens; its interval reaches the best's)."]
        lines += ["", "## Ratings", "",
                  "Bradley-Terry ratings (Elo scale, mean 1000) with 95% bootstrap intervals. "
                  "The style-controlled rating takes reply length and Markdown structure out "
                  "(LMArena's method): a model that wins by writing more drops there.", ""]
        lines += _rating_lines(tables)
        for name, title in zip(plot_names or [], ("Quality vs speed (marker size = memory)",
                                                   "Quality vs cost per token")):
            lines += [f"![{title}]({name})", ""]
    for judge, votes in results.judge_votes.items():
        agreement = results.agreement(judge)
        rate = f"{agreement.rate:.0%} of {agreement.total} pairs" if agreement.rate is not None \
            else "no pair voted by both"
        lines += [f"## Judge: `{judge}`", "",
                  f"{len(votes)} votes, each asked in both orders (a verdict that flips with "
                  f"the order is a tie); agreement with the person: {rate}.", ""]
        lines += _rating_lines(results.tables(judge))
        lines += ["<details><summary>The judge's rubric</summary>", "", RUBRIC, "",
                  "</details>", ""]
    lines += ["## Prompts and replies", ""]
    for p, prompt in enumerate(run.prompts):
        category = f" ({prompt.category})" if prompt.category else ""
        lines += [f"### {p + 1}. {_cell(prompt.text[:80])}{category}", "", prompt.text, ""]
        if prompt.reference:
            lines += [f"*Reference:* {prompt.reference}", ""]
        lines += ["| " + " | ".join(_cell(label) for label in labels) + " |",
                  "|" + "---|" * len(labels)]
        cells = []
        for c in range(len(labels)):
            reply = results.replies.get((p, c))
            if reply is None or reply.state == "running":
                cells.append("*not run*")
            elif reply.state == "failed":
                cells.append(f"⚠️ {_cell(reply.error)}")
            else:
                figures = (f"{reply.completion_tokens} tokens"
                           + (f", {reply.tokens_per_second:.1f} tok/s"
                              if reply.tokens_per_second else ""))
                cells.append(f"{_cell(reply.content)}<br><br>*{figures}*")
        lines += ["| " + " | ".join(cells) + " |", ""]
    return "\n".join(lines).rstrip() + "\n"


def _rating_lines(tables: list[RatingTable]) -> list[str]:
    lines = ["| Category | Model | Rating | 95% interval | Style-controlled | 95% interval | "
             "Games |", "|---|---|---|---|---|---|---|"]
    for table in tables:
        style = {r.model: r for r in table.style}
        for r in table.plain:
            s = style.get(r.model)
            lines.append(
                f"| {table.category or 'Overall'} | {_cell(r.model)} | {r.rating:.0f} | "
                f"{interval_text(r, english())} | {f'{s.rating:.0f}' if s else '–'} | "
                f"{interval_text(s, english()) if s else '–'} | {r.games} |")
    return lines + [""]


def _cell(text: str) -> str:
    """Text fit for one Markdown table cell."""
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


REPLY_COLUMNS = ["prompt", "category", "model", "entry", "state", "reply", "error",
                 "time_to_first_token", "tokens_per_second", "completion_tokens",
                 "finish_reason", "attempts", "cost_per_million_output"]
VOTE_COLUMNS = ["prompt", "category", "judge", "model_a", "model_b", "outcome", "shown_first",
                "created"]


def replies_csv(results: RunResults, costs: RunCosts | None = None) -> str:
    """Every reply; the last column is its model's cost per million output tokens now (in
    the JSON's `costs.currency`), empty where unknown."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(REPLY_COLUMNS)
    run = results.run
    for (p, c), r in sorted(results.replies.items()):
        writer.writerow([p + 1, run.prompts[p].category, run.candidates[c].label,
                         run.candidates[c].model, r.state, r.content, r.error,
                         r.time_to_first_token, r.tokens_per_second, r.completion_tokens,
                         r.finish_reason, r.attempts,
                         costs.per_million.get(run.candidates[c].label, "") if costs else ""])
    return out.getvalue()


def votes_csv(results: RunResults) -> str:
    """Every vote, the person's (judge empty) and each judge's; `outcome` is from model_a's
    side: a (model_a better), b, tie or bad (both bad)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(VOTE_COLUMNS)
    run = results.run
    everyone = results.votes + [v for votes in results.judge_votes.values() for v in votes]
    for v in everyone:
        writer.writerow([v.prompt + 1, run.prompts[v.prompt].category, v.judge or PERSON,
                         run.candidates[v.a].label, run.candidates[v.b].label, v.outcome,
                         run.candidates[v.shown_first].label,
                         time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.created))])
    return out.getvalue()


def run_json(results: RunResults, costs: RunCosts | None = None) -> str:
    run = results.run
    return json.dumps({
        "format": FORMAT, "version": 1, "run": run.id, "set": run.set_name,
        "state": run.state, "system_prompt": run.system_prompt,
        "prompts": [asdict(p) for p in run.prompts],
        "candidates": [asdict(c) for c in run.candidates],
        "replies": [asdict(r) for _, r in sorted(results.replies.items())],
        "votes": [asdict(v) for v in results.votes],
        "judge_votes": {j: [asdict(v) for v in vs] for j, vs in results.judge_votes.items()},
        "costs": asdict(costs) if costs else None,
    }, ensure_ascii=False, indent=2)
