"""The Evaluate tab's prompt-set callbacks: list, open, edit, save, duplicate, delete, import
and export a set. Built-in sets are read-only; a person's own sets are stored per user. The
layout is in chatui/evaluate_tab.py; runs, review and ratings in chatui/evaluate_handlers.py."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import gradio as gr

from chatcore.evaluate.prompt_sets import (
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
from chatcore.evaluate.store import EvalNotFound, EvalStore, SetNameTaken
from chatcore.i18n import Texts
from chatui.chat_handlers import user_of
from chatui.exports import ExportFiles
from chatui.uploads import discard_uploads

log = logging.getLogger(__name__)

# A set picker's values: the prefix says whose set the name is.
BUILTIN, MINE = "builtin:", "mine:"
# The set table's columns, as catalog keys under evaluate.set_column (their headers).
SET_COLUMNS = ["prompt", "category", "reference"]


class PromptSetHandlers:
    def __init__(self, evals: EvalStore, exports: ExportFiles, *,
                 texts: Texts) -> None:
        self.evals = evals
        self.exports = exports
        self.texts = texts

    def set_choices(self, user: str) -> list[tuple[str, str]]:
        found = [(self.texts("evaluate.sets.builtin_choice", name=s.name, n=len(s.prompts)),
                  BUILTIN + s.name) for s in builtin_sets()]
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
        """Name and rows of the chosen set (whoever chose it: a person, or Save, Duplicate
        and Import, whose own confirmation stays on the status line)."""
        prompt_set = self.find_set(user_of(request), choice)
        if prompt_set is None:
            return "", [["", "", ""]]
        return prompt_set.name, [[p.text, p.category, p.reference] for p in prompt_set.prompts]

    def set_note(self, choice: str | None, request: gr.Request) -> str:
        """The status line for a set a person picked: how to keep edits of a built-in."""
        prompt_set = self.find_set(user_of(request), choice)
        return self.texts("evaluate.sets.builtin_note") \
            if prompt_set is not None and prompt_set.builtin else ""

    def new_set(self) -> tuple:
        return "", [["", "", ""]], self.texts("evaluate.sets.new_note")

    def add_prompt(self, rows, text: str, category: str, reference: str) -> tuple:
        """Append a row to the table (Save stores the set); the fields empty again, the
        category too (each prompt's own, not one carried over unseen)."""
        prompts = _prompts_from(rows)
        if not text.strip():
            return (gr.update(), text, category, reference,
                    self.texts("evaluate.sets.write_first"))
        prompts.append(EvalPrompt(text.strip(), category.strip(), reference.strip()))
        return ([[p.text, p.category, p.reference] for p in prompts], "", "", "",
                self.texts("evaluate.sets.added", n=len(prompts)))

    def save_set(self, choice: str | None, name: str, rows, request: gr.Request) -> tuple:
        user = user_of(request)
        try:
            prompt_set = make_set(name, _prompts_from(rows))
        except PromptSetError as exc:
            return gr.update(), self.texts("evaluate.sets.not_saved", detail=str(exc))
        old = choice.removeprefix(MINE) if choice and choice.startswith(MINE) else ""
        try:
            self.evals.save_prompt_set(user, prompt_set, old_name=old)
        except SetNameTaken as exc:
            log.info("prompt set not saved as %r: the name is taken", prompt_set.name)
            return gr.update(), self._name_taken(exc)
        return (gr.update(choices=self.set_choices(user), value=MINE + prompt_set.name),
                self.texts("evaluate.sets.saved", name=prompt_set.name,
                           n=len(prompt_set.prompts)))

    def duplicate_set(self, choice: str | None, request: gr.Request) -> tuple:
        user = user_of(request)
        prompt_set = self.find_set(user, choice)
        if prompt_set is None:
            return gr.update(), self.texts("evaluate.sets.pick_to_duplicate")
        taken = self._taken_names(user) + [prompt_set.name]
        copy = make_set(unique_name(prompt_set.name, taken), prompt_set.prompts)
        try:
            self.evals.save_prompt_set(user, copy)
        except SetNameTaken as exc:  # another tab took the name a moment ago
            return gr.update(), self._name_taken(exc)
        return (gr.update(choices=self.set_choices(user), value=MINE + copy.name),
                self.texts("evaluate.sets.duplicated", name=copy.name))

    def delete_set(self, choice: str | None, request: gr.Request) -> tuple:
        user = user_of(request)
        if not choice or not choice.startswith(MINE):
            return gr.update(), self.texts("evaluate.sets.builtin_kept")
        name = choice.removeprefix(MINE)
        try:
            self.evals.delete_prompt_set(user, name)
        except EvalNotFound as exc:
            return gr.update(), self.texts("evaluate.error", detail=str(exc))
        return (gr.update(choices=self.set_choices(user), value=None),
                self.texts("evaluate.sets.deleted", name=name))

    def import_set(self, upload: str | None, request: gr.Request) -> tuple:
        """All or nothing: a bad row names its line and nothing is saved."""
        user = user_of(request)
        if not upload:
            return gr.update(), ""
        path = Path(upload)
        try:
            try:
                prompts = parse_file(path.name, path.read_bytes())
            finally:
                discard_uploads([upload])
            stem = path.stem[:60] or self.texts("evaluate.sets.imported_name")
            prompt_set = make_set(unique_name(stem, self._taken_names(user)), prompts)
            self.evals.save_prompt_set(user, prompt_set)
        except (PromptSetError, SetNameTaken, OSError) as exc:
            return gr.update(), self.texts("evaluate.sets.not_imported", detail=str(exc))
        return (gr.update(choices=self.set_choices(user), value=MINE + prompt_set.name),
                self.texts("evaluate.sets.imported", n=len(prompt_set.prompts),
                           name=prompt_set.name))

    def _taken_names(self, user: str) -> list[str]:
        """Every name a new set of this user's cannot take: the built-in sets' and theirs."""
        return [s.name for s in builtin_sets()] + [s.name for s in self.evals.prompt_sets(user)]

    def _name_taken(self, exc: SetNameTaken) -> str:
        key = "evaluate.sets.name_builtin" if exc.builtin else "evaluate.sets.name_taken"
        return self.texts(key, name=exc.taken_by)

    def export_set(self, choice: str | None, kind: str, request: gr.Request) -> tuple:
        prompt_set = self.find_set(user_of(request), choice)
        if prompt_set is None:
            return gr.update(visible=False), self.texts("evaluate.sets.pick_to_export")
        path = stamped_path(self.exports, slug(prompt_set.name), kind)
        path.write_text(to_csv(prompt_set) if kind == "csv" else to_jsonl(prompt_set),
                        encoding="utf-8")
        return (gr.update(value=str(path), visible=True),
                self.texts("evaluate.sets.exported", name=path.name))


def stamped_path(exports: ExportFiles, stem: str, kind: str) -> Path:
    """Where to write an Evaluate download: its stem, the time, its kind."""
    return exports.path(f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.{kind}")


def slug(text: str) -> str:
    """A set's name as part of a file name."""
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-")[:40] or "set"


def _prompts_from(rows) -> list[EvalPrompt]:
    """The table's rows (a pandas DataFrame or lists) as prompts; empty rows are skipped."""
    values = rows.values.tolist() if hasattr(rows, "values") else list(rows or [])
    found = []
    for row in values:
        cells = [("" if cell is None else str(cell)) for cell in list(row) + ["", "", ""]][:3]
        if any(cell.strip() for cell in cells):
            found.append(EvalPrompt(cells[0], cells[1], cells[2]))
    return found
