"""Whether a model fits the memory budget, said the same way everywhere: the badge rule
over the planner's estimate, how many GGUF layers a GPU holds, and whether a weights file on
disk is loadable at all."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from backends.footprint import MemoryEstimate
from backends.notes import Note
from chatcore.library.discovery import inspect_path
from chatcore.generation.memory import format_bytes
from chatcore.generation.manager import Room

TIGHT_MARGIN = 0.10
VERDICTS = ("fits", "tight", "won't fit")  # each a badge of its own colour on the page


@dataclass(frozen=True)
class Fit:
    """Whether a model fits the budget: "fits", "tight" (only after unloading idle models,
    or within 10% of the budget) or "won't fit", with the numbers behind the word."""

    verdict: str
    needs: int
    detail: str  # a backends.notes.Note: the page says it in its language
    gpu_layers: int | None = None


def judge_fit(estimate: MemoryEstimate, room: Room) -> Fit:
    """The one rule for badges; the numbers come from the planner that loads models."""
    needs = estimate.total
    kv = format_bytes(estimate.kv_cache + estimate.saved_states)
    if estimate.kv_note:
        kv = Note(f"{kv} ({estimate.kv_note})", "library.need.kv_note", size=kv,
                  note=estimate.kv_note)
    sizes = dict(needs=format_bytes(needs), weights=format_bytes(estimate.weights), kv=kv,
                 working=format_bytes(estimate.working), free=format_bytes(max(room.free, 0)),
                 limit=format_bytes(room.limit), device=room.device)
    detail = Note("needs {needs} (weights {weights} + KV cache {kv} + working {working}); "
                  "{free} free of a {limit} budget on {device}".format(**sizes),
                  "library.need.detail", **sizes)
    if needs <= room.free and needs <= room.limit * (1 - TIGHT_MARGIN):
        verdict = "fits"
    elif needs <= room.free + room.evictable:
        verdict = "tight"
        if needs > room.free:
            models = ", ".join(mid for mid, _ in room.idle)
            detail = Note(f"{detail} (after unloading {models})",
                          "library.need.after_unloading", detail=detail, models=models)
    else:
        verdict = "won't fit"
    return Fit(verdict, needs, detail)


def layers_on_gpu(estimate: MemoryEstimate, n_layers: int, gpu: Room) -> int:
    """How many of a GGUF's layers the GPU's free budget holds (llama.cpp's n_gpu_layers),
    after the KV cache and working memory, which go there first."""
    if n_layers <= 0 or gpu.limit <= 0:
        return 0
    per_layer = estimate.weights / n_layers
    room = gpu.free - estimate.kv_cache - estimate.working
    return max(0, min(n_layers, int(room // per_layer))) if per_layer else 0


class WeightsCheck:
    """Reads a weights file's header once per size and modification time, so lists can say
    "unreadable: <reason>" before anyone loads it (the header read takes milliseconds)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[Path, int, int], str | None] = {}
        self._lock = threading.Lock()

    def __call__(self, path: Path) -> str | None:
        try:
            stat = path.stat()
        except OSError as exc:
            return f"{path}: {exc.strerror or exc}"
        key = (path, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._seen:
                return self._seen[key]
        problem = inspect_path(path).problem
        problem = problem.removeprefix("unreadable: ") if problem else None
        with self._lock:
            self._seen[key] = problem
        return problem
