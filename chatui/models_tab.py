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
from chatcore.memory import format_bytes, process_rss_bytes

COLUMNS = ["Model (id)", "Engine", "State", "Estimated", "Measured", "Load time", "Last used",
           "Details"]
WIDTHS = ["19%", "15%", "11%", "8%", "9%", "7%", "8%", "23%"]
REFRESH_S = 1.0


def status_rows(manager: ModelManager) -> list[list[str]]:
    return [_row(manager, status) for status in manager.statuses()]


def _row(manager: ModelManager, s: ModelStatus) -> list[str]:
    state = s.state.value
    if s.progress is not None:
        state += f" {s.progress[0]:.0%} ({s.progress[1]})"
    if s.queued > 1:
        state += f", {s.queued - 1} waiting"
    entry = manager.registry.get(s.id)
    details = s.reason or (entry.source_text if entry else "")
    if placement := manager.placement(s.id):
        details = f"on {placement}"
    notes = [f"⚠ {w}" for w in manager.template_warnings(s.id)]
    if (memory := manager.memory_report(s.id)) is not None:
        notes.append(memory_line(memory))
    details = " · ".join([details, *notes]) if details else " · ".join(notes)
    return [
        f"{s.name} ({s.id})", entry.settings_label if entry else s.backend, state,
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


def build_models_tab(manager: ModelManager) -> None:
    summary = gr.Markdown(manager.memory_summary(), elem_id="memory-summary")
    table = gr.Dataframe(value=status_rows(manager), headers=COLUMNS, interactive=False,
                         wrap=True, column_widths=WIDTHS, elem_id="models-table")
    with gr.Row():
        choice = gr.Dropdown(choices=[(e.name, e.id) for e in manager.registry.entries],
                             value=manager.registry.entries[0].id, label="Model", scale=3,
                             elem_id="models-choice")
        load = gr.Button("Load", variant="primary", scale=1, elem_id="models-load")
        unload = gr.Button("Unload", scale=1, elem_id="models-unload")
        release = gr.Button("Release memory", scale=1, elem_id="models-release")
    outcome = gr.Markdown(elem_id="models-outcome")
    handlers = ModelsHandlers(manager)
    load.click(handlers.load, [choice], [outcome], api_name="load_model")
    unload.click(handlers.unload, [choice], [outcome], api_name="unload_model")
    release.click(handlers.release, None, [outcome], api_name="release_memory")
    timer = gr.Timer(REFRESH_S)
    timer.tick(handlers.refresh, None, [table, summary], api_name=False, queue=False,
               show_progress="hidden")


def _is_resident(manager: ModelManager, model_id: str) -> bool:
    try:
        return manager.status(model_id).state in (ModelState.RESIDENT, ModelState.GENERATING)
    except (ModelUnavailable, UnknownModel):
        return False


class ModelsHandlers:
    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def refresh(self) -> tuple[list[list[str]], str]:
        return status_rows(self.manager), self.manager.memory_summary()

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
