"""A run as files: a Markdown report (set, models, settings, ratings per category, the plot,
every prompt with its replies side by side) and the replies and votes as CSV and JSON."""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict
from pathlib import Path

from chatcore.evaluate.ratings import RatingTable, quality_speed_plot
from chatcore.evaluate.results import RunResults, interval_text
from chatcore.evaluate.store import PERSON
from chatcore.evaluate.rubric import RUBRIC
from chatcore.generation.memory import format_bytes
from chatcore.i18n import english

FORMAT = "local-chat/evaluation"


def export_run(results: RunResults, folder: Path, stem: str) -> list[Path]:
    """Write `<stem>.md` (with `<stem>.png` beside it when there are ratings), `-replies.csv`,
    `-votes.csv` and `.json`; returns the paths, the report first."""
    folder.mkdir(parents=True, exist_ok=True)
    tables = results.tables()
    plot = None
    if results.votes and tables[0].style:
        plot = quality_speed_plot(tables[0], results.speed(), results.memory(),
                                  folder / f"{stem}.png")
    report = folder / f"{stem}.md"
    report.write_text(report_markdown(results, tables, plot.name if plot else None),
                      encoding="utf-8")
    paths = [report] + ([plot] if plot else [])
    for suffix, text in (("-replies.csv", replies_csv(results)),
                         ("-votes.csv", votes_csv(results)), (".json", run_json(results))):
        path = folder / f"{stem}{suffix}"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def report_markdown(results: RunResults, tables: list[RatingTable],
                    plot_name: str | None = None) -> str:
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
    lines += ["## Models", "", "| Model | Entry | Settings | Memory (planned) | Median tok/s |",
              "|---|---|---|---|---|"]
    for c in run.candidates:
        settings = ", ".join(f"{k} {v}" for k, v in c.params.items() if v is not None)
        memory = format_bytes(c.memory_bytes) if c.memory_bytes else c.device
        rate = f"{speed[c.label]:.1f}" if c.label in speed else "–"
        lines.append(f"| {_cell(c.label)} | `{c.model}` | {settings} | {memory} | {rate} |")
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
        lines += ["", "## Ratings", "",
                  "Bradley-Terry ratings (Elo scale, mean 1000) with 95% bootstrap intervals. "
                  "The style-controlled rating takes reply length and Markdown structure out "
                  "(LMArena's method): a model that wins by writing more drops there.", ""]
        lines += _rating_lines(tables)
        if plot_name:
            lines += [f"![Quality vs speed (marker size = memory)]({plot_name})", ""]
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
                 "finish_reason", "attempts"]
VOTE_COLUMNS = ["prompt", "category", "judge", "model_a", "model_b", "outcome", "shown_first",
                "created"]


def replies_csv(results: RunResults) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(REPLY_COLUMNS)
    run = results.run
    for (p, c), r in sorted(results.replies.items()):
        writer.writerow([p + 1, run.prompts[p].category, run.candidates[c].label,
                         run.candidates[c].model, r.state, r.content, r.error,
                         r.time_to_first_token, r.tokens_per_second, r.completion_tokens,
                         r.finish_reason, r.attempts])
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


def run_json(results: RunResults) -> str:
    run = results.run
    return json.dumps({
        "format": FORMAT, "version": 1, "run": run.id, "set": run.set_name,
        "state": run.state, "system_prompt": run.system_prompt,
        "prompts": [asdict(p) for p in run.prompts],
        "candidates": [asdict(c) for c in run.candidates],
        "replies": [asdict(r) for _, r in sorted(results.replies.items())],
        "votes": [asdict(v) for v in results.votes],
        "judge_votes": {j: [asdict(v) for v in vs] for j, vs in results.judge_votes.items()},
    }, ensure_ascii=False, indent=2)
