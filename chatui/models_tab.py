"""The Models tab: every registered model, its state and memory, with Load and Unload."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import gradio as gr

from chatcore.manager import (
    MemoryReport,
    ModelBusy,
    ModelManager,
    ModelState,
    ModelStatus,
    ModelUnavailable,
    UnknownModel,
)
from chatcore.config import MAX_DESCRIPTION, MAX_ID, MAX_NAME
from chatcore.library import ModelLibrary
from chatcore.memory import format_bytes, process_rss_bytes
from chatui.library_handlers import (
    KINDS,
    QUANTIZATIONS,
    MAX_PATH,
    MAX_TEMPLATE_FIELD,
    SCAN_COLUMNS,
    LibraryHandlers,
)

COLUMNS = ["Model (id)", "Engine", "State", "Fit", "Estimated", "Measured", "Load time",
           "Last used", "Details"]
WIDTHS = ["17%", "13%", "10%", "8%", "7%", "8%", "6%", "7%", "24%"]
REFRESH_S = 1.0


def status_rows(manager: ModelManager, library: ModelLibrary | None = None) -> list[list[str]]:
    return [_row(manager, status, library) for status in manager.statuses()]


def _fit_cell(library: ModelLibrary | None, s: ModelStatus) -> str:
    if library is None or s.state in (ModelState.INVALID, ModelState.UNREADABLE):
        return ""
    if (remote := library.remote_summary(s.id)) is not None:
        return remote  # weights not here yet: download size and fit, from the Hub
    try:
        fit = library.fit_of_entry(s.id)
    except (ModelUnavailable, UnknownModel):
        return ""
    return fit.badge if fit else ""


def _row(manager: ModelManager, s: ModelStatus, library: ModelLibrary | None = None) -> list[str]:
    state = s.state.value
    if s.progress is not None:
        state += f" {s.progress[0]:.0%} ({s.progress[1]})"
    if s.queued > 1:
        state += f", {s.queued - 1} waiting"
    entry = manager.registry.get(s.id)
    details = s.reason or (entry.source_text if entry else "")
    if placement := manager.placement(s.id):
        details = " · ".join([f"on {placement}", *manager.runtime_notes(s.id)])
    notes = [f"⚠ {w}" for w in manager.template_warnings(s.id)]
    if (memory := manager.memory_report(s.id)) is not None:
        notes.append(memory_line(memory))
    details = " · ".join([details, *notes]) if details else " · ".join(notes)
    return [
        f"{s.name} ({s.id})", entry.settings_label if entry else s.backend, state,
        _fit_cell(library, s),
        format_bytes(s.estimated_bytes) if s.estimated_bytes is not None else "",
        f"RSS +{format_bytes(s.measured_bytes)}" if s.measured_bytes is not None else "",
        f"{s.load_seconds:.1f} s" if s.load_seconds is not None else "",
        time.strftime("%H:%M:%S", time.localtime(s.last_used)) if s.last_used else "",
        details,
    ]


def memory_line(memory: MemoryReport) -> str:
    """Process memory before the load, loaded, and after the unload, with a verdict."""
    line = (f"memory {format_bytes(memory.before_load)} before load, "
            f"{format_bytes(memory.loaded)} loaded, {format_bytes(memory.after_unload)} "
            "after unload")
    if memory.returned:
        return line + ": given back"
    return (f"⚠ {line}: {format_bytes(memory.retained)} not given back "
            "(try Release memory)")


def build_models_tab(app: gr.Blocks, manager: ModelManager,
                     library: ModelLibrary | None = None) -> tuple:
    """The tab; returns its refresh timer (on only while the tab is shown) and the events
    after which the model lists elsewhere on the page must be read again."""
    summary = gr.Markdown(manager.memory_summary(), elem_id="memory-summary")
    table = gr.Dataframe(value=status_rows(manager, library), headers=COLUMNS,
                         interactive=False, wrap=True, column_widths=WIDTHS,
                         elem_id="models-table")
    with gr.Row():
        choice = gr.Dropdown(choices=[(e.name, e.id) for e in manager.registry.entries],
                             value=manager.registry.entries[0].id, label="Model", scale=3,
                             elem_id="models-choice")
        load = gr.Button("Load", variant="primary", scale=1, elem_id="models-load")
        unload = gr.Button("Unload", scale=1, elem_id="models-unload")
        release = gr.Button("Release memory", scale=1, elem_id="models-release")
    outcome = gr.Markdown(elem_id="models-outcome")
    handlers = ModelsHandlers(manager, library)
    load.click(handlers.load, [choice], [outcome], api_name="load_model")
    unload.click(handlers.unload, [choice], [outcome], api_name="unload_model")
    release.click(handlers.release, None, [outcome], api_name="release_memory")
    timer = gr.Timer(REFRESH_S, active=False)
    timer.tick(handlers.refresh, None, [table, summary], api_name=False, queue=False,
               show_progress="hidden")
    changes = [] if library is None else _build_library(app, library, choice, outcome, timer)
    return timer, changes


def _build_library(app: gr.Blocks, library: ModelLibrary, choice: gr.Dropdown,
                   outcome: gr.Markdown, timer: gr.Timer) -> list:
    handlers = LibraryHandlers(library)
    with gr.Accordion("Edit the selected model", open=False, elem_id="library-edit"):
        with gr.Row():
            name = gr.Textbox(label="Name", max_length=MAX_NAME, elem_id="edit-name", scale=3)
            context = gr.Number(label="Context length", precision=0, elem_id="edit-context",
                                scale=1)
        template = gr.Textbox(label="Chat template: a fallback (chatml, llama3, gemma, phi3, "
                                    "mistral, llama2, falcon, zephyr), none, or Jinja",
                              max_length=MAX_TEMPLATE_FIELD, lines=1, elem_id="edit-template")
        description = gr.Textbox(label="Description", max_length=MAX_DESCRIPTION, lines=1,
                                 elem_id="edit-description")
        with gr.Row():
            engine = gr.Dropdown(["llamacpp", "transformers"], label="Engine",
                                 elem_id="edit-engine", scale=1)
            quantization = gr.Dropdown(list(QUANTIZATIONS), label="Quantization "
                                       "(transformers)", elem_id="edit-quantization", scale=1)
            temperature = gr.Number(label="Temperature", elem_id="edit-temperature", scale=1)
            top_p = gr.Number(label="Top p", elem_id="edit-top-p", scale=1)
            top_k = gr.Number(label="Top k", precision=0, elem_id="edit-top-k", scale=1)
            max_tokens = gr.Number(label="Max new tokens", precision=0,
                                   elem_id="edit-max-tokens", scale=1)
            penalty = gr.Number(label="Repetition penalty", elem_id="edit-penalty", scale=1)
        with gr.Row():
            save = gr.Button("Save changes", size="sm", elem_id="edit-save")
            remove = gr.Button("Remove from my registry", size="sm", variant="stop",
                               elem_id="edit-remove")
            reload = gr.Button("Reload registry", size="sm", elem_id="registry-reload")
    with gr.Accordion("Find models on this machine", open=True, elem_id="library-scan"):
        access = gr.Markdown(elem_id="library-access")
        with gr.Row():
            folder = gr.Textbox(label="Also search this folder (optional)", max_length=MAX_PATH,
                                scale=4, elem_id="scan-folder")
            scan = gr.Button("Scan", variant="primary", scale=1, elem_id="scan")
        found = gr.Dataframe(headers=SCAN_COLUMNS, interactive=False, wrap=True,
                             elem_id="scan-table")
        with gr.Row():
            candidate = gr.Dropdown(choices=[], label="Model to add: pick one, or paste a "
                                    "path to a GGUF file or checkpoint folder",
                                    allow_custom_value=True, scale=4, elem_id="add-candidate")
            add_context = gr.Number(label="Context length (0: the model's, at most 4096)",
                                    precision=0, value=None, scale=1, elem_id="add-context")
            add_id = gr.Textbox(label="Id (optional)", max_length=MAX_ID, scale=1,
                                elem_id="add-id")
            add = gr.Button("Add", variant="primary", scale=1, elem_id="add")
        fit = gr.Markdown(elem_id="add-fit")
    if not library.offline:
        _build_hub(handlers, library, choice, outcome, timer)
    fields = [name, context, template, description, engine, quantization, temperature, top_p,
              top_k, max_tokens, penalty]
    choice.change(handlers.entry_fields, [choice], fields, api_name=False, queue=False)
    app.load(handlers.entry_fields, [choice], fields, api_name=False, queue=False)
    scan.click(handlers.scan, [folder], [found, candidate, outcome], api_name="scan_models")
    for trigger in (candidate.change, add_context.change):
        trigger(handlers.fit, [candidate, add_context], [fit], api_name=False,
                trigger_mode="always_last", show_progress="hidden")
    added = add.click(handlers.add, [candidate, add_id, add_context], [outcome, choice],
                      api_name="add_model")
    saved = save.click(handlers.save, [choice, *fields], [outcome, choice],
                       api_name="edit_model")
    removed = remove.click(handlers.remove, [choice], [outcome, choice], api_name="remove_model")
    reloaded = reload.click(handlers.reload, None, [outcome, choice], api_name="reload_registry")
    app.load(handlers.access_note, None, [access], api_name=False, queue=False)
    return [added, saved, removed, reloaded]


def _build_hub(handlers: LibraryHandlers, library: ModelLibrary, choice: gr.Dropdown,
               outcome: gr.Markdown, timer: gr.Timer) -> None:
    """Search, fit before download, download with progress; only with --allow-download."""
    with gr.Accordion("Get models from the Hugging Face Hub", open=False, elem_id="hub"):
        if library.hub is None:
            gr.Markdown("Downloads are off, so nothing here touches the network. Start the "
                        "app with `--allow-download` to search the Hub and fetch models "
                        "(or run `python chat_app.py --download REPO --file NAME`).",
                        elem_id="hub-off")
            return
        with gr.Row():
            query = gr.Textbox(label="Search the Hub", max_length=200, scale=4,
                               elem_id="hub-query")
            kind = gr.Radio(list(KINDS), value=KINDS[0], label="Kind", scale=2,
                            elem_id="hub-kind")
            search = gr.Button("Search", variant="primary", scale=1, elem_id="hub-search")
        with gr.Row():
            repo = gr.Dropdown(choices=[], label="Repository", scale=3, elem_id="hub-repo")
            hub_file = gr.Dropdown(choices=[], label="File (quantization · size)", scale=3,
                                   elem_id="hub-file")
            hub_context = gr.Number(label="Context length (0: the model's, at most 4096)",
                                    precision=0, value=None, scale=1, elem_id="hub-context")
        hub_fit = gr.Markdown(elem_id="hub-fit")
        with gr.Row():
            download = gr.Button("Download this file", variant="primary", scale=1,
                                 elem_id="hub-download")
            download_entry = gr.Button("Download the selected model above", scale=1,
                                       elem_id="entry-download")
            cancel = gr.Button("Cancel downloads", variant="stop", scale=1,
                               elem_id="hub-cancel")
        gr.Markdown("**Downloads**")
        progress = gr.Markdown(handlers.downloads_text(), elem_id="hub-downloads")
    search.click(handlers.hub_search, [query, kind], [repo, outcome], api_name="hub_search")
    query.submit(handlers.hub_search, [query, kind], [repo, outcome], api_name=False)
    repo.change(handlers.hub_files, [repo], [hub_file, outcome], api_name=False)
    for trigger in (hub_file.change, hub_context.change):
        trigger(handlers.hub_fit, [repo, hub_file, hub_context], [hub_fit], api_name=False,
                trigger_mode="always_last", show_progress="hidden")
    # A download shows its line at once and makes sure the tab's refresh is running (a
    # click on the tab before the page was ready may not have started it).
    follow = (lambda: (handlers.downloads_text(), gr.Timer(active=True)), None,
              [progress, timer])
    download.click(handlers.hub_download, [repo, hub_file], [outcome], api_name="hub_download") \
        .then(*follow, api_name=False, queue=False)
    download_entry.click(handlers.download_selected, [choice], [outcome],
                         api_name="download_model").then(*follow, api_name=False, queue=False)
    cancel.click(handlers.cancel_downloads, None, [outcome], api_name="cancel_downloads")
    timer.tick(handlers.downloads_text, None, [progress], api_name=False, queue=False,
               show_progress="hidden")


def _is_resident(manager: ModelManager, model_id: str) -> bool:
    try:
        return manager.status(model_id).state in (ModelState.RESIDENT, ModelState.GENERATING)
    except (ModelUnavailable, UnknownModel):
        return False


class ModelsHandlers:
    def __init__(self, manager: ModelManager, library: ModelLibrary | None = None) -> None:
        self.manager = manager
        self.library = library

    def refresh(self) -> tuple[list[list[str]], str]:
        return status_rows(self.manager, self.library), self.manager.memory_summary()

    def load(self, model_id: str, progress: gr.Progress = gr.Progress()) -> Iterator[str]:
        if _is_resident(self.manager, model_id):
            yield f"**{model_id}** is already resident."
            return
        latest = [(0.0, "starting")]
        outcome: list[str] = []

        def work() -> None:
            started = time.perf_counter()
            try:
                self.manager.load(model_id, lambda f, step: latest.append((f, step)))
                outcome.append(f"Loaded **{model_id}** in {time.perf_counter() - started:.1f} s.")
            except (ModelUnavailable, UnknownModel) as exc:
                outcome.append(f"⚠️ {exc}")

        worker = threading.Thread(target=work, name=f"load-{model_id}", daemon=True)
        worker.start()
        while worker.is_alive():
            fraction, step = latest[-1]
            progress(fraction, desc=f"Loading {model_id}: {step}")
            yield f"Loading **{model_id}**: {step} ({fraction:.0%})"
            worker.join(timeout=0.2)
        yield outcome[-1]

    def unload(self, model_id: str) -> str:
        try:
            freed = self.manager.unload(model_id)
        except (ModelBusy, UnknownModel) as exc:
            return f"⚠️ {exc}"
        if not freed:
            return f"{model_id} was not loaded."
        memory = self.manager.memory_report(model_id)
        return f"Unloaded **{model_id}**: " + (memory_line(memory) if memory else "done") + "."

    def release(self) -> str:
        before = process_rss_bytes()
        after = self.manager.release_memory()
        return (f"Released what could be: process memory {format_bytes(before)} -> "
                f"{format_bytes(after)}.")
