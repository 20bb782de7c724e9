"""The Evaluate tab's callbacks: prompt sets, runs and their progress, the blind review queue,
ratings, the judge and the report. Each returns plain values or gradio updates; the layout is
in chatui/evaluate_tab.py."""
from __future__ import annotations

import html
import logging
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

import gradio as gr

from chatcore.eval_ratings import RatingTable
from chatcore.eval_report import export_run
from chatcore.eval_results import RunResults, interval_text
from chatcore.eval_runner import EvalRunner, RunRefused
from chatcore.eval_store import EvalNotFound, EvalRun, EvalStore, EvalVote
from chatcore.manager import ModelManager, ModelUnavailable, UnknownModel
from chatcore.memory import format_bytes
from chatcore.prompt_sets import (
    EvalPrompt,
    PromptSet,
    PromptSetError,
    builtin_sets,
    make_set,
    parse_file,
    to_csv,
    to_jsonl,
    unique_name,
)
from chatcore.review_queue import ReviewItem, outcome_for
from chatui.chat_handlers import user_of
from chatui.sampling_controls import pane_params

log = logging.getLogger(__name__)

BUILTIN, MINE = "builtin:", "mine:"
SET_COLUMNS = ["Prompt", "Category", "Reference or note"]
RATING_COLUMNS = ["Category", "Model", "Rating", "95% interval", "Style-controlled",
                  "95% interval ", "Games"]
CHOICE_COLUMNS = ["Category", "Choose", "Clearly ahead?", "Runner-up", "tok/s", "Memory"]
CHOICES = {"A": "A is better", "B": "B is better", "tie": "Tie", "bad": "Both bad"}
NO_RUN = "Start a run, or pick one above."


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class EvaluateHandlers:
    def __init__(self, manager: ModelManager, evals: EvalStore, runner: EvalRunner,
                 export_dir: Path) -> None:
        self.manager = manager
        self.evals = evals
        self.runner = runner
        self.judges = runner.judges
        self.export_dir = export_dir

    # -- prompt sets -----------------------------------------------------------------------
    def set_choices(self, user: str) -> list[tuple[str, str]]:
        found = [(f"{s.name} (built-in, {len(s.prompts)})", BUILTIN + s.name)
                 for s in builtin_sets()]
        return found + [(f"{s.name} ({len(s.prompts)})", MINE + s.name)
                        for s in self.evals.prompt_sets(user)]

    def find_set(self, user: str, choice: str | None) -> PromptSet | None:
        if not choice:
            return None
        if choice.startswith(BUILTIN):
            sets = builtin_sets()
            name = choice.removeprefix(BUILTIN)
        else:
            sets = self.evals.prompt_sets(user)
            name = choice.removeprefix(MINE)
        return next((s for s in sets if s.name == name), None)

    def open_set(self, choice: str | None, request: gr.Request) -> tuple:
        """Name, rows and a note for the chosen set."""
        prompt_set = self.find_set(user_of(request), choice)
        if prompt_set is None:
            return "", [["", "", ""]], ""
        rows = [[p.text, p.category, p.reference] for p in prompt_set.prompts]
        note = ("A built-in set: Save keeps your edits as your own set of the same name."
                if prompt_set.builtin else "")
        return prompt_set.name, rows, note

    def new_set(self) -> tuple:
        return "", [["", "", ""]], "A new set: write its prompts, then Save."

    def add_prompt(self, rows, text: str, category: str, reference: str) -> tuple:
        """Append a row to the table (Save stores the set); the fields empty again."""
        prompts = _prompts_from(rows)
        if not text.strip():
            return gr.update(), text, category, reference, "Write the prompt first."
        prompts.append(EvalPrompt(text.strip(), category.strip(), reference.strip()))
        return ([[p.text, p.category, p.reference] for p in prompts], "", category, "",
                f"{len(prompts)} prompts; Save set to keep them.")

    def save_set(self, choice: str | None, name: str, rows, request: gr.Request) -> tuple:
        user = user_of(request)
        try:
            prompt_set = make_set(name, _prompts_from(rows))
        except PromptSetError as exc:
            return gr.update(), f"⚠️ Not saved: {exc}"
        old = choice.removeprefix(MINE) if choice and choice.startswith(MINE) else ""
        self.evals.save_prompt_set(user, prompt_set, old_name=old)
        return (gr.update(choices=self.set_choices(user), value=MINE + prompt_set.name),
                f"Saved “{prompt_set.name}” ({len(prompt_set.prompts)} prompts).")

    def duplicate_set(self, choice: str | None, request: gr.Request) -> tuple:
        user = user_of(request)
        prompt_set = self.find_set(user, choice)
        if prompt_set is None:
            return gr.update(), "Pick a set to duplicate."
        taken = [s.name for s in self.evals.prompt_sets(user)] + [prompt_set.name]
        copy = make_set(unique_name(prompt_set.name, taken), prompt_set.prompts)
        self.evals.save_prompt_set(user, copy)
        return (gr.update(choices=self.set_choices(user), value=MINE + copy.name),
                f"Duplicated as “{copy.name}”.")

    def delete_set(self, choice: str | None, request: gr.Request) -> tuple:
        user = user_of(request)
        if not choice or not choice.startswith(MINE):
            return gr.update(), "Built-in sets cannot be deleted; pick one of your own."
        name = choice.removeprefix(MINE)
        try:
            self.evals.delete_prompt_set(user, name)
        except EvalNotFound as exc:
            return gr.update(), f"⚠️ {exc}"
        return (gr.update(choices=self.set_choices(user), value=None),
                f"Deleted “{name}”. Runs over it keep their own copy of its prompts.")

    def import_set(self, upload: str | None, request: gr.Request) -> tuple:
        """All or nothing: a bad row names its line and nothing is saved."""
        user = user_of(request)
        if not upload:
            return gr.update(), ""
        path = Path(upload)
        try:
            prompts = parse_file(path.name, path.read_bytes())
            taken = [s.name for s in self.evals.prompt_sets(user)]
            prompt_set = make_set(unique_name(path.stem[:60] or "Imported", taken), prompts)
        except (PromptSetError, OSError) as exc:
            return gr.update(), f"⚠️ Nothing imported: {exc}"
        self.evals.save_prompt_set(user, prompt_set)
        return (gr.update(choices=self.set_choices(user), value=MINE + prompt_set.name),
                f"Imported {len(prompt_set.prompts)} prompts as “{prompt_set.name}”.")

    def export_set(self, choice: str | None, kind: str, request: gr.Request) -> tuple:
        prompt_set = self.find_set(user_of(request), choice)
        if prompt_set is None:
            return gr.update(visible=False), "Pick a set to export."
        path = self._export_path(_slug(prompt_set.name), kind)
        path.write_text(to_csv(prompt_set) if kind == "csv" else to_jsonl(prompt_set),
                        encoding="utf-8")
        return gr.update(value=str(path), visible=True), f"Exported {path.name}."

    # -- runs ------------------------------------------------------------------------------
    def run_choices(self, user: str) -> list[tuple[str, int]]:
        found = []
        for run in self.evals.runs(user):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created))
            found.append((f"#{run.id} · {run.set_name} · {len(run.candidates)} models · "
                          f"{when}", run.id))
        return found

    def start_run(self, choice: str | None, system: str, *candidates,
                  request: gr.Request) -> tuple:
        """`candidates` are (model, temperature, max new tokens) for each of the 4 rows;
        rows without a model are left out."""
        user = user_of(request)
        prompt_set = self.find_set(user, choice)
        if prompt_set is None:
            return gr.update(), "⚠️ Pick a prompt set first."
        setups = []
        for model_id, temperature, max_tokens in zip(*[iter(candidates)] * 3):
            if not model_id:
                continue
            try:
                defaults = self.manager.entry(model_id).defaults
            except (UnknownModel, ModelUnavailable) as exc:
                return gr.update(), f"⚠️ {exc}"
            setups.append((model_id, pane_params(defaults, temperature, max_tokens)))
        try:
            run_id = self.runner.start(user, prompt_set, setups, system.strip())
        except RunRefused as exc:
            return gr.update(), f"⚠️ Not started: {exc}"
        return (gr.update(choices=self.run_choices(user), value=run_id),
                f"Run #{run_id} started: {len(prompt_set.prompts)} prompts × "
                f"{len(setups)} models. It runs in the background; chat and Compare go first.")

    def progress_html(self, run_id: int | None, request: gr.Request) -> str:
        user = user_of(request)
        if run_id is None:
            return NO_RUN
        try:
            progress = self.runner.progress(user, int(run_id))
            run = self.evals.run(user, int(run_id))
        except EvalNotFound as exc:
            return str(exc)
        parts = [f"{progress.done} of {progress.total} replies", progress.state]
        if progress.failed:
            parts.append(f"{progress.failed} failed")
        if progress.current:
            parts.append("now: " + ", ".join(progress.current))
        if progress.seconds_left is not None:
            parts.append(f"about {_duration(progress.seconds_left)} left")
        if run.note:
            parts.append(run.note)
        return (f'<progress id="eval-progress-bar" value="{progress.done}" '
                f'max="{progress.total}" style="width:100%"></progress>'
                f'<div id="eval-progress-text">{html.escape(" · ".join(parts))}</div>')

    def control(self, action: str, run_id: int | None, request: gr.Request) -> tuple:
        user = user_of(request)
        if run_id is None:
            return gr.update(), "Pick a run first."
        try:
            {"pause": self.runner.pause, "resume": self.runner.resume,
             "cancel": self.runner.cancel}[action](user, int(run_id))
        except (RunRefused, EvalNotFound) as exc:
            return gr.update(), f"⚠️ {exc}"
        return gr.update(choices=self.run_choices(user), value=run_id), \
            f"Run #{run_id}: {self.evals.run(user, int(run_id)).state}."

    # -- review ----------------------------------------------------------------------------
    def _results(self, user: str, run_id: int | None) -> RunResults | None:
        if run_id is None:
            return None
        try:
            return RunResults.load(self.evals, self.evals.run(user, int(run_id)))
        except EvalNotFound:
            return None

    def next_pair(self, run_id: int | None, request: gr.Request) -> tuple:
        """The next pair to review: header, prompt, reference, reply A, reply B, the item."""
        results = self._results(user_of(request), run_id)
        if results is None:
            return NO_RUN, "", "", "", "", None
        item, voted, ready = results.next_item()
        total = results.run.total // len(results.run.candidates) * _pairs(results.run)
        if item is None:
            waiting = total - ready
            header = (f"All {ready} pairs reviewed." if ready else "No pair is ready yet.")
            if waiting:
                header += f" {waiting} more once the run has their replies."
            return header, "", "", "", "", None
        prompt = results.run.prompts[item.prompt]
        header = _pair_header(item, prompt.category, voted, ready, total)
        reference = f"**Reference:** {prompt.reference}" if prompt.reference else ""
        a = results.replies[(item.prompt, item.left)].content or "*(empty reply)*"
        b = results.replies[(item.prompt, item.right)].content or "*(empty reply)*"
        return header, prompt.text, reference, a, b, [item.prompt, item.left, item.right]

    def header(self, run_id: int | None, shown: Sequence[int] | None,
               request: gr.Request) -> str:
        """The header of the pair on the page, its counts brought up to date (more pairs
        become ready while the run goes on; the shown pair stays)."""
        results = self._results(user_of(request), run_id)
        if results is None or not shown:
            return NO_RUN
        item = ReviewItem(*shown)
        _, voted, ready = results.next_item()
        total = results.run.total // len(results.run.candidates) * _pairs(results.run)
        return _pair_header(item, results.run.prompts[item.prompt].category, voted, ready,
                            total)

    def vote(self, choice: str, item: Sequence[int] | None, run_id: int | None,
             request: gr.Request) -> str:
        """Store the vote on the shown pair; returns the names behind A and B."""
        results = self._results(user_of(request), run_id)
        if results is None or not item:
            return "Nothing to vote on."
        shown = ReviewItem(*item)
        a, b, outcome = outcome_for(shown, choice)
        self.evals.add_vote(results.run.id, EvalVote(shown.prompt, a, b, outcome,
                                                     shown_first=shown.left))
        labels = [c.label for c in results.run.candidates]
        return (f"You voted **{CHOICES[choice]}** on prompt {shown.prompt + 1}: A was "
                f"**{labels[shown.left]}**, B was **{labels[shown.right]}**.")

    # -- ratings, judge, report ------------------------------------------------------------
    def ratings(self, run_id: int | None, request: gr.Request) -> tuple:
        """Rating rows, "which to choose" rows, and a note on the style coefficients."""
        results = self._results(user_of(request), run_id)
        if results is None or not (results.votes or results.judge_votes):
            return [], [], "No votes yet: review some pairs."
        judged = [row for judge in results.judge_votes
                  for row in _rating_rows(results.tables(judge), f" (judge {judge})")]
        if not results.votes:
            return judged, [], "No votes of yours yet: the rows are the judge's."
        tables = results.tables()
        return _rating_rows(tables) + judged, [
            [c.category or "Overall", c.best, verdict, c.runner_up or "–",
             round(c.tokens_per_second, 1) if c.tokens_per_second else "–",
             format_bytes(c.memory_bytes) if c.memory_bytes else "–"]
            for c, verdict in results.choices(tables)], _style_note(tables[0])

    def plot(self, run_id: int | None, request: gr.Request):
        results = self._results(user_of(request), run_id)
        if results is None or not results.votes:
            return None
        from chatcore.eval_ratings import quality_speed_plot

        tables = results.tables()
        path = self._export_path(f"run-{results.run.id}-plot", "png")
        return str(quality_speed_plot(tables[0], results.speed(), results.memory(), path))

    def start_judge(self, run_id: int | None, judge: str | None, request: gr.Request) -> str:
        user = user_of(request)
        if run_id is None or not judge:
            return "Pick a run and a judge model."
        try:
            self.judges.start(user, int(run_id), judge)
        except (UnknownModel, EvalNotFound) as exc:
            return f"⚠️ {exc}"
        return self.judge_status(run_id, request)

    def judge_status(self, run_id: int | None, request: gr.Request) -> str:
        results = self._results(user_of(request), run_id)
        if results is None:
            return ""
        lines = []
        progress = self.judges.progress(results.run.id)
        if progress is not None and (progress.running or progress.error):
            state = f"⚠️ {progress.error}" if progress.error else "judging"
            lines.append(f"{progress.judge}: {state}, {progress.done} of {progress.total} pairs.")
        for judge, votes in results.judge_votes.items():
            agreement = results.agreement(judge)
            agree = (f"agrees with you on {agreement.rate:.0%} of {agreement.total} pairs"
                     if agreement.rate is not None else "no pair voted by both of you yet")
            lines.append(f"**{judge}**: {len(votes)} votes (kept apart from yours; its "
                         f"ratings are the table's “judge” rows), {agree}.")
        return "\n\n".join(lines) or "No judge votes yet."

    def export_report(self, run_id: int | None, request: gr.Request) -> tuple:
        results = self._results(user_of(request), run_id)
        if results is None:
            return gr.update(visible=False), "Pick a run to export."
        stem = f"evaluation-{results.run.id}-{_slug(results.run.set_name)}-" \
               f"{secrets.token_hex(4)}"
        paths = export_run(results, self.export_dir, stem)
        return gr.update(value=[str(p) for p in paths], visible=True), \
            f"Exported {', '.join(p.name for p in paths)}."

    def _export_path(self, stem: str, kind: str) -> Path:
        self.export_dir.mkdir(parents=True, exist_ok=True)
        return self.export_dir / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-" \
                                 f"{secrets.token_hex(4)}.{kind}"


def _pair_header(item: ReviewItem, category: str, voted: int, ready: int, total: int) -> str:
    return (f"**Pair {voted + 1} of {ready}** (of {total} in the run) · prompt "
            f"{item.prompt + 1}" + (f" · {category}" if category else ""))


def _pairs(run: EvalRun) -> int:
    k = len(run.candidates)
    return k * (k - 1) // 2


def _prompts_from(rows) -> list[EvalPrompt]:
    """The table's rows (a pandas DataFrame or lists) as prompts; empty rows are skipped."""
    values = rows.values.tolist() if hasattr(rows, "values") else list(rows or [])
    found = []
    for row in values:
        cells = [("" if cell is None else str(cell)) for cell in list(row) + ["", "", ""]][:3]
        if any(cell.strip() for cell in cells):
            found.append(EvalPrompt(cells[0], cells[1], cells[2]))
    return found


def _rating_rows(tables: list[RatingTable], whose: str = "") -> list[list]:
    rows = []
    for table in tables:
        style = {r.model: r for r in table.style}
        for r in table.plain:
            s = style.get(r.model)
            rows.append([(table.category or "Overall") + whose, r.model, round(r.rating),
                         interval_text(r), round(s.rating) if s else "–",
                         interval_text(s) if s else "–", r.games])
    return rows


def _style_note(table: RatingTable) -> str:
    if not table.coefficients:
        return ""
    length = table.coefficients.get("tokens", 0.0)
    lean = ("longer replies win more often than their quality alone explains"
            if length > 0.1 else "shorter replies win more often" if length < -0.1
            else "reply length hardly sways your votes")
    return (f"Style control: {lean} (length coefficient {length:+.2f}). The style-controlled "
            "column rates the models as if their replies had the same length and formatting.")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-")[:40] or "set"
