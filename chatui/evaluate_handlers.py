"""The Evaluate tab's callbacks: runs and their progress, the blind review queue, ratings, the
judge and the report (the prompt sets' are in chatui/prompt_set_handlers.py). Each returns
plain values or gradio updates; the layout is in chatui/evaluate_tab.py."""
from __future__ import annotations

import html
import time
from collections.abc import Sequence
from pathlib import Path

import gradio as gr

from backends.base import GenParams
from backends.sampling import SamplingSettings
from chatcore.costs.book import CostBook
from chatcore.costs.words import money
from chatcore.evaluate.ratings import RatingTable, save_figure
from chatcore.evaluate.value import RunCosts, cheapest_not_worse, quality_cost_figure, run_costs
from chatcore.evaluate.report import export_run
from chatcore.evaluate.results import RunResults, interval_text
from chatcore.evaluate.runner import EvalRunner, RunRefused
from chatcore.evaluate.store import EvalNotFound, EvalRun, EvalStore, EvalVote
from chatcore.i18n import Texts
from chatcore.generation.manager import ModelManager, ModelUnavailable, UnknownModel
from chatcore.generation.memory import format_bytes
from chatcore.evaluate.prompt_sets import PromptSet
from chatcore.evaluate.review_queue import ReviewItem, outcome_for
from chatui.chat_handlers import user_of
from chatui.exports import ExportFiles
from chatui.prompt_set_handlers import PromptSetHandlers, slug, stamped_path

# The tables' columns, as catalog keys under evaluate.<table>_column (their headers).
RATING_COLUMNS = ["category", "model", "rating", "interval", "style", "style_interval", "games"]
CHOICE_COLUMNS = ["category", "choose", "ahead", "runner_up", "speed", "memory"]
# The vote buttons' values (catalog keys evaluate.choice.<value>, evaluate.review.button.<value>).
VOTES = ["A", "B", "tie", "bad"]
NONE = "–"  # an empty cell
# The progress bar and its line: replies done, replies in all, the line (escaped HTML).
PROGRESS_HTML = ('<progress id="eval-progress-bar" value="{0}" max="{1}" style="width:100%">'
                 '</progress><div id="eval-progress-text">{2}</div>')


def _duration(seconds: float, texts: Texts) -> str:
    if seconds < 90:
        return texts("evaluate.run.seconds", n=texts.number(seconds))
    if seconds < 5400:
        return texts("evaluate.run.minutes", n=texts.number(seconds / 60))
    return texts("evaluate.run.hours", n=texts.number(seconds / 3600, 1))


class EvaluateHandlers:
    def __init__(self, manager: ModelManager, evals: EvalStore, runner: EvalRunner,
                 exports: ExportFiles, *, texts: Texts, costs: CostBook | None = None) -> None:
        self.manager = manager
        self.costs = costs
        self.evals = evals
        self.runner = runner
        self.judges = runner.judges
        self.exports = exports
        self.texts = texts
        self.sets = PromptSetHandlers(evals, exports, texts=self.texts)

    def find_set(self, user: str, choice: str | None) -> PromptSet | None:
        """The set a run starts from (the sets' own callbacks are `self.sets`)."""
        return self.sets.find_set(user, choice)

    # -- runs ------------------------------------------------------------------------------
    def run_choices(self, user: str) -> list[tuple[str, int]]:
        found = []
        for run in self.evals.runs(user):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created))
            found.append((self.texts("evaluate.run.choice", id=str(run.id), set=run.set_name,
                                     n=len(run.candidates), when=when), run.id))
        return found

    def start_run(self, choice: str | None, system: str, models: Sequence[str | None],
                  settings: Sequence[SamplingSettings], request: gr.Request = None) -> tuple:
        """`models` and `settings`: each candidate row's; rows without a model are left
        out."""
        user = user_of(request)
        prompt_set = self.find_set(user, choice)
        if prompt_set is None:
            return gr.update(), self.texts("evaluate.run.pick_set_first")
        setups = []
        for model_id, chosen in zip(models, settings):
            if not model_id:
                continue
            try:
                self.manager.entry(model_id)
            except (UnknownModel, ModelUnavailable) as exc:
                return gr.update(), self.texts("evaluate.error", detail=str(exc))
            setups.append((model_id, GenParams(chosen)))
        try:
            run_id = self.runner.start(user, prompt_set, setups, system.strip())
        except RunRefused as exc:
            return gr.update(), self.texts("evaluate.run.not_started", detail=str(exc))
        return (gr.update(choices=self.run_choices(user), value=run_id),
                self.texts("evaluate.run.started", id=str(run_id),
                           prompts=len(prompt_set.prompts), models=len(setups)))

    def progress_html(self, run_id: int | None, request: gr.Request) -> str:
        user = user_of(request)
        if run_id is None:
            return self.texts("evaluate.no_run")
        try:
            progress = self.runner.progress(user, int(run_id))
            run = self.evals.run(user, int(run_id))
        except EvalNotFound as exc:
            return str(exc)
        texts = self.texts
        parts = [texts("evaluate.run.replies", done=progress.done, total=progress.total),
                 self._state(progress.state)]
        if progress.failed:
            parts.append(texts("evaluate.run.failed", n=progress.failed))
        if progress.current:
            parts.append(texts("evaluate.run.now", models=", ".join(progress.current)))
        if progress.seconds_left is not None:
            parts.append(texts("evaluate.run.left",
                               duration=_duration(progress.seconds_left, texts)))
        if run.note:
            parts.append(run.note)
        return PROGRESS_HTML.format(progress.done, progress.total,
                                    html.escape(" · ".join(parts)))

    def control(self, action: str, run_id: int | None, request: gr.Request) -> tuple:
        user = user_of(request)
        if run_id is None:
            return gr.update(), self.texts("evaluate.run.pick_first")
        try:
            {"pause": self.runner.pause, "resume": self.runner.resume,
             "cancel": self.runner.cancel}[action](user, int(run_id))
        except (RunRefused, EvalNotFound) as exc:
            return gr.update(), self.texts("evaluate.error", detail=str(exc))
        return gr.update(choices=self.run_choices(user), value=run_id), \
            self.texts("evaluate.run.state_line", id=str(run_id),
                       state=self._state(self.evals.run(user, int(run_id)).state))

    def followed_status(self, run_id: int | None, request: gr.Request) -> tuple:
        """The status line and the run it follows: both kept while the run runs (its
        "started" line stays true; the run is not written back, so a tick that began before
        Start answered cannot undo Start's), its state line once it stopped (done, ...)."""
        if run_id is None:
            return gr.update(), gr.update()
        try:
            state = self.evals.run(user_of(request), int(run_id)).state
        except EvalNotFound:
            return gr.update(), None
        if state == "running":
            return gr.update(), gr.update()
        return self.texts("evaluate.run.state_line", id=str(run_id),
                          state=self._state(state)), None

    def _state(self, state: str) -> str:
        """A run's state in words (a state this page does not know: as stored)."""
        key = f"evaluate.run_state.{state}"
        return self.texts(key) if key in self.texts.messages else state

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
        texts = self.texts
        results = self._results(user_of(request), run_id)
        if results is None:
            return texts("evaluate.no_run"), "", "", "", "", None
        item, voted, ready = results.next_item()
        total = results.run.total // len(results.run.candidates) * _pairs(results.run)
        if item is None:
            waiting = total - ready
            header = texts("evaluate.review.all_reviewed", n=ready) if ready \
                else texts("evaluate.review.none_ready")
            if waiting:
                header += " " + texts("evaluate.review.more", n=waiting)
            return header, "", "", "", "", None
        prompt = results.run.prompts[item.prompt]
        header = _pair_header(item, prompt.category, voted, ready, total, texts)
        reference = texts("evaluate.review.reference", reference=prompt.reference) \
            if prompt.reference else ""
        empty = texts("evaluate.review.empty")
        a = results.replies[(item.prompt, item.left)].content or empty
        b = results.replies[(item.prompt, item.right)].content or empty
        return header, prompt.text, reference, a, b, [item.prompt, item.left, item.right]

    def header(self, run_id: int | None, shown: Sequence[int] | None,
               request: gr.Request) -> str:
        """The header of the pair on the page, its counts brought up to date (more pairs
        become ready while the run goes on; the shown pair stays)."""
        results = self._results(user_of(request), run_id)
        if results is None or not shown:
            return self.texts("evaluate.no_run")
        item = ReviewItem(*shown)
        _, voted, ready = results.next_item()
        total = results.run.total // len(results.run.candidates) * _pairs(results.run)
        return _pair_header(item, results.run.prompts[item.prompt].category, voted, ready,
                            total, self.texts)

    def vote(self, choice: str, item: Sequence[int] | None, run_id: int | None,
             request: gr.Request) -> str:
        """Store the vote on the shown pair; returns the names behind A and B."""
        results = self._results(user_of(request), run_id)
        if results is None or not item:
            return self.texts("evaluate.review.nothing")
        shown = ReviewItem(*item)
        a, b, outcome = outcome_for(shown, choice)
        self.evals.add_vote(results.run.id, EvalVote(shown.prompt, a, b, outcome,
                                                     shown_first=shown.left))
        labels = [c.label for c in results.run.candidates]
        return self.texts("evaluate.review.voted", choice=self.texts(f"evaluate.choice.{choice}"),
                          prompt=shown.prompt + 1, a=labels[shown.left],
                          b=labels[shown.right])

    # -- ratings, judge, report ------------------------------------------------------------
    def ratings(self, run_id: int | None, request: gr.Request) -> tuple:
        """Rating rows, "which to choose" rows, and a note on the style coefficients."""
        texts = self.texts
        results = self._results(user_of(request), run_id)
        if results is None or not (results.votes or results.judge_votes):
            return [], [], texts("evaluate.ratings.no_votes")
        judged = [row for judge in results.judge_votes
                  for row in _rating_rows(results.tables(judge), texts, judge)]
        if not results.votes:
            return judged, [], texts("evaluate.ratings.judge_only")
        tables = results.tables()
        return _rating_rows(tables, texts) + judged, [
            [c.category or texts("evaluate.ratings.overall"), c.best, verdict,
             c.runner_up or NONE,
             round(c.tokens_per_second, 1) if c.tokens_per_second else NONE,
             format_bytes(c.memory_bytes) if c.memory_bytes else NONE]
            for c, verdict in results.choices(tables, texts)], \
            "\n\n".join(filter(None, [_style_note(tables[0], texts),
                                       self._cheapest(results, tables[0])]))

    def plot(self, run_id: int | None, request: gr.Request):
        results = self._results(user_of(request), run_id)
        if results is None or not results.votes:
            return None
        from chatcore.evaluate.ratings import quality_speed_plot

        tables = results.tables()
        path = self._export_path(f"run-{results.run.id}-plot", "png")
        return str(quality_speed_plot(tables[0], results.speed(), results.memory(), path))

    def cost_plot(self, run_id: int | None, request: gr.Request):
        """Quality against cost per million output tokens, beside the speed plot."""
        results = self._results(user_of(request), run_id)
        costs = self.run_costs(results) if results is not None and results.votes else None
        if costs is None:
            return None
        path = self._export_path(f"run-{results.run.id}-cost", "png")
        return str(save_figure(quality_cost_figure(results.tables()[0], costs), path))

    def start_judge(self, run_id: int | None, judge: str | None, request: gr.Request) -> str:
        user = user_of(request)
        if run_id is None or not judge:
            return self.texts("evaluate.judge.pick")
        try:
            self.judges.start(user, int(run_id), judge)
        except (UnknownModel, EvalNotFound) as exc:
            return self.texts("evaluate.error", detail=str(exc))
        return self.judge_status(run_id, request)

    def judge_status(self, run_id: int | None, request: gr.Request) -> str:
        results = self._results(user_of(request), run_id)
        if results is None:
            return ""
        texts = self.texts
        lines = []
        progress = self.judges.progress(results.run.id)
        if progress is not None and (progress.running or progress.error):
            state = texts("evaluate.error", detail=progress.error) if progress.error \
                else texts("evaluate.judge.judging")
            lines.append(texts("evaluate.judge.progress", judge=progress.judge, state=state,
                               done=progress.done, total=progress.total))
        for judge, votes in results.judge_votes.items():
            agreement = results.agreement(judge)
            agree = texts("evaluate.judge.agrees", rate=f"{agreement.rate:.0%}",
                          total=agreement.total) if agreement.rate is not None \
                else texts("evaluate.judge.no_common")
            lines.append(texts("evaluate.judge.votes", judge=judge, n=len(votes), agree=agree))
        return "\n\n".join(lines) or texts("evaluate.judge.none_yet")

    def export_report(self, run_id: int | None, request: gr.Request) -> tuple:
        results = self._results(user_of(request), run_id)
        if results is None:
            return gr.update(visible=False), self.texts("evaluate.ratings.pick_run_to_export")
        stem = f"evaluation-{results.run.id}-{slug(results.run.set_name)}"
        paths = export_run(results, self.exports.folder(), stem, self.run_costs(results))
        return gr.update(value=[str(p) for p in paths], visible=True), \
            self.texts("evaluate.ratings.exported", names=", ".join(p.name for p in paths))

    def run_costs(self, results: RunResults) -> RunCosts | None:
        """The candidates' cost per million output tokens now, in the settings' currency."""
        if self.costs is None:
            return None
        return run_costs(results.run, self.costs, self.manager.registry,
                         self.costs.settings(self.texts.language))

    def _cheapest(self, results: RunResults, table: RatingTable) -> str:
        """"Cheapest not clearly worse than the best: …", or "" without costs."""
        costs = self.run_costs(results)
        cheap = cheapest_not_worse(table, costs) if costs else None
        if cheap is None or costs is None:
            return ""
        return self.texts("costs.cheapest", model=cheap.model, amount=money(
            costs.per_million[cheap.model], costs.currency, self.texts))

    def _export_path(self, stem: str, kind: str) -> Path:
        return stamped_path(self.exports, stem, kind)


def _pair_header(item: ReviewItem, category: str, voted: int, ready: int, total: int,
                 texts: Texts) -> str:
    return texts("evaluate.review.header", voted=voted + 1, ready=ready, total=total,
                 prompt=item.prompt + 1) + (f" · {category}" if category else "")


def _pairs(run: EvalRun) -> int:
    k = len(run.candidates)
    return k * (k - 1) // 2


def _rating_rows(tables: list[RatingTable], texts: Texts, judge: str | None = None
                 ) -> list[list]:
    """The ratings table's rows; a judge's rows name it after their category."""
    rows = []
    for table in tables:
        style = {r.model: r for r in table.style}
        category = table.category or texts("evaluate.ratings.overall")
        if judge is not None:
            category = texts("evaluate.ratings.judged", category=category, judge=judge)
        for r in table.plain:
            s = style.get(r.model)
            rows.append([category, r.model, round(r.rating),
                         interval_text(r, texts), round(s.rating) if s else NONE,
                         interval_text(s, texts) if s else NONE, r.games])
    return rows


def _style_note(table: RatingTable, texts: Texts) -> str:
    if not table.coefficients:
        return ""
    length = table.coefficients.get("tokens", 0.0)
    lean = "longer" if length > 0.1 else "shorter" if length < -0.1 else "even"
    return texts("evaluate.ratings.style_note", lean=texts(f"evaluate.ratings.{lean}"),
                 coefficient=f"{length:+.2f}")

