"""The model manager: the only owner of backend instances.

It loads a model on first use within a memory budget, evicting the least recently used idle
models to make room; lets one generation at a time use a model, in arrival order (llama.cpp
contexts are not thread-safe); runs each generation in a worker thread that it joins; and
keeps the cancel events that Stop buttons and disconnects set.
"""
from __future__ import annotations

import enum
import gc
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from backends.base import (
    Backend,
    BackendError,
    Chunk,
    GenParams,
    Message,
    ProgressCallback,
    PromptReport,
)
from chatcore.config import ModelEntry, ModelRegistry
from chatcore.context import fit_context, with_system
from chatcore.cpu_share import CpuShare
from chatcore.fair_queue import FairQueue
from chatcore.memory import (
    MemoryBudget,
    format_bytes,
    process_rss_bytes,
    release_freed_memory,
)
from chatcore.sources import ModelNotAvailable, resolve_weights

log = logging.getLogger(__name__)

BackendFactory = Callable[[ModelEntry], Backend]
WAIT_POLL_S = 0.1
UNLOAD_TOLERANCE = 0.15  # memory after an unload may exceed what it was before by this much


class ModelState(str, enum.Enum):
    AVAILABLE = "available"
    NOT_DOWNLOADED = "not downloaded"
    INVALID = "invalid entry"
    UNREADABLE = "unreadable"
    LOADING = "loading"
    RESIDENT = "resident"
    GENERATING = "generating"
    FAILED = "failed"


@dataclass(frozen=True)
class ModelStatus:
    id: str
    name: str
    backend: str
    state: ModelState
    reason: str = ""
    progress: tuple[float, str] | None = None
    estimated_bytes: int | None = None
    measured_bytes: int | None = None
    load_seconds: float | None = None
    last_used: float | None = None
    queued: int = 0

    @property
    def usable(self) -> bool:
        return self.state not in (ModelState.NOT_DOWNLOADED, ModelState.INVALID,
                                  ModelState.FAILED, ModelState.UNREADABLE)


@dataclass(frozen=True)
class Loading:
    """Progress of the load a reply waits for."""

    fraction: float
    step: str


@dataclass(frozen=True)
class Waiting:
    """How many requests are ahead of this one for the same model."""

    ahead: int


@dataclass(frozen=True)
class Trimmed:
    """The oldest `dropped` messages were left out to fit the model's context."""

    dropped: int


StreamEvent = Chunk | Loading | Waiting | Trimmed


class UnknownModel(Exception):
    def __init__(self, model_id: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown model id {model_id!r}; known ids: {', '.join(known)}")


class ModelUnavailable(Exception):
    """The model cannot run now; the message says why, for a person."""


class ModelBusy(ModelUnavailable):
    """The model is answering someone and cannot be unloaded now."""


@dataclass
class _Resident:
    backend: Backend
    device: str
    estimate: int
    measured: int
    load_seconds: float
    last_used: float
    rss_before: int = 0  # process memory just before the load


@dataclass(frozen=True)
class Room:
    """One device's budget as a load sees it; `idle` are (model id, bytes) that an unload
    could free, least recently used first."""

    device: str
    limit: int
    free: int
    idle: tuple[tuple[str, int], ...]

    @property
    def evictable(self) -> int:
        return sum(size for _, size in self.idle)


@dataclass(frozen=True)
class MemoryReport:
    """Process memory around one model's load and unload: did the unload give it back?"""

    model_id: str
    before_load: int
    grew_by: int  # what loading it added
    loaded: int  # just before the unload (other models may have come and gone since)
    after_unload: int

    @property
    def retained(self) -> int:
        """What the unload did not give back of what the load took."""
        return max(0, self.grew_by - (self.loaded - self.after_unload))

    @property
    def returned(self) -> bool:
        return (self.after_unload <= self.before_load * (1 + UNLOAD_TOLERANCE)
                or self.retained <= self.grew_by * UNLOAD_TOLERANCE)


@dataclass(frozen=True)
class ContextMeter:
    """How the next prompt fills the context: system, history and draft, in tokens."""

    system: int
    history: int
    draft: int
    budget: int  # the context minus the room kept for the reply
    left_out: int  # oldest messages that will not be sent

    @property
    def total(self) -> int:
        return self.system + self.history + self.draft


_DONE = object()


class Replies:
    """Replies already being computed; read them as (index, event), and close (or leave the
    `with` block) to cancel what is left and join every worker."""

    def __init__(self, workers: list[threading.Thread], events: queue.Queue,
                 cancel: threading.Event, news: threading.Event) -> None:
        self._workers, self._events, self._cancel = workers, events, cancel
        self._news = news  # set with the first event any worker emits
        self._running = len(workers)

    def wait_for_news(self, timeout: float) -> bool:
        """Block until an event is ready to read (True) or `timeout` seconds pass."""
        return self._news.wait(timeout)

    def __iter__(self) -> Replies:
        return self

    def __next__(self) -> tuple[int, StreamEvent | Exception]:
        while self._running:
            index, item = self._events.get()
            if item is not _DONE:
                return index, item
            self._running -= 1
        raise StopIteration

    def close(self) -> None:
        self._cancel.set()
        for worker in self._workers:
            worker.join()

    def __enter__(self) -> Replies:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ModelManager:
    def __init__(self, registry: ModelRegistry, backend_factory: BackendFactory,
                 budget: MemoryBudget | None = None, allow_download: bool = False,
                 cpu: CpuShare | None = None,
                 weights_check: Callable[[Path], str | None] | None = None) -> None:
        """`weights_check(path)` reads a weights file's header and returns what is wrong
        with it (None when it looks loadable), so states are truthful before a load."""
        self.registry = registry
        self._weights_check = weights_check
        self.budget = budget or MemoryBudget.parse(None)
        self.cpu = cpu or CpuShare()
        self._factory = backend_factory
        self._allow_download = allow_download
        self._lock = threading.Lock()  # guards every dict below; never held while loading
        self._plan_lock = threading.Lock()  # one placement decision at a time
        self._resident: dict[str, _Resident] = {}
        self._loading: dict[str, tuple[str, int]] = {}  # id -> (device, reserved bytes)
        self._progress: dict[str, tuple[float, str]] = {}
        self._failures: dict[str, str] = {}
        self._estimates: dict[str, int] = {}
        self._in_use: dict[str, int] = {}
        self._generating: dict[str, int] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self._queues: dict[str, FairQueue] = {}
        self._stale: set[str] = set()  # resident, but its entry changed: unload when idle
        self._cancel_events: dict[str, threading.Event] = {}
        self._warnings: dict[str, list[str]] = {}  # chat template checks, kept after unload
        self._memory_reports: dict[str, MemoryReport] = {}

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
            resident = self._resident.get(model_id)
            common = dict(id=entry.id, name=entry.name, backend=entry.backend,
                          estimated_bytes=self._estimates.get(model_id),
                          queued=len(self._queues.get(model_id, ())))
            if resident is not None:
                state = (ModelState.GENERATING if self._generating.get(model_id)
                         else ModelState.RESIDENT)
                return ModelStatus(state=state, measured_bytes=resident.measured,
                                   load_seconds=resident.load_seconds,
                                   last_used=resident.last_used, **common)
            if model_id in self._loading:
                return ModelStatus(state=ModelState.LOADING,
                                   progress=self._progress.get(model_id), **common)
            if model_id in self._failures:
                return ModelStatus(state=ModelState.FAILED, reason=self._failures[model_id],
                                   **common)
        if entry.is_remote:
            return ModelStatus(state=ModelState.AVAILABLE, **common)
        try:
            weights = resolve_weights(entry, allow_download=False)
        except ModelNotAvailable as exc:
            if not exc.not_downloaded:
                return ModelStatus(state=ModelState.FAILED, reason=str(exc), **common)
            if not self._allow_download:
                return ModelStatus(state=ModelState.NOT_DOWNLOADED, reason=str(exc), **common)
            return ModelStatus(state=ModelState.AVAILABLE, **common)
        problem = self._weights_check(weights) if self._weights_check else None
        if problem:
            return ModelStatus(state=ModelState.UNREADABLE, reason=problem, **common)
        return ModelStatus(state=ModelState.AVAILABLE, **common)

    def entry(self, model_id: str) -> ModelEntry:
        entry = self.registry.get(model_id)
        if entry is None:
            broken = self.registry.broken_entry(model_id)
            if broken is not None:
                raise ModelUnavailable(broken.reason)
            raise UnknownModel(model_id, self.registry.ids)
        return entry

    def placement(self, model_id: str) -> str:
        """Where a loaded model's weights ended up ("cpu", "cuda:0, cpu"), or ""."""
        with self._lock:
            resident = self._resident.get(model_id)
        return getattr(resident.backend, "placement", "") if resident is not None else ""

    def memory_summary(self) -> str:
        """One line per budgeted device: what the resident models take of the budget."""
        with self._lock:
            used: dict[str, int] = {}
            for resident in self._resident.values():
                used[resident.device] = used.get(resident.device, 0) + resident.estimate
        devices = sorted(set(self.budget.limits) | set(used))
        return " · ".join(f"{d}: {format_bytes(used.get(d, 0))} of a "
                          f"{format_bytes(self.budget.limit(d, used.get(d, 0)))} budget"
                          for d in devices)

    # -- loading -----------------------------------------------------------------------
    def load(self, model_id: str, progress: ProgressCallback | None = None) -> Backend:
        """The resident backend for `model_id`, loading it (and making room) first if needed."""
        entry = self.entry(model_id)
        with self._lock:
            load_lock = self._load_locks.setdefault(model_id, threading.Lock())
        with load_lock:
            with self._lock:
                if model_id in self._resident:
                    return self._resident[model_id].backend
                self._failures.pop(model_id, None)
            try:
                backend = self._factory(entry)
                device, estimate = self._make_room(entry, backend)
            except ModelNotAvailable as exc:
                # Missing weights are a state of the machine, not a failure of the model.
                self._record_failure(model_id, None if exc.not_downloaded else str(exc))
                raise ModelUnavailable(f"{entry.name}: {exc}") from exc
            except BackendError as exc:
                self._record_failure(model_id, str(exc))
                raise ModelUnavailable(f"{entry.name}: {exc}") from exc
            return self._load_reserved(entry, backend, device, estimate, progress)

    def _load_reserved(self, entry: ModelEntry, backend: Backend, device: str, estimate: int,
                       progress: ProgressCallback | None) -> Backend:
        model_id = entry.id

        def report(fraction: float, step: str) -> None:
            with self._lock:
                self._progress[model_id] = (fraction, step)
            if progress is not None:
                progress(fraction, step)

        before = process_rss_bytes()
        started = time.perf_counter()
        try:
            backend.load(report)
        except BackendError as exc:
            self._record_failure(model_id, str(exc))
            raise ModelUnavailable(f"{entry.name}: {exc}") from exc
        except MemoryError as exc:
            self._record_failure(model_id, f"out of memory while loading ({exc})")
            raise ModelUnavailable(f"{entry.name}: out of memory while loading") from exc
        except Exception as exc:  # noqa: BLE001 - a bad model must not take the app down
            log.exception("loading %s failed", model_id)
            self._record_failure(model_id, f"{type(exc).__name__}: {exc}")
            raise ModelUnavailable(f"{entry.name}: could not load: {exc}") from exc
        finally:
            release_freed_memory()
        seconds = time.perf_counter() - started
        with self._lock:
            self._loading.pop(model_id, None)
            self._progress.pop(model_id, None)
            self._resident[model_id] = _Resident(
                backend, device, estimate, max(0, process_rss_bytes() - before), seconds,
                time.time(), rss_before=before)
        warnings = backend.template_warnings()
        with self._lock:
            self._warnings[model_id] = warnings
        for warning in warnings:
            log.warning("%s: %s", model_id, warning)
        log.info("loaded %s in %.2f s", model_id, seconds)
        return backend

    # -- the registry --------------------------------------------------------------------
    def replace_registry(self, registry: ModelRegistry) -> list[str]:
        """Swap in an edited registry; returns the ids whose entry changed or went away.

        New entries are usable at once. A resident model whose entry changed is unloaded
        now if idle, or when its reply ends, so the edit applies to its next load and never
        disturbs a reply in progress.
        """
        old, self.registry = self.registry, registry
        changed = [e.id for e in old.entries if registry.get(e.id) != e]
        with self._lock:
            for model_id in changed:
                self._estimates.pop(model_id, None)
                self._failures.pop(model_id, None)
                if model_id in self._resident:
                    self._stale.add(model_id)
        for model_id in changed:
            self._unload_if_stale(model_id)
        return changed

    def _unload_if_stale(self, model_id: str) -> None:
        with self._lock:
            if model_id not in self._stale or self._in_use.get(model_id):
                return
            self._stale.discard(model_id)
        log.info("unloading %s: its entry changed", model_id)
        self._evict(model_id)

    # -- room --------------------------------------------------------------------------
    def room(self, device: str) -> Room:
        """The budget of one device, what resident and loading models take of it, and what
        unloading idle models could give back: what a load is planned against."""
        with self._lock:
            held = sum(r.estimate for r in self._resident.values() if r.device == device)
            used = held + sum(b for d, b in self._loading.values() if d == device)
            idle = sorted(((mid, r) for mid, r in self._resident.items()
                           if r.device == device and not self._in_use.get(mid)),
                          key=lambda item: item[1].last_used)
        limit = self.budget.limit(device, held)
        return Room(device, limit, limit - used, tuple((mid, r.estimate) for mid, r in idle))

    def _make_room(self, entry: ModelEntry, backend: Backend) -> tuple[str, int]:
        """Reserve the model's estimate in the budget, evicting idle models LRU-first.

        Either the reservation succeeds, or nothing is evicted and the refusal gives the
        numbers.
        """
        with self._lock:
            known = self._estimates.get(entry.id)
        # Reading a GGUF header takes seconds; the entry's file does not change while we run.
        estimate = known if known is not None else backend.memory_estimate()
        device = backend.memory_device()
        with self._plan_lock:
            with self._lock:
                self._estimates[entry.id] = estimate
            room = self.room(device)
            if estimate > room.free + room.evictable:
                raise BackendError(
                    f"needs {format_bytes(estimate)}, {format_bytes(max(room.free, 0))} free "
                    f"of a {format_bytes(room.limit)} budget on {device}"
                    + ("" if estimate <= room.limit else "; raise --max-memory to load it"))
            free = room.free
            for victim_id, victim_bytes in room.idle:
                if estimate <= free:
                    break
                log.info("evicting %s to make room for %s", victim_id, entry.id)
                self._evict(victim_id)
                free += victim_bytes
            with self._lock:
                self._loading[entry.id] = (device, estimate)
                self._progress[entry.id] = (0.0, "waiting to load")
        return device, estimate

    def unload(self, model_id: str) -> bool:
        """Free a resident model; False if it was not resident. Refused while it answers."""
        self.entry(model_id)
        with self._lock:
            if self._in_use.get(model_id):
                raise ModelBusy(f"{model_id} is answering a request; stop it first")
        return self._evict(model_id)

    def _evict(self, model_id: str) -> bool:
        with self._lock:
            resident = self._resident.pop(model_id, None)
        if resident is None:
            return False
        loaded = process_rss_bytes()
        resident.backend.unload()
        del resident.backend
        gc.collect()
        release_freed_memory()
        report = MemoryReport(model_id, resident.rss_before, resident.measured, loaded,
                              process_rss_bytes())
        with self._lock:
            self._memory_reports[model_id] = report
        if not report.returned:
            log.warning("unloading %s kept %s of process memory", model_id,
                        format_bytes(report.retained))
        return True

    def memory_report(self, model_id: str) -> MemoryReport | None:
        """Memory around this model's last unload, if it was unloaded."""
        with self._lock:
            return self._memory_reports.get(model_id)

    def release_memory(self) -> int:
        """Collect garbage and hand freed pages back to the system; returns process bytes.
        Every unload does this already; the Models tab offers it again as a button."""
        gc.collect()
        release_freed_memory()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
        return process_rss_bytes()

    # -- what a model sees -------------------------------------------------------------
    def inspect(self, model_id: str, messages: Sequence[Message],
                params: GenParams) -> tuple[PromptReport, int]:
        """The prompt a reply to `messages` is (or was) given, and how many messages were left
        out to fit; the model must be resident."""
        backend = self._resident_backend(model_id)
        fitted, dropped = fit_context(messages, backend.count_tokens,
                                      self.entry(model_id).context_length,
                                      params.max_new_tokens)
        return backend.prompt_report(fitted, params), dropped

    def context_meter(self, model_id: str, system: str, history: Sequence[Message],
                      draft: str, max_new_tokens: int) -> ContextMeter:
        backend = self._resident_backend(model_id)
        context = self.entry(model_id).context_length
        head = with_system(system, [])
        count = backend.count_tokens
        system_tokens = count(head) if head else 0
        with_history = count(head + list(history)) if history else system_tokens
        messages = head + list(history) + [Message("user", draft)]
        full = count(messages)
        try:
            _, dropped = fit_context(messages, count, context, max_new_tokens)
        except BackendError:
            dropped = len(history)
        return ContextMeter(system_tokens, with_history - system_tokens, full - with_history,
                            context - min(max_new_tokens, context // 2), dropped)

    def template_warnings(self, model_id: str) -> list[str]:
        with self._lock:
            return list(self._warnings.get(model_id, []))

    def _resident_backend(self, model_id: str) -> Backend:
        self.entry(model_id)
        with self._lock:
            resident = self._resident.get(model_id)
        if resident is None:
            raise ModelUnavailable(f"{model_id} is not loaded: send a message first")
        return resident.backend

    def unload_all(self) -> None:
        with self._lock:
            ids = list(self._resident)
        for model_id in ids:
            self._evict(model_id)

    def _record_failure(self, model_id: str, reason: str | None) -> None:
        with self._lock:
            self._loading.pop(model_id, None)
            self._progress.pop(model_id, None)
            if reason is not None:
                self._failures[model_id] = reason

    # -- generation --------------------------------------------------------------------
    def stream_chat(self, model_id: str, messages: Sequence[Message], params: GenParams,
                    cancel: threading.Event) -> Iterator[Chunk]:
        """The reply's chunks only (see `stream_events`)."""
        for event in self.stream_events(model_id, messages, params, cancel):
            if isinstance(event, Chunk):
                yield event

    def stream_events(self, model_id: str, messages: Sequence[Message], params: GenParams,
                      cancel: threading.Event) -> Iterator[StreamEvent]:
        """Load progress, place in line, then the reply's chunks, from one worker thread.

        Closing the iterator early (a disconnect) sets `cancel` and joins the worker, so
        no token is computed for a reader that is gone.
        """
        for _, event in self.stream_many([(model_id, messages, params)], cancel):
            if isinstance(event, Exception):
                raise event
            yield event

    def stream_many(self, requests: Sequence[tuple[str, Sequence[Message], GenParams]],
                    cancel: threading.Event) -> Iterator[tuple[int, StreamEvent | Exception]]:
        """Several replies at once, one worker each, merged as (request index, event) in the
        order they happen. A failed request yields its error (BackendError or
        ModelUnavailable) as its last event and the others go on; `cancel` stops them all.
        """
        with self.start_many(requests, cancel) as replies:
            yield from replies

    def start_many(self, requests: Sequence[tuple[str, Sequence[Message], GenParams]],
                   cancel: threading.Event) -> Replies:
        """Like `stream_many`, but the workers start now, before anyone reads: a page can
        show its placeholder while the model already works."""
        for model_id, _, _ in requests:
            self.entry(model_id)
        events: queue.Queue = queue.Queue()
        news = threading.Event()

        def emitter(index: int) -> Callable[[object], None]:
            def emit(item: object) -> None:
                events.put((index, item))
                news.set()
            return emit

        workers = [
            threading.Thread(target=self._serve,
                             args=(model_id, messages, params, cancel, emitter(index)),
                             name=f"generate-{model_id}", daemon=True)
            for index, (model_id, messages, params) in enumerate(requests)]
        for worker in workers:
            worker.start()
        return Replies(workers, events, cancel, news)

    def _serve(self, model_id: str, messages: Sequence[Message], params: GenParams,
               cancel: threading.Event, emit: Callable[[object], None]) -> None:
        self._count(self._in_use, model_id, +1)  # a model someone waits for is not evicted
        line = self._line(model_id)
        ticket = None
        try:
            backend = self.load(model_id, lambda f, step: emit(Loading(f, step)))
            messages, dropped = fit_context(messages, backend.count_tokens,
                                            self.entry(model_id).context_length,
                                            params.max_new_tokens)
            if dropped:
                emit(Trimmed(dropped))
            ticket = None if backend.concurrent else line.join()
            ahead = None
            while ticket is not None and not line.wait_turn(ticket, WAIT_POLL_S):
                if cancel.is_set():
                    emit(Chunk("", finish_reason="cancelled"))
                    return
                if (position := line.position(ticket)) != ahead:
                    ahead = position
                    emit(Waiting(position))
            self._count(self._generating, model_id, +1)
            share = self.cpu.share() if backend.decodes_on_cpu() else nullcontext(None)
            try:
                with share as threads:
                    params = replace(params, threads=threads) if threads else params
                    for chunk in backend.stream_chat(messages, params, cancel):
                        emit(chunk)
            finally:
                self._count(self._generating, model_id, -1)
        except (BackendError, ModelUnavailable) as exc:  # ContextOverflow among them
            emit(exc)
        except Exception as exc:  # noqa: BLE001 - shown to the person, logged in full
            log.exception("generation with %s failed", model_id)
            emit(BackendError(f"{model_id} failed while generating: {exc}"))
        finally:
            if ticket is not None:
                line.leave(ticket)
            with self._lock:
                if model_id in self._resident:
                    self._resident[model_id].last_used = time.time()
            self._count(self._in_use, model_id, -1)
            self._unload_if_stale(model_id)
            emit(_DONE)

    def _line(self, model_id: str) -> FairQueue:
        with self._lock:
            return self._queues.setdefault(model_id, FairQueue())

    def _count(self, counter: dict[str, int], model_id: str, delta: int) -> None:
        with self._lock:
            counter[model_id] = counter.get(model_id, 0) + delta

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
