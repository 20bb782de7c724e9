"""The Models tab's library: scan this machine, add a model, edit or remove an entry,
reload the files. Handlers only; every refusal is a sentence, never a traceback, and the
library itself refuses users who are not admins (not only the hidden buttons)."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from chatcore.config import MAX_DESCRIPTION, MAX_ID, MAX_NAME, ConfigError
from chatcore.download_queue import format_progress
from chatcore.hub_errors import HubError
from chatcore.library import ModelLibrary
from chatcore.library_errors import LibraryError
from chatcore.manager import ModelUnavailable, UnknownModel
from chatcore.memory import format_bytes
from chatcore.model_files import FoundModel
from chatui.chat_handlers import user_of

SCAN_COLUMNS = ["Scan id", "Source", "Name", "Quant", "Params", "Size", "Context", "Template",
                "Fit", "Problem"]
MAX_PATH = 4096
MAX_TEMPLATE_FIELD = 20_000
KINDS = ("GGUF", "transformers checkpoint")
QUANTIZATIONS = ("none", "8bit", "4bit")


def scan_row(library: ModelLibrary, found: FoundModel) -> list[str]:
    fit = library.fit_of_found(found)
    return [found.scan_id, found.source, found.name, found.quantization or "?",
            f"{found.n_params / 1e9:.2f}B" if found.n_params else "?",
            format_bytes(found.size_bytes), str(found.context_length or "?"),
            {True: "yes", False: "none"}.get(found.has_chat_template, "?"),
            fit.badge if fit else "", found.problem or ""]


class LibraryHandlers:
    def __init__(self, library: ModelLibrary) -> None:
        self.library = library

    def access_note(self, request: gr.Request | None = None) -> str:
        if self.library.editable_by(user_of(request) or None):
            return ""
        return ("The model library is read-only for you: only the users named with "
                "--admins may add, edit or remove models.")

    def scan(self, folder: str) -> tuple:
        folder = (folder or "").strip()
        extra = []
        if folder:
            path = Path(folder[:MAX_PATH]).expanduser()
            if not path.is_dir():
                return gr.skip(), gr.skip(), f"⚠️ {folder[:200]}: not a folder on this machine."
            extra.append(path)
        result = self.library.scan(extra)
        rows = [scan_row(self.library, found) for found in result.models]
        usable = [(f"{f.name} ({f.source})", f.scan_id) for f in result.models if not f.problem]
        unreadable = len(result.models) - len(usable)
        count = len(result.models)
        note = f"Found {count} model{'' if count == 1 else 's'}"
        note += f", {unreadable} unreadable (see Problem)" if unreadable else ""
        note += f"; {len(result.skipped)} paths skipped." if result.skipped else "."
        return (rows, gr.update(choices=usable, value=usable[0][1] if usable else None), note)

    def fit(self, text: str | None, context_length: float | None) -> str:
        """The badge for the model about to be added, at the context chosen."""
        if not text:
            return ""
        try:
            found = self.library.find(str(text)[:MAX_PATH])
        except LibraryError as exc:
            return f"⚠️ {exc}"
        if found.problem:
            return f"⚠️ unreadable: {found.problem}"
        fit = self.library.fit_of_found(found, int(context_length) if context_length else None)
        if fit is None:
            return "No estimate for this model."
        template = "" if found.has_chat_template is not False else \
            " · no chat template: a fallback will be guessed"
        return f"**{fit.badge}**: {fit.detail}{template}"

    def add(self, text: str | None, model_id: str, context_length: float | None,
            request: gr.Request | None = None) -> tuple[str, dict]:
        model_id = (model_id or "").strip()
        if len(model_id) > MAX_ID:
            return f"⚠️ The id is {len(model_id):,} characters; at most {MAX_ID}.", gr.skip()
        try:
            entry, notes = self.library.add(str(text or "")[:MAX_PATH], model_id or None,
                                            user=user_of(request) or None,
                                            context_length=int(context_length)
                                            if context_length else None)
        except (LibraryError, ConfigError) as exc:
            return f"⚠️ {exc}", gr.skip()
        lines = [f"Added **{entry.id}** ({entry.name}): pick it in the Chat tab."]
        lines += [f"ℹ️ {note}" for note in notes]
        return "  \n".join(lines), gr.update(choices=self._choices(), value=entry.id)

    def entry_fields(self, model_id: str | None) -> tuple:
        """The selected entry's editable fields, for the edit form."""
        try:
            entry = self.library.manager.entry(model_id or "")
        except (ModelUnavailable, UnknownModel):
            return ("", None, "", "", None, None, None, None, None, None, None)
        spec, d = entry.quantization_spec, entry.defaults
        return (entry.name, entry.context_length, entry.chat_template or "", entry.description,
                entry.backend if entry.backend != "openai" else None,
                f"{spec.bits}bit" if spec else "none", d.temperature, d.top_p, d.top_k,
                d.max_new_tokens, d.repetition_penalty)

    def save(self, model_id: str, name: str, context_length: float | None, template: str,
             description: str, engine: str | None = None, quantization: str | None = None,
             temperature: float | None = None, top_p: float | None = None,
             top_k: float | None = None, max_new_tokens: float | None = None,
             repetition_penalty: float | None = None,
             request: gr.Request | None = None) -> tuple[str, dict]:
        for field, value, limit in (("name", name, MAX_NAME),
                                    ("description", description, MAX_DESCRIPTION),
                                    ("chat template", template, MAX_TEMPLATE_FIELD)):
            if len(value or "") > limit:
                return (f"⚠️ The {field} is {len(value):,} characters; at most {limit:,}. "
                        "Nothing was changed.", gr.skip())
        changes = {"name": (name or "").strip() or model_id,
                   "context_length": int(context_length) if context_length else None,
                   "chat_template": (template or "").strip() or None,
                   "description": (description or "").strip()}
        sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k,
                    "max_new_tokens": max_new_tokens, "repetition_penalty": repetition_penalty}
        if any(value is not None for value in sampling.values()):
            changes["defaults"] = {k: (int(v) if k in ("top_k", "max_new_tokens") else v)
                                   for k, v in sampling.items() if v is not None}
        if engine:
            changes["backend"] = engine
            if engine == "transformers":
                changes["quantization"] = quantization or "none"
        try:
            entry = self.library.edit(model_id, changes, user=user_of(request) or None)
        except (LibraryError, ConfigError, UnknownModel, ModelUnavailable) as exc:
            return f"⚠️ {exc}", gr.skip()
        busy = self.library.manager.status(model_id).state.value == "generating"
        return (f"Saved **{entry.id}**" + (": it applies when the reply in progress ends."
                                           if busy else "."),
                gr.update(choices=self._choices(), value=entry.id))

    def remove(self, model_id: str, request: gr.Request | None = None) -> tuple[str, dict]:
        try:
            self.library.remove(model_id, user=user_of(request) or None)
        except (LibraryError, ConfigError) as exc:
            return f"⚠️ {exc}", gr.skip()
        choices = self._choices()
        return (f"Removed **{model_id}** from your registry.",
                gr.update(choices=choices, value=choices[0][1] if choices else None))

    def reload(self, request: gr.Request | None = None) -> tuple[str, dict]:
        if not self.library.editable_by(user_of(request) or None):
            return "⚠️ Only the users named with --admins may reload the registry.", gr.skip()
        try:
            changed = self.library.reload()
        except ConfigError as exc:
            return (f"⚠️ The registry was not reloaded, the last good one stays: {exc}",
                    gr.skip())
        return (f"Reloaded the registry ({len(self._choices())} models"
                + (f"; changed: {', '.join(changed)}" if changed else "") + ").",
                gr.update(choices=self._choices()))

    # -- the Hub ---------------------------------------------------------------------
    def hub_search(self, text: str, kind: str) -> tuple:
        try:
            repos = self.library.search(text or "", "checkpoint" if kind == KINDS[1] else "gguf")
        except (LibraryError, HubError) as exc:
            return gr.update(choices=[], value=None), f"⚠️ {exc}"
        choices = [(f"{r.repo_id} · {r.downloads or 0:,} downloads", r.repo_id) for r in repos]
        return (gr.update(choices=choices, value=choices[0][1] if choices else None),
                f"{len(repos)} repos on the Hub match {text.strip()[:200]!r}.")

    def hub_files(self, repo_id: str | None) -> tuple:
        if not repo_id:
            return gr.update(choices=[], value=None), ""
        try:
            listing = self.library.listing(repo_id)
        except (LibraryError, HubError) as exc:
            return gr.update(choices=[], value=None), f"⚠️ {exc}"
        choices = [(f"{f.quantization or f.filename} · {format_bytes(f.size)}"
                    + (f" · {len(f.parts)} parts" if len(f.parts) > 1 else "")
                    + f" · {f.filename}", f.filename) for f in listing.gguf_files]
        note = f"{len(choices)} GGUF files in {repo_id}"
        if listing.checkpoint_bytes:
            note += (f"; a transformers checkpoint of {format_bytes(listing.checkpoint_bytes)} "
                     "(fetch it with huggingface-cli download, then add its folder)")
        return gr.update(choices=choices, value=choices[0][1] if choices else None), note + "."

    def hub_fit(self, repo_id: str | None, filename: str | None,
                context_length: float | None) -> str:
        if not repo_id or not filename:
            return ""
        try:
            fit = self.library.hub_fit(repo_id, filename,
                                       int(context_length) if context_length else None)
        except (LibraryError, HubError) as exc:
            return f"⚠️ {exc}"
        return f"**{fit.badge}** (from its header, before downloading): {fit.detail}"

    def hub_download(self, repo_id: str | None, filename: str | None,
                     request: gr.Request | None = None) -> str:
        if not repo_id or not filename:
            return "⚠️ Search the Hub and pick a file first."
        try:
            self.library.download(repo_id, filename, user=user_of(request) or None)
        except (LibraryError, HubError) as exc:
            return f"⚠️ {exc}"
        return f"Downloading **{filename}** from {repo_id}: see Downloads below."

    def download_selected(self, model_id: str, request: gr.Request | None = None) -> str:
        try:
            self.library.download_entry(model_id, user=user_of(request) or None)
        except (LibraryError, HubError, UnknownModel, ModelUnavailable) as exc:
            return f"⚠️ {exc}"
        return f"Downloading the file of **{model_id}**: see Downloads below."

    def cancel_downloads(self, request: gr.Request | None = None) -> str:
        if self.library.downloads is None:
            return ""
        if not self.library.editable_by(user_of(request) or None):
            return "⚠️ Only the users named with --admins may cancel downloads."
        stopped = [job for job in self.library.downloads.jobs()
                   if self.library.downloads.cancel(job.job_id)]
        return f"Cancelled {len(stopped)} download{'' if len(stopped) == 1 else 's'}; " \
               "what arrived is kept, and downloading again resumes there."

    def downloads_text(self) -> str:
        if self.library.downloads is None:
            return ""
        jobs = self.library.downloads.jobs()
        return "  \n".join(f"**{job.filename}** ({job.repo_id}): {format_progress(job)}"
                           for job in jobs) or "No downloads yet."

    def _choices(self) -> list[tuple[str, str]]:
        return [(e.name, e.id) for e in self.library.manager.registry.entries]
