"""Which models are in memory: loading within the budget, evicting the least recently used
idle models to make room, unloading, and checking that an unload gave the memory back."""
from __future__ import annotations

import gc
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from backends.base import Backend, BackendError, ProgressCallback
from chatcore.generation.registry import ModelEntry
from chatcore.i18n import Texts
from chatcore.generation.memory import MemoryBudget, format_bytes, process_rss_bytes, release_freed_memory
from chatcore.generation.prompt_cache import prompt_cache_extra
from chatcore.generation.slots import MemoryReport, ModelBusy, ModelSlot, ModelUnavailable
from chatcore.generation.weights import ModelNotAvailable

log = logging.getLogger(__name__)

BackendFactory = Callable[[ModelEntry], Backend]


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


class Residency:
    """Owns the slots and the lock that guards them; never holds the lock while loading."""

    def __init__(self, budget: MemoryBudget, factory: BackendFactory) -> None:
        self.budget = budget
        self.lock = threading.Lock()
        self._factory = factory
        self._slots: dict[str, ModelSlot] = {}
        self._plan_lock = threading.Lock()  # one placement decision at a time
        self._clock = itertools.count(1)  # least-recently-used order, immune to clock steps

    def slot(self, model_id: str) -> ModelSlot:
        """The model's slot, made on first use; call with `lock` held."""
        return self._slots.setdefault(model_id, ModelSlot())

    def peek(self, model_id: str) -> ModelSlot | None:
        """The slot if the model was ever touched; call with `lock` held."""
        return self._slots.get(model_id)

    def backend(self, model_id: str) -> Backend | None:
        with self.lock:
            slot = self._slots.get(model_id)
            return slot.backend if slot is not None else None

    def mark_used(self, model_id: str) -> None:
        with self.lock:
            slot = self.slot(model_id)
            slot.last_used, slot.used_order = time.time(), next(self._clock)

    # -- loading -----------------------------------------------------------------------
    def load(self, entry: ModelEntry, progress: ProgressCallback | None = None) -> Backend:
        """The resident backend for `entry`, loading it (and making room) first if needed."""
        with self.lock:
            slot = self.slot(entry.id)
        with slot.load_lock:
            with self.lock:
                if slot.backend is not None:
                    return slot.backend
                slot.failure = None
            try:
                backend = self._factory(entry)
                self._make_room(entry, slot, backend)
            except ModelNotAvailable as exc:
                # Missing weights are a state of the machine, not a failure of the model.
                self._fail(slot, None if exc.not_downloaded else str(exc))
                raise ModelUnavailable(f"{entry.name}: {exc}") from exc
            except BackendError as exc:
                self._fail(slot, str(exc))
                raise ModelUnavailable(f"{entry.name}: {exc}") from exc
            return self._load_reserved(entry, slot, backend, progress)

    def _load_reserved(self, entry: ModelEntry, slot: ModelSlot, backend: Backend,
                       progress: ProgressCallback | None) -> Backend:
        def report(fraction: float, step: str) -> None:
            with self.lock:
                slot.progress = (fraction, step)
            if progress is not None:
                progress(fraction, step)

        before = process_rss_bytes()
        started = time.perf_counter()
        try:
            backend.load(report)
        except BackendError as exc:
            self._fail(slot, str(exc))
            raise ModelUnavailable(f"{entry.name}: {exc}") from exc
        except MemoryError as exc:
            self._fail(slot, f"out of memory while loading ({exc})")
            raise ModelUnavailable(f"{entry.name}: out of memory while loading") from exc
        except Exception as exc:  # noqa: BLE001 - a bad model must not take the app down
            log.exception("loading %s failed", entry.id)
            self._fail(slot, f"{type(exc).__name__}: {exc}")
            raise ModelUnavailable(f"{entry.name}: could not load: {exc}") from exc
        finally:
            release_freed_memory()
        seconds = time.perf_counter() - started
        warnings = backend.template_warnings()
        with self.lock:
            slot.forget_plan()
            slot.backend, slot.rss_before, slot.load_seconds = backend, before, seconds
            slot.measured = max(0, process_rss_bytes() - before)
            slot.last_used, slot.used_order = time.time(), next(self._clock)
            slot.warnings = warnings
        for warning in warnings:
            log.warning("%s: %s", entry.id, warning)
        log.info("loaded %s in %.2f s", entry.id, seconds)
        self._lend_cache(entry.id, slot, backend)
        return backend

    # -- prompt caches -------------------------------------------------------------------
    def _lend_cache(self, model_id: str, slot: ModelSlot, backend: Backend) -> None:
        """Lend a loaded model's prompt cache part of the host RAM the budget has left over
        (chatcore/generation/prompt_cache.py); other loads take it back before evicting."""
        if type(backend).grant_prompt_cache is Backend.grant_prompt_cache:
            return  # an engine without a prompt cache
        try:
            breakdown = backend.memory_breakdown()
        except BackendError:
            return
        minimum = getattr(breakdown, "saved_states", 0)
        with self._plan_lock:
            room = self.room("cpu")
            with self.lock:
                if slot.backend is not backend:
                    return  # unloaded meanwhile
                left = room.free - self._loans()
            extra = prompt_cache_extra(minimum, left)
            if extra <= 0:
                return
            lent = backend.grant_prompt_cache(extra)
            with self.lock:
                slot.cache_loan = lent
        if lent:
            log.info("%s: prompt cache may take %s more (%s left in the cpu budget)",
                     model_id, format_bytes(lent), format_bytes(left))

    def _loans(self) -> int:
        """RAM lent to prompt caches now; call with `lock` held."""
        return sum(s.cache_loan for s in self._slots.values() if s.resident)

    def _reclaim(self, needed: int) -> None:
        """Take prompt cache loans back, least recently used model first, until `needed`
        bytes are free of them (their oldest states are dropped)."""
        with self.lock:
            lenders = sorted((s for s in self._slots.values() if s.resident and s.cache_loan),
                             key=lambda s: s.used_order)
        for lender in lenders:
            if needed <= 0:
                return
            take = min(lender.cache_loan, needed)
            backend = lender.backend
            kept = backend.grant_prompt_cache(lender.cache_loan - take) if backend else 0
            with self.lock:
                needed -= lender.cache_loan - kept
                lender.cache_loan = kept

    def _fail(self, slot: ModelSlot, reason: str | None) -> None:
        with self.lock:
            slot.forget_plan()
            if reason is not None:
                slot.failure = reason

    def plan(self, entry: ModelEntry) -> tuple[int, str]:
        """What loading `entry` would reserve, and on which device, without loading it (the
        resident model's own figure when it is loaded). Raises ModelNotAvailable or
        BackendError when its weights are not here or cannot be read."""
        with self.lock:
            slot = self.slot(entry.id)
            if slot.backend is not None and slot.estimate is not None:
                return slot.estimate, slot.device
        backend = self._factory(entry)
        return backend.memory_estimate(), backend.memory_device()

    def shared_of(self, entry: ModelEntry) -> tuple[object, int] | None:
        """The entry's shared base weights (Backend.shared_weights), without loading it."""
        with self.lock:
            slot = self.slot(entry.id)
            if slot.backend is not None:
                return slot.shared
        return self._factory(entry).shared_weights()

    # -- room --------------------------------------------------------------------------
    def room(self, device: str) -> Room:
        """The budget of one device, what resident and loading models take of it, and what
        unloading idle models could give back: what a load is planned against."""
        with self.lock:
            held = self._held_on(device, resident_only=True)
            used = self._held_on(device, resident_only=False)
            idle = sorted(((mid, s) for mid, s in self._slots.items()
                           if s.resident and s.device == device and not s.in_use),
                          key=lambda item: item[1].used_order)
            idle_sizes = tuple((mid, s.estimate or 0) for mid, s in idle)
        # Without --max-memory a GPU's limit is what is free there now plus what this app
        # already holds there, so the resident models are counted once, in `used`.
        limit = self.budget.limit(device, held)
        return Room(device, limit, limit - used, idle_sizes)

    def _held_on(self, device: str, resident_only: bool) -> int:
        """What the slots take of `device`, with base weights shared by several entries
        counted once; call with `lock` held."""
        slots = [s for s in self._slots.values()
                 if (s.resident or not resident_only) and s.held_on(device)]
        return sum(s.held_on(device) for s in slots) - self._repeats(slots)

    @staticmethod
    def _repeats(slots: list[ModelSlot]) -> int:
        """Bytes of shared weights counted more than once among `slots`."""
        seen: set = set()
        repeated = 0
        for s in slots:
            if s.shared is None:
                continue
            if s.shared[0] in seen:
                repeated += s.shared[1]
            seen.add(s.shared[0])
        return repeated

    def _shared_held(self, key: object, device: str) -> bool:
        """Whether a resident or loading slot already holds these weights; `lock` held."""
        return any(s.shared and s.shared[0] == key and s.held_on(device)
                   for s in self._slots.values())

    def _make_room(self, entry: ModelEntry, slot: ModelSlot, backend: Backend) -> None:
        """Reserve the model's estimate in the budget, evicting idle models LRU-first.

        Either the reservation succeeds, or nothing is evicted and the refusal gives the
        numbers.
        """
        with self.lock:
            known = slot.estimate
        # Reading a GGUF header takes seconds; the entry's file does not change while we run.
        estimate = known if known is not None else backend.memory_estimate()
        device = backend.memory_device()
        shared = backend.shared_weights()
        with self._plan_lock:
            with self.lock:
                slot.estimate, slot.shared = estimate, shared
                if shared and self._shared_held(shared[0], device):
                    estimate -= shared[1]  # the base is in memory already: not again
                    keep = {mid for mid, s in self._slots.items()
                            if s.shared and s.shared[0] == shared[0]}
                else:
                    keep = set()
            room = self.room(device)
            # Evicting an entry that holds the shared base would not free it for this load.
            room = Room(room.device, room.limit, room.free,
                        tuple(item for item in room.idle if item[0] not in keep))
            if estimate > room.free + room.evictable:
                raise BackendError(
                    f"needs {format_bytes(estimate)}, {format_bytes(max(room.free, 0))} free "
                    f"of a {format_bytes(room.limit)} budget on {device}"
                    + ("" if estimate <= room.limit else "; raise --max-memory to load it"))
            if device == "cpu":
                with self.lock:
                    loans = self._loans()
                if estimate > room.free - loans:
                    self._reclaim(estimate - (room.free - loans))
            free = room.free
            for victim_id, victim_bytes in room.idle:
                if estimate <= free:
                    break
                log.info("evicting %s to make room for %s", victim_id, entry.id)
                self.evict(victim_id)
                free += victim_bytes
            with self.lock:
                slot.device, slot.loading, slot.progress = device, True, (0.0, "waiting to load")

    # -- unloading ---------------------------------------------------------------------
    def unload(self, model_id: str) -> bool:
        """Free a resident model; False if it was not resident. Refused while it answers."""
        with self.lock:
            slot = self._slots.get(model_id)
            if slot is not None and slot.in_use:
                raise ModelBusy(f"{model_id} is answering a request; stop it first")
        return self.evict(model_id)

    def evict(self, model_id: str) -> bool:
        with self.lock:
            slot = self._slots.get(model_id)
            backend = slot.backend if slot is not None else None
            if backend is None:
                return False
            slot.backend, slot.stale, slot.cache_loan = None, False, 0
        loaded = process_rss_bytes()
        backend.unload()
        del backend
        gc.collect()
        release_freed_memory()
        report = MemoryReport(model_id, slot.rss_before, slot.measured, loaded,
                              process_rss_bytes())
        with self.lock:
            slot.memory_report = report
        if not report.returned:
            log.warning("unloading %s kept %s of process memory", model_id,
                        format_bytes(report.retained))
        return True

    def unload_if_stale(self, model_id: str) -> None:
        with self.lock:
            slot = self._slots.get(model_id)
            if slot is None or not slot.stale or slot.in_use:
                return
        log.info("unloading %s: its entry changed", model_id)
        self.evict(model_id)

    def forget(self, model_id: str) -> None:
        """Its entry changed: estimate, failure and template checks no longer hold; unload
        it when idle."""
        with self.lock:
            slot = self._slots.get(model_id)
            if slot is None:
                return
            slot.estimate, slot.failure, slot.warnings = None, None, []
            slot.stale = slot.resident
        self.unload_if_stale(model_id)

    def unload_all(self) -> None:
        with self.lock:
            ids = [mid for mid, slot in self._slots.items() if slot.resident]
        for model_id in ids:
            self.evict(model_id)

    def memory_summary(self, texts: Texts) -> str:
        """One line per budgeted device: what the resident models take of the budget."""
        with self.lock:
            used = {slot.device: self._held_on(slot.device, resident_only=True)
                    for slot in self._slots.values() if slot.resident}
        devices = sorted(set(self.budget.limits) | set(used))
        return " · ".join(texts("models.memory.budget", device=d,
                                used=format_bytes(used.get(d, 0)),
                                limit=format_bytes(self.budget.limit(d, used.get(d, 0))))
                          for d in devices)
