"""The Models tab's library: scan this machine, add a model, edit or remove an entry,
reload the files. Handlers only; every refusal is a sentence, never a traceback, and the
library itself refuses users who are not admins (not only the hidden buttons)."""
from __future__ import annotations

import re
from pathlib import Path

import gradio as gr

from backends.chat_template import COMPLETION_MODE
from backends.sampling import SamplingSettings
from chatcore.generation.registry import MAX_DESCRIPTION, MAX_ID, MAX_NAME, ConfigError
from chatcore.library.download_queue import DownloadJob
from chatcore.library.fit import VERDICTS, Fit
from chatcore.library.hub_errors import HubError
from chatcore.i18n import Texts
from chatcore.library.model_library import FilesRefused, ModelLibrary
from chatcore.library.errors import LibraryError
from chatcore.generation.manager import ModelUnavailable, UnknownModel
from chatcore.generation.memory import format_bytes
from chatcore.library.model_files import FoundModel
from chatui.model_filters import tags_line
from chatui.sampling_controls import SettingsControls
from chatui.chat_handlers import user_of

# The scan table's columns, by id; their headers come from the catalog (library.column.<id>).
SCAN_COLUMN_IDS = ("scan_id", "source", "name", "quant", "params", "size", "context",
                   "template", "fit", "problem")
MAX_PATH = 4096
MAX_TEMPLATE_FIELD = 20_000
KINDS = ("gguf", "checkpoint")  # the Hub search's kinds (library.kind.<id>)
QUANTIZATIONS = ("none", "8bit", "4bit")  # labels: library.quantization.<id>
# A verdict's word in a box coloured by its class (chatui/styles.py): slug, then word.
BADGE = '<span class="fit-badge fit-{}">{}</span>'


def _known(texts: Texts, key: str, fallback: str) -> str:
    """The catalog's word for a value chatcore or an engine gives in English, when the
    catalog has one; the English value itself otherwise."""
    return texts(key) if key in texts.messages else fallback


def _slug(word: str) -> str:
    """"won't fit" -> "wont_fit", "making the context" -> "making_the_context"."""
    return re.sub(r"[^a-z0-9]+", "_", word.lower().replace("'", "")).strip("_")


def verdict_word(verdict: str, texts: Texts) -> str:
    """A fit verdict ("fits", "tight", "won't fit") in the page's language."""
    return _known(texts, f"library.verdict.{_slug(verdict)}", verdict)


def fit_badge(fit: Fit, texts: Texts) -> str:
    """The verdict in the page's language, as a word in a box coloured by CSS (chatui/
    styles.py): an emoji circle needs a colour-emoji font many machines lack."""
    return _badge(fit.verdict, texts)


def _badge(verdict: str, texts: Texts) -> str:
    return BADGE.format(_slug(verdict), verdict_word(verdict, texts))


def remote_summary(summary: str, texts: Texts) -> str:
    """A missing entry's "4.7 GB · fits" from the library, its badge in the page's
    language ("…" while it is read, and a refusal, stay as they are)."""
    head, _, verdict = summary.rpartition(" · ")
    if not head or verdict not in VERDICTS:
        return texts.say(summary)
    return f"{head} · {_badge(verdict, texts)}"


def load_step(step: str, texts: Texts) -> str:
    """An engine's load step ("reading", "ready") in the page's language, when the catalog
    knows it."""
    return _known(texts, f"models.step.{_slug(step)}", step)


def _duration(seconds: float, texts: Texts) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return texts("library.duration.hours", hours=seconds // 3600,
                     minutes=seconds % 3600 // 60)
    if seconds >= 60:
        return texts("library.duration.minutes", minutes=seconds // 60, seconds=seconds % 60)
    return texts("library.duration.seconds", seconds=seconds)


def download_progress(job: DownloadJob, texts: Texts) -> str:
    """"412 MB of 4.7 GB · 38 MB/s · 1 min 52 s left", in the page's language."""
    amount = format_bytes(job.done_bytes)
    if job.total_bytes:
        amount = texts("library.download.amount", done=amount,
                       total=format_bytes(job.total_bytes))
    if job.state == "queued":
        return texts("library.download.queued")
    if job.state == "done":
        return texts("library.download.done", size=format_bytes(job.total_bytes or job.done_bytes))
    if job.state == "failed":
        return texts("library.download.failed", detail=str(job.error))
    if job.state == "cancelled":
        return texts("library.download.cancelled", amount=amount)
    parts = [amount]
    if job.bytes_per_s:
        parts.append(f"{format_bytes(job.bytes_per_s)}/s")
    if job.seconds_left is not None:
        parts.append(texts("library.download.left", duration=_duration(job.seconds_left, texts)))
    return " · ".join(parts)


def scan_row(library: ModelLibrary, found: FoundModel, texts: Texts) -> list[str]:
    fit = library.fit_of_found(found)
    template = {True: "yes", False: "none"}.get(found.has_chat_template)
    name = texts("lora.scan_adapter", name=found.name, base=found.adapter_for) \
        if found.adapter_for else found.name
    return [found.scan_id, found.source, name, found.quantization or "?",
            f"{found.n_params / 1e9:.2f}B" if found.n_params else "?",
            format_bytes(found.size_bytes), str(found.context_length or "?"),
            texts(f"library.template.{template}") if template else "?",
            fit_badge(fit, texts) if fit else "", found.problem or ""]


class LibraryHandlers:
    def __init__(self, library: ModelLibrary, *, texts: Texts) -> None:
        self.library = library
        self.texts = texts

    def _error(self, exc: Exception) -> str:
        return self.texts("library.error", detail=str(exc))

    def access_note(self, request: gr.Request | None = None) -> str:
        if self.library.editable_by(user_of(request) or None):
            return ""
        return self.texts("library.read_only")

    def folder_field(self, request: gr.Request | None = None) -> dict:
        """The Scan's folder box takes typing only from those who may look at any folder;
        the library refuses the others anyway, this spares them a refusal."""
        return gr.update(interactive=self.library.may_look_at_files(user_of(request) or None))

    def scan(self, folder: str, request: gr.Request | None = None) -> tuple:
        """The configured model folders, and for admins the folder typed; anyone else who
        types a folder gets one refusal, asked before the folder is looked at."""
        texts = self.texts
        user = user_of(request) or None
        folder = (folder or "").strip()
        extra = []
        if folder:
            if not self.library.may_look_at_files(user):
                return gr.skip(), gr.skip(), texts("library.files_refused")
            path = Path(folder[:MAX_PATH]).expanduser()
            if not path.is_dir():
                return gr.skip(), gr.skip(), texts("library.scan.not_a_folder",
                                                   folder=folder[:200])
            extra.append(path)
        try:
            result = self.library.scan(extra, user=user)
        except FilesRefused:
            return gr.skip(), gr.skip(), texts("library.files_refused")
        rows = [scan_row(self.library, found, texts) for found in result.models]
        usable = [(f"{f.name} ({f.source})", f.scan_id) for f in result.models if not f.problem]
        unreadable = len(result.models) - len(usable)
        note = texts("library.scan.found", n=len(result.models))
        note += texts("library.scan.unreadable", n=unreadable) if unreadable else ""
        note += texts("library.scan.skipped", n=len(result.skipped)) if result.skipped else "."
        return (rows, gr.update(choices=usable, value=usable[0][1] if usable else None), note)

    def fit(self, text: str | None, context_length: float | None,
            request: gr.Request | None = None) -> str:
        """The badge for the model about to be added, at the context chosen: any model of
        the person's own scan; a typed path only for admins."""
        texts = self.texts
        if not text:
            return ""
        try:
            found = self.library.find(str(text)[:MAX_PATH], user=user_of(request) or None)
        except FilesRefused:
            return texts("library.files_refused")
        except LibraryError as exc:
            return self._error(exc)
        if found.problem:  # "unreadable: <path>: <why>" said once, in the page's words
            return texts("library.fit.unreadable",
                         problem=found.problem.removeprefix("unreadable: "))
        fit = self.library.fit_of_found(found, int(context_length) if context_length else None)
        if fit is None:
            return texts("library.fit.no_estimate")
        template = texts("library.fit.base") if found.base else \
            texts("library.fit.no_template") if found.has_chat_template is False else ""
        return f"**{fit_badge(fit, texts)}**: {texts.say(fit.detail)}{template}"

    def add(self, text: str | None, model_id: str, context_length: float | None,
            request: gr.Request | None = None) -> tuple[str, dict]:
        texts = self.texts
        model_id = (model_id or "").strip()
        if len(model_id) > MAX_ID:
            return texts("library.id_too_long", n=len(model_id), limit=MAX_ID), gr.skip()
        try:
            entry, notes = self.library.add(str(text or "")[:MAX_PATH], model_id or None,
                                            user=user_of(request) or None,
                                            context_length=int(context_length)
                                            if context_length else None)
        except (LibraryError, ConfigError) as exc:
            return self._error(exc), gr.skip()
        lines = [texts("library.added", model=entry.id, name=entry.name)]
        lines += [f"ℹ️ {texts(f'library.note.{note.kind}', **note.params)}" for note in notes]
        return "  \n".join(lines), gr.update(choices=self._choices(), value=entry.id)

    def entry_fields(self, model_id: str | None) -> tuple:
        """The selected entry's editable fields, for the edit form."""
        try:
            entry = self.library.manager.entry(model_id or "")
        except (ModelUnavailable, UnknownModel):
            return ("", None, "", "", None, None, *SettingsControls.shown(SamplingSettings()))
        spec = entry.quantization_spec
        return (entry.name, entry.context_length, entry.chat_template or "", entry.description,
                entry.backend if entry.backend != "openai" else None,
                f"{spec.bits}bit" if spec else "none", *SettingsControls.shown(entry.defaults))

    def save(self, model_id: str, name: str, context_length: float | None, template: str,
             description: str, engine: str | None = None, quantization: str | None = None,
             defaults: SamplingSettings | None = None,
             request: gr.Request | None = None) -> tuple[str, dict]:
        """`defaults`: the entry's sampling defaults, whole (None leaves them as they are)."""
        texts = self.texts
        for field, value, limit in (("name", name, MAX_NAME),
                                    ("description", description, MAX_DESCRIPTION),
                                    ("chat_template", template, MAX_TEMPLATE_FIELD)):
            if len(value or "") > limit:
                return (texts("library.too_long", field=texts(f"library.field.{field}"),
                              n=len(value), limit=limit), gr.skip())
        changes = {"name": (name or "").strip() or model_id,
                   "context_length": int(context_length) if context_length else None,
                   "chat_template": (template or "").strip() or None,
                   "description": (description or "").strip()}
        if defaults is not None:  # only what differs from the schema's own is written
            changes["defaults"] = defaults.model_dump(exclude_defaults=True) or None
        if engine:
            changes["backend"] = engine
            if engine == "transformers":
                changes["quantization"] = quantization or "none"
        try:
            entry = self.library.edit(model_id, changes, user=user_of(request) or None)
        except (LibraryError, ConfigError, UnknownModel, ModelUnavailable) as exc:
            return self._error(exc), gr.skip()
        busy = self.library.manager.status(model_id).state.value == "generating"
        return (texts("library.saved_busy" if busy else "library.saved", model=entry.id),
                gr.update(choices=self._choices(), value=entry.id))

    def mode_button(self, model_id: str | None) -> dict:
        """The one-click switch's words for the selected entry: to chat mode from
        completion mode, to completion mode otherwise."""
        entry = self.library.manager.registry.get(model_id or "")
        if entry is None or entry.is_remote:
            return gr.update(visible=False)
        completion = entry.chat_template == COMPLETION_MODE
        return gr.update(visible=True, value=self.texts(
            "library.edit.to_chat" if completion else "library.edit.to_completion"))

    def switch_mode(self, model_id: str,
                    request: gr.Request | None = None) -> tuple[str, dict]:
        """Completion mode <-> chat mode, kept in the person's models.yaml."""
        texts = self.texts
        try:
            entry = self.library.switch_mode(model_id, user=user_of(request) or None)
        except (LibraryError, ConfigError, UnknownModel, ModelUnavailable) as exc:
            return self._error(exc), gr.skip()
        if entry.chat_template == COMPLETION_MODE:
            said = texts("library.completion_mode", model=entry.id)
        elif entry.chat_template:
            said = texts("library.chat_mode_guessed", model=entry.id,
                         template=entry.chat_template)
        else:
            said = texts("library.chat_mode", model=entry.id)
        return said, gr.update(choices=self._choices(), value=entry.id)

    def remove(self, model_id: str, request: gr.Request | None = None) -> tuple[str, dict]:
        try:
            self.library.remove(model_id, user=user_of(request) or None)
        except (LibraryError, ConfigError) as exc:
            return self._error(exc), gr.skip()
        choices = self._choices()
        return (self.texts("library.removed", model=model_id),
                gr.update(choices=choices, value=choices[0][1] if choices else None))

    def reload(self, request: gr.Request | None = None) -> tuple[str, dict]:
        texts = self.texts
        if not self.library.editable_by(user_of(request) or None):
            return texts("library.reload_refused"), gr.skip()
        try:
            changed = self.library.reload()
        except ConfigError as exc:
            return texts("library.reload_failed", detail=str(exc)), gr.skip()
        which = texts("library.reloaded_changed", ids=", ".join(changed)) if changed else ""
        return (texts("library.reloaded", n=len(self._choices()), changed=which),
                gr.update(choices=self._choices()))

    # -- the Hub ---------------------------------------------------------------------
    def hub_search(self, text: str, kind: str, task: str = "", language: str = "") -> tuple:
        """Repos on the Hub by name, task and language; each choice says its tags."""
        texts = self.texts
        try:
            repos = self.library.search(text or "", "checkpoint" if kind == KINDS[1] else "gguf",
                                        task=task or "", language=language or "")
        except (LibraryError, HubError) as exc:
            return gr.update(choices=[], value=None), self._error(exc)
        choices = [(" · ".join(filter(None, [
                        texts("library.hub.repo_choice", repo=r.repo_id, n=r.downloads or 0),
                        tags_line(r.tags, texts)])), r.repo_id) for r in repos]
        return (gr.update(choices=choices, value=choices[0][1] if choices else None),
                texts("library.hub.matches", n=len(repos), query=repr(text.strip()[:200])))

    def hub_files(self, repo_id: str | None) -> tuple:
        texts = self.texts
        if not repo_id:
            return gr.update(choices=[], value=None), ""
        try:
            listing = self.library.listing(repo_id)
        except (LibraryError, HubError) as exc:
            return gr.update(choices=[], value=None), self._error(exc)
        choices = [(" · ".join([f.quantization or f.filename, format_bytes(f.size),
                                *([texts("library.hub.parts", n=len(f.parts))]
                                  if len(f.parts) > 1 else []),
                                f.filename]), f.filename) for f in listing.gguf_files]
        checkpoint = texts("library.hub.checkpoint", size=format_bytes(listing.checkpoint_bytes)) \
            if listing.checkpoint_bytes else ""
        note = texts("library.hub.files", n=len(choices), repo=repo_id, checkpoint=checkpoint)
        return gr.update(choices=choices, value=choices[0][1] if choices else None), note

    def hub_fit(self, repo_id: str | None, filename: str | None,
                context_length: float | None) -> str:
        if not repo_id or not filename:
            return ""
        try:
            fit = self.library.hub_fit(repo_id, filename,
                                       int(context_length) if context_length else None)
        except (LibraryError, HubError) as exc:
            return self._error(exc)
        return self.texts("library.hub.fit", badge=fit_badge(fit, self.texts),
                          detail=self.texts.say(fit.detail))

    def hub_download(self, repo_id: str | None, filename: str | None,
                     request: gr.Request | None = None) -> str:
        if not repo_id or not filename:
            return self.texts("library.hub.pick_first")
        try:
            self.library.download(repo_id, filename, user=user_of(request) or None)
        except (LibraryError, HubError) as exc:
            return self._error(exc)
        return self.texts("library.hub.downloading", file=filename, repo=repo_id)

    def download_selected(self, model_id: str, request: gr.Request | None = None) -> str:
        try:
            self.library.download_entry(model_id, user=user_of(request) or None)
        except (LibraryError, HubError, UnknownModel, ModelUnavailable) as exc:
            return self._error(exc)
        return self.texts("library.hub.downloading_entry", model=model_id)

    def cancel_downloads(self, request: gr.Request | None = None) -> str:
        if self.library.downloads is None:
            return ""
        if not self.library.editable_by(user_of(request) or None):
            return self.texts("library.hub.cancel_refused")
        stopped = [job for job in self.library.downloads.jobs()
                   if self.library.downloads.cancel(job.job_id)]
        return self.texts("library.hub.cancelled", n=len(stopped))

    def downloads_text(self) -> str:
        if self.library.downloads is None:
            return ""
        jobs = self.library.downloads.jobs()
        return "  \n".join(f"**{job.filename}** ({job.repo_id}): "
                           f"{download_progress(job, self.texts)}"
                           for job in jobs) or self.texts("library.hub.no_downloads")

    def _choices(self) -> list[tuple[str, str]]:
        return [(e.name, e.id) for e in self.library.manager.registry.entries]
