"""The Models tab: every registered model, its state and memory, with Load and Unload."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import gradio as gr

from backends.sampling import SamplingSettings
from chatcore.generation.manager import (
    MemoryReport,
    ModelBusy,
    ModelManager,
    ModelState,
    ModelStatus,
    ModelUnavailable,
    UnknownModel,
)
from chatcore.generation.registry import MAX_DESCRIPTION, MAX_ID, MAX_NAME
from chatcore.i18n import Texts, english, state_key
from chatcore.library.model_library import ModelLibrary
from chatcore.generation.memory import format_bytes, process_rss_bytes
from chatcore.costs.book import CostBook
from chatui.cost_controls import build_cost_panel
from chatui.sampling_controls import SettingsControls, with_settings
from chatui.model_filters import FilterControls, matching_ids, tag_filter, tags_line
from backends.model_tags import TagFilter
from chatui.library_handlers import (
    KINDS,
    MAX_PATH,
    MAX_TEMPLATE_FIELD,
    QUANTIZATIONS,
    SCAN_COLUMN_IDS,
    LibraryHandlers,
    fit_badge,
    load_step,
    remote_summary,
)

# The table's columns, by id; their headers come from the catalog (models.column.<id>).
COLUMN_IDS = ("model", "engine", "state", "fit", "estimated", "measured", "load_time",
              "last_used", "details")
# Each wide enough for its header's longest word in both languages ("Estimated",
# "Kalagayan"), since headers break only between words; the scan table's likewise.
WIDTHS = ["15%", "13%", "10%", "8%", "10%", "9%", "9%", "8%", "18%"]
SCAN_WIDTHS = ["10%", "11%", "19%", "7%", "8%", "7%", "9%", "9%", "8%", "12%"]
# After an add, the new model's row (the registry's last) is brought into the table's
# sight: it arrives with the next refresh, and the table draws only the rows in sight.
SHOW_ROW_JS = """(id) => {
  let tries = 0, settled = 0;
  const look = () => {
    const view = document.querySelector('#models-table .virtual-table-viewport');
    const row = [...document.querySelectorAll('#models-table [role=row]')]
      .find(r => r.innerText.includes('(' + id + ')'));
    if (row) row.scrollIntoView({block: 'nearest'});
    else if (view) view.scrollTop = view.scrollHeight;
    // Found, it is kept in sight a few more refreshes (a refresh may redraw the table).
    if (row) settled++;
    if (++tries < 200 && settled < 15) setTimeout(look, 200);
  };
  if (id) look();
  return [];
}"""
REFRESH_S = 1.0


# The English headers, which tests and the API name the columns by.
COLUMNS = english().labels("models.column", COLUMN_IDS)


def _datatypes(columns: tuple[str, ...]) -> list[str]:
    """The fit column holds a badge (HTML through Markdown); the rest is plain text."""
    return ["markdown" if column == "fit" else "str" for column in columns]


def status_rows(manager: ModelManager, library: ModelLibrary | None = None, *,
                texts: Texts, only: TagFilter = TagFilter()) -> list[list[str]]:
    """One row per model that passes `only` (broken entries only when nothing filters)."""
    shown = matching_ids(manager, only)
    return [_row(manager, status, library, texts=texts) for status in manager.statuses()
            if status.id in shown or not only.active]


def _fit_cell(library: ModelLibrary | None, s: ModelStatus, texts: Texts) -> str:
    if library is None or s.state in (ModelState.INVALID, ModelState.UNREADABLE):
        return ""
    if (remote := library.remote_summary(s.id)) is not None:
        # weights not here yet: download size and fit, from the Hub
        return remote_summary(remote, texts)
    try:
        fit = library.fit_of_entry(s.id)
    except (ModelUnavailable, UnknownModel):
        return ""
    return fit_badge(fit, texts) if fit else ""


def _state_cell(s: ModelStatus, texts: Texts) -> str:
    state = texts(state_key(s.state))
    if s.progress is not None:
        state = texts("models.state_progress", state=state, percent=f"{s.progress[0]:.0%}",
                      step=load_step(s.progress[1], texts))
    if s.queued > 1:
        state = texts("models.state_waiting", state=state, n=s.queued - 1)
    return state


def _row(manager: ModelManager, s: ModelStatus, library: ModelLibrary | None = None, *,
         texts: Texts) -> list[str]:
    entry = manager.registry.get(s.id)
    details = texts.say(s.reason or (entry.source_text if entry else ""))
    if placement := manager.placement(s.id):
        details = " · ".join([texts("models.placement", device=placement),
                              *map(texts.say, manager.runtime_notes(s.id))])
    notes = [f"⚠ {texts.say(w)}" for w in manager.template_warnings(s.id)]
    if entry is not None and (tags := tags_line(entry.tags, texts)):
        notes.insert(0, tags)
    if (memory := manager.memory_report(s.id)) is not None:
        notes.append(memory_line(memory, texts))
    details = " · ".join([details, *notes]) if details else " · ".join(notes)
    return [
        f"{s.name} ({s.id})", texts.say(entry.settings_label) if entry else s.backend,
        _state_cell(s, texts),
        _fit_cell(library, s, texts),
        format_bytes(s.estimated_bytes) if s.estimated_bytes is not None else "",
        texts("models.measured", size=format_bytes(s.measured_bytes))
        if s.measured_bytes is not None else "",
        texts("models.seconds", seconds=texts.number(s.load_seconds, 1))
        if s.load_seconds is not None else "",
        time.strftime("%H:%M:%S", time.localtime(s.last_used)) if s.last_used else "",
        details,
    ]


def memory_line(memory: MemoryReport, texts: Texts) -> str:
    """Process memory before the load, loaded, and after the unload, with a verdict."""
    line = texts("models.memory.line", before=format_bytes(memory.before_load),
                 loaded=format_bytes(memory.loaded), after=format_bytes(memory.after_unload))
    if memory.returned:
        return texts("models.memory.returned", line=line)
    return texts("models.memory.retained", line=line, retained=format_bytes(memory.retained))


def build_models_tab(app: gr.Blocks, manager: ModelManager,
                     library: ModelLibrary | None = None, *, texts: Texts,
                     costs: CostBook | None = None) -> tuple:
    """The tab; returns its refresh timer (on only while the tab is shown) and the events
    after which the model lists elsewhere on the page must be read again. With `costs`,
    what a token of each model costs and the settings for it."""
    summary = gr.Markdown(manager.memory_summary(texts), elem_id="memory-summary")
    with gr.Row():
        filters = FilterControls(texts, "models-filter")
    table = gr.Dataframe(value=status_rows(manager, library, texts=texts),
                         headers=texts.labels("models.column", COLUMN_IDS),
                         interactive=False, wrap=True, column_widths=WIDTHS,
                         datatype=_datatypes(COLUMN_IDS), elem_id="models-table")
    with gr.Row():
        choice = gr.Dropdown(choices=[(e.name, e.id) for e in manager.registry.entries],
                             value=manager.registry.entries[0].id, label=texts("models.model"),
                             scale=3, elem_id="models-choice")
        load = gr.Button(texts("models.load"), variant="primary", scale=1, elem_id="models-load")
        unload = gr.Button(texts("models.unload"), scale=1, elem_id="models-unload")
        release = gr.Button(texts("models.release"), scale=1, elem_id="models-release")
    outcome = gr.Markdown(elem_id="models-outcome")
    handlers = ModelsHandlers(manager, library, texts=texts)
    load.click(handlers.load, [choice], [outcome], api_name="load_model")
    unload.click(handlers.unload, [choice], [outcome], api_name="unload_model")
    release.click(handlers.release, None, [outcome], api_name="release_memory")
    timer = gr.Timer(REFRESH_S, active=False)
    timer.tick(handlers.refresh, filters.components, [table, summary], api_name=False,
               queue=False, show_progress="hidden")
    filters.on_change(handlers.filtered, [table, choice])
    if costs is not None:
        build_cost_panel(manager, costs, timer, texts=texts)
    changes = [] if library is None else \
        _build_library(app, library, choice, outcome, timer, texts)
    return timer, changes


def _build_library(app: gr.Blocks, library: ModelLibrary, choice: gr.Dropdown,
                   outcome: gr.Markdown, timer: gr.Timer, texts: Texts) -> list:
    handlers = LibraryHandlers(library, texts=texts)
    with gr.Accordion(texts("library.edit.title"), open=False, elem_id="library-edit"):
        with gr.Row():
            name = gr.Textbox(label=texts("library.edit.name"), max_length=MAX_NAME,
                              elem_id="edit-name", scale=3)
            context = gr.Number(label=texts("library.edit.context"), precision=0,
                                elem_id="edit-context", scale=1)
        template = gr.Textbox(label=texts("library.edit.template"),
                              max_length=MAX_TEMPLATE_FIELD, lines=1, elem_id="edit-template")
        description = gr.Textbox(label=texts("library.edit.description"),
                                 max_length=MAX_DESCRIPTION, lines=1,
                                 elem_id="edit-description")
        with gr.Row():
            engine = gr.Dropdown(["llamacpp", "transformers"], label=texts("library.edit.engine"),
                                 elem_id="edit-engine", scale=1)
            quantization = gr.Dropdown(texts.choices("library.quantization", list(QUANTIZATIONS)),
                                       label=texts("library.edit.quantization"),
                                       elem_id="edit-quantization", scale=1)
        with gr.Accordion(texts("library.edit.defaults"), open=False,
                          elem_id="edit-defaults"):
            defaults = SettingsControls(SamplingSettings(), texts=texts,
                                        elem_id=lambda n: f"edit-{n.replace('_', '-')}")
        with gr.Row():
            save = gr.Button(texts("library.edit.save"), size="sm", elem_id="edit-save")
            mode = gr.Button(texts("library.edit.to_chat"), size="sm", elem_id="edit-mode")
            remove = gr.Button(texts("library.edit.remove"), size="sm", variant="stop",
                               elem_id="edit-remove")
            reload = gr.Button(texts("library.edit.reload"), size="sm",
                               elem_id="registry-reload")
    with gr.Accordion(texts("library.scan.title"), open=True, elem_id="library-scan"):
        access = gr.Markdown(elem_id="library-access")
        with gr.Row():
            folder = gr.Textbox(label=texts("library.scan.folder"), max_length=MAX_PATH,
                                scale=4, elem_id="scan-folder")
            scan = gr.Button(texts("library.scan.scan"), variant="primary", scale=1,
                             elem_id="scan")
        found = gr.Dataframe(headers=texts.labels("library.column", SCAN_COLUMN_IDS),
                             interactive=False, wrap=True,
                             column_widths=SCAN_WIDTHS,
                             datatype=_datatypes(SCAN_COLUMN_IDS),
                             elem_id="scan-table")
        with gr.Row():
            candidate = gr.Dropdown(choices=[], label=texts("library.scan.candidate"),
                                    allow_custom_value=True, scale=4, elem_id="add-candidate")
            add_context = gr.Number(label=texts("library.context"), precision=0, value=None,
                                    scale=1, elem_id="add-context")
            add_id = gr.Textbox(label=texts("library.scan.id"), max_length=MAX_ID, scale=1,
                                elem_id="add-id")
            add = gr.Button(texts("library.scan.add"), variant="primary", scale=1,
                            elem_id="add")
        fit = gr.Markdown(elem_id="add-fit")
    if not library.offline:
        _build_hub(handlers, library, choice, outcome, timer, texts)
    fields = [name, context, template, description, engine, quantization,
              *defaults.components]
    for shown in (choice.change, app.load):
        shown(handlers.entry_fields, [choice], fields, api_name=False, queue=False)
        shown(handlers.mode_button, [choice], [mode], api_name=False, queue=False)
    scan.click(handlers.scan, [folder], [found, candidate, outcome], api_name="scan_models")
    for trigger in (candidate.change, add_context.change):
        trigger(handlers.fit, [candidate, add_context], [fit], api_name=False,
                trigger_mode="always_last", show_progress="hidden")
    added = add.click(handlers.add, [candidate, add_id, add_context], [outcome, choice],
                      api_name="add_model")
    added.then(None, [choice], None, js=SHOW_ROW_JS, api_name=False, queue=False)
    save_fn, save_inputs = with_settings(handlers.save, [choice, *fields[:6]], defaults)
    saved = save.click(save_fn, save_inputs, [outcome, choice],
                       api_name="edit_model")
    removed = remove.click(handlers.remove, [choice], [outcome, choice], api_name="remove_model")
    switched = mode.click(handlers.switch_mode, [choice], [outcome, choice],
                          api_name="switch_mode")
    switched.then(handlers.entry_fields, [choice], fields, api_name=False, queue=False)
    for edited in (saved, switched):  # the same id stays chosen: no change event follows
        edited.then(handlers.mode_button, [choice], [mode], api_name=False, queue=False)
    reloaded = reload.click(handlers.reload, None, [outcome, choice], api_name="reload_registry")
    app.load(handlers.access_note, None, [access], api_name=False, queue=False)
    app.load(handlers.folder_field, None, [folder], api_name=False, queue=False)
    return [added, saved, switched, removed, reloaded]


def _build_hub(handlers: LibraryHandlers, library: ModelLibrary, choice: gr.Dropdown,
               outcome: gr.Markdown, timer: gr.Timer, texts: Texts) -> None:
    """Search, fit before download, download with progress; only with --allow-download."""
    with gr.Accordion(texts("library.hub.title"), open=False, elem_id="hub"):
        if library.hub is None:
            gr.Markdown(texts("library.hub.off"), elem_id="hub-off")
            return
        with gr.Row():
            query = gr.Textbox(label=texts("library.hub.query"), max_length=200, scale=4,
                               elem_id="hub-query")
            kind = gr.Radio(texts.choices("library.kind", list(KINDS)), value=KINDS[0],
                            label=texts("library.hub.kind"), scale=2, elem_id="hub-kind")
            search = gr.Button(texts("library.hub.search"), variant="primary", scale=1,
                               elem_id="hub-search")
        with gr.Row():
            hub_filters = FilterControls(texts, "hub-filter", openness=False)
        with gr.Row():
            repo = gr.Dropdown(choices=[], label=texts("library.hub.repo"), scale=3,
                               elem_id="hub-repo")
            hub_file = gr.Dropdown(choices=[], label=texts("library.hub.file"), scale=3,
                                   elem_id="hub-file")
            hub_context = gr.Number(label=texts("library.context"), precision=0, value=None,
                                    scale=1, elem_id="hub-context")
        hub_fit = gr.Markdown(elem_id="hub-fit")
        with gr.Row():
            download = gr.Button(texts("library.hub.download"), variant="primary", scale=1,
                                 elem_id="hub-download")
            download_entry = gr.Button(texts("library.hub.download_entry"), scale=1,
                                       elem_id="entry-download")
            cancel = gr.Button(texts("library.hub.cancel"), variant="stop", scale=1,
                               elem_id="hub-cancel")
        gr.Markdown(texts("library.hub.downloads"))
        progress = gr.Markdown(handlers.downloads_text(), elem_id="hub-downloads")
    search_inputs = [query, kind, hub_filters.task, hub_filters.language]
    search.click(handlers.hub_search, search_inputs, [repo, outcome], api_name="hub_search")
    query.submit(handlers.hub_search, search_inputs, [repo, outcome], api_name=False)
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
    def __init__(self, manager: ModelManager, library: ModelLibrary | None = None, *,
                 texts: Texts) -> None:
        self.manager = manager
        self.library = library
        self.texts = texts

    def refresh(self, task: str = "", language: str = "", openness: str = ""
                ) -> tuple[list[list[str]], str]:
        only = tag_filter(task, language, openness)
        return (status_rows(self.manager, self.library, texts=self.texts, only=only),
                self.manager.memory_summary(self.texts))

    def filtered(self, task: str = "", language: str = "", openness: str = "") -> tuple:
        """The table and the picker narrowed to the models tagged so; the picker moves
        to the first that matches."""
        only = tag_filter(task, language, openness)
        shown = matching_ids(self.manager, only)
        choices = [(e.name, e.id) for e in self.manager.registry.entries if e.id in shown]
        return (status_rows(self.manager, self.library, texts=self.texts, only=only),
                gr.update(choices=choices, value=choices[0][1] if choices else None))

    def load(self, model_id: str, progress: gr.Progress = gr.Progress()) -> Iterator[str]:
        texts = self.texts
        if _is_resident(self.manager, model_id):
            yield texts("models.already_resident", model=model_id)
            return
        latest = [(0.0, "starting")]
        outcome: list[str] = []

        def work() -> None:
            started = time.perf_counter()
            try:
                self.manager.load(model_id, lambda f, step: latest.append((f, step)))
                seconds = texts.number(time.perf_counter() - started, 1)
                outcome.append(texts("models.loaded", model=model_id, seconds=seconds))
            except (ModelUnavailable, UnknownModel) as exc:
                outcome.append(texts("models.error", detail=str(exc)))

        worker = threading.Thread(target=work, name=f"load-{model_id}", daemon=True)
        worker.start()
        while worker.is_alive():
            fraction, step = latest[-1]
            step = load_step(step, texts)
            progress(fraction, desc=texts("models.loading_desc", model=model_id, step=step))
            yield texts("models.loading", model=model_id, step=step, percent=f"{fraction:.0%}")
            worker.join(timeout=0.2)
        yield outcome[-1]

    def unload(self, model_id: str) -> str:
        texts = self.texts
        try:
            freed = self.manager.unload(model_id)
        except (ModelBusy, UnknownModel) as exc:
            return texts("models.error", detail=str(exc))
        if not freed:
            return texts("models.not_loaded", model=model_id)
        memory = self.manager.memory_report(model_id)
        return texts("models.unloaded", model=model_id,
                     outcome=memory_line(memory, texts) if memory else texts("models.done"))

    def release(self) -> str:
        before = process_rss_bytes()
        after = self.manager.release_memory()
        return self.texts("models.released", before=format_bytes(before),
                          after=format_bytes(after))
