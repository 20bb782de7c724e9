"""The model manager: the only owner of backend instances.

It loads a model on first use, runs each generation in a worker thread that it joins, lets
one generation at a time use a model (llama.cpp contexts are not thread-safe), and keeps
the cancel events that Stop buttons and disconnects set.
"""
from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from backends.base import Backend, BackendError, Chunk, GenParams, Message, ProgressCallback
from chatcore.config import ModelEntry, ModelRegistry
from chatcore.sources import ModelNotAvailable, resolve_weights

log = logging.getLogger(__name__)

BackendFactory = Callable[[ModelEntry], Backend]


class ModelState(str, enum.Enum):
    AVAILABLE = "available"
    NOT_DOWNLOADED = "not downloaded"
    INVALID = "invalid entry"
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"


@dataclass(frozen=True)
class ModelStatus:
    id: str
    name: str
    backend: str
    state: ModelState
    reason: str = ""

    @property
    def usable(self) -> bool:
        return self.state in (ModelState.AVAILABLE, ModelState.LOADING, ModelState.LOADED)


class UnknownModel(Exception):
    def __init__(self, model_id: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown model id {model_id!r}; known ids: {', '.join(known)}")


class ModelUnavailable(Exception):
    """The model cannot run now; the message says why, for a person."""


_DONE = object()


class ModelManager:
    def __init__(self, registry: ModelRegistry, backend_factory: BackendFactory,
                 allow_download: bool = False) -> None:
        self.registry = registry
        self._factory = backend_factory
        self._allow_download = allow_download
        self._lock = threading.Lock()
        self._backends: dict[str, Backend] = {}
        self._failures: dict[str, str] = {}
        self._loading: set[str] = set()
        self._load_locks = {e.id: threading.Lock() for e in registry.entries}
        self._generate_locks = {e.id: threading.Lock() for e in registry.entries}
        self._cancel_events: dict[str, threading.Event] = {}

    # -- status ------------------------------------------------------------------------
    def statuses(self) -> list[ModelStatus]:
        """Every declared model in file order, broken entries last."""
        found = [self.status(e.id) for e in self.registry.entries]
        found += [ModelStatus(b.id, b.name, "?", ModelState.INVALID, b.reason)
                  for b in self.registry.broken]
        return found

    def status(self, model_id: str) -> ModelStatus:
        entry = self.entry(model_id)
        with self._lock:
            if model_id in self._backends:
                return ModelStatus(entry.id, entry.name, entry.backend, ModelState.LOADED)
            if model_id in self._loading:
                return ModelStatus(entry.id, entry.name, entry.backend, ModelState.LOADING)
            if model_id in self._failures:
                return ModelStatus(entry.id, entry.name, entry.backend, ModelState.FAILED,
                                   self._failures[model_id])
        try:
            resolve_weights(entry, allow_download=False)
        except ModelNotAvailable as exc:
            if exc.not_downloaded and not self._allow_download:
                return ModelStatus(entry.id, entry.name, entry.backend,
                                   ModelState.NOT_DOWNLOADED, str(exc))
            if not exc.not_downloaded:
                return ModelStatus(entry.id, entry.name, entry.backend, ModelState.FAILED, str(exc))
        return ModelStatus(entry.id, entry.name, entry.backend, ModelState.AVAILABLE)

    def placement(self, model_id: str) -> str:
        """Where a loaded model's weights ended up ("cpu", "cuda:0, cpu"), or ""."""
        with self._lock:
            backend = self._backends.get(model_id)
        return getattr(backend, "placement", "") if backend is not None else ""

    def entry(self, model_id: str) -> ModelEntry:
        entry = self.registry.get(model_id)
        if entry is None:
            broken = self.registry.broken_entry(model_id)
            if broken is not None:
                raise ModelUnavailable(broken.reason)
            raise UnknownModel(model_id, self.registry.ids)
        return entry

    # -- loading -----------------------------------------------------------------------
    def load(self, model_id: str, progress: ProgressCallback | None = None) -> Backend:
        """The loaded backend for `model_id`, loading it first if needed."""
        entry = self.entry(model_id)
        with self._load_locks[model_id]:
            with self._lock:
                if model_id in self._backends:
                    return self._backends[model_id]
                self._loading.add(model_id)
                self._failures.pop(model_id, None)
            started = time.perf_counter()
            try:
                backend = self._factory(entry)
                backend.load(progress)
            except ModelNotAvailable as exc:
                # Missing weights are a state of the machine, not a failure of the model.
                self._record_failure(model_id, None if exc.not_downloaded else str(exc))
                raise ModelUnavailable(f"{entry.name}: {exc}") from exc
            except BackendError as exc:
                self._record_failure(model_id, str(exc))
                raise ModelUnavailable(f"{entry.name}: {exc}") from exc
            except Exception as exc:  # noqa: BLE001 - a bad model must not take the app down
                log.exception("loading %s failed", model_id)
                self._record_failure(model_id, f"{type(exc).__name__}: {exc}")
                raise ModelUnavailable(f"{entry.name}: could not load: {exc}") from exc
            with self._lock:
                self._loading.discard(model_id)
                self._backends[model_id] = backend
            log.info("loaded %s in %.2f s", model_id, time.perf_counter() - started)
            return backend

    def unload_all(self) -> None:
        with self._lock:
            loaded, self._backends = self._backends, {}
        for model_id, backend in loaded.items():
            with self._generate_locks[model_id]:
                backend.unload()

    def _record_failure(self, model_id: str, reason: str | None) -> None:
        with self._lock:
            self._loading.discard(model_id)
            if reason is not None:
                self._failures[model_id] = reason

    # -- generation --------------------------------------------------------------------
    def stream_chat(self, model_id: str, messages: Sequence[Message], params: GenParams,
                    cancel: threading.Event) -> Iterator[Chunk]:
        """Chunks of one reply, decoded in a worker thread that ends with this iterator.

        Closing the iterator early (a disconnect) sets `cancel` and joins the worker, so
        no token is computed for a reader that is gone.
        """
        backend = self.load(model_id)
        chunks: queue.Queue = queue.Queue()
        generate_lock = self._generate_locks[model_id]

        def work() -> None:
            try:
                with generate_lock:
                    if cancel.is_set():
                        chunks.put(Chunk("", finish_reason="cancelled"))
                        return
                    for chunk in backend.stream_chat(messages, params, cancel):
                        chunks.put(chunk)
            except BackendError as exc:
                chunks.put(exc)
            except Exception as exc:  # noqa: BLE001 - shown to the person, logged in full
                log.exception("generation with %s failed", model_id)
                chunks.put(BackendError(f"{model_id} failed while generating: {exc}"))
            finally:
                chunks.put(_DONE)

        worker = threading.Thread(target=work, name=f"generate-{model_id}", daemon=True)
        worker.start()
        try:
            while (item := chunks.get()) is not _DONE:
                if isinstance(item, BackendError):
                    raise item
                yield item
        finally:
            cancel.set()
            worker.join()

    # -- stop signals ------------------------------------------------------------------
    def begin_generation(self, key: str) -> threading.Event:
        """A fresh cancel event for the generation that `key` (a browser session) starts."""
        event = threading.Event()
        with self._lock:
            previous = self._cancel_events.get(key)
            self._cancel_events[key] = event
        if previous is not None:
            previous.set()
        return event

    def end_generation(self, key: str, event: threading.Event) -> None:
        with self._lock:
            if self._cancel_events.get(key) is event:
                del self._cancel_events[key]

    def cancel(self, key: str) -> bool:
        """Stop the generation `key` started; False when nothing was running."""
        with self._lock:
            event = self._cancel_events.get(key)
        if event is None:
            return False
        event.set()
        return True
