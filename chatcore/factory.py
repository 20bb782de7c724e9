"""Turns a models.yaml entry into the backend object that will run it."""
from __future__ import annotations

from backends.base import Backend
from backends.llamacpp import LlamaCppBackend
from chatcore.config import ModelEntry
from chatcore.sources import resolve_weights


def make_backend(entry: ModelEntry, allow_download: bool = False) -> Backend:
    """Raises ModelNotAvailable when the weights are not on this machine."""
    weights = resolve_weights(entry, allow_download=allow_download)
    if entry.backend == "llamacpp":
        return LlamaCppBackend(
            weights,
            context_length=entry.context_length,
            chat_template=entry.chat_template,
            n_threads=entry.n_threads,
            n_gpu_layers=entry.n_gpu_layers,
        )
    raise ValueError(f"unknown backend {entry.backend!r}")  # the schema prevents this
