"""One record per model: everything the manager knows about it, in one place.

A model's state (loading, resident, answering, failed), its backend, estimate, load
progress, template warnings, memory report, waiting line and counts live in its
`ModelSlot`; `status_of` reads a slot into the `ModelStatus` the Models tab and the API
show. Slots are read and written under the manager's lock.
"""
from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field

from backends.base import Backend
from chatcore.generation.fair_queue import FairQueue

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


class UnknownModel(Exception):
    def __init__(self, model_id: str, known: list[str]) -> None:
        super().__init__(f"unknown model id {model_id!r}; known ids: {', '.join(known)}")


class ModelUnavailable(Exception):
    """The model cannot run now; the message says why, for a person."""


class ModelBusy(ModelUnavailable):
    """The model is answering someone and cannot be unloaded now."""


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


@dataclass
class ModelSlot:
    """What the manager knows about one model id."""

    load_lock: threading.Lock = field(default_factory=threading.Lock)  # one load at a time
    line: FairQueue = field(default_factory=FairQueue)  # replies waiting for their turn
    backend: Backend | None = None  # set while resident
    device: str = "cpu"
    estimate: int | None = None  # bytes, known once asked; reserved while loading
    loading: bool = False
    progress: tuple[float, str] | None = None
    failure: str | None = None
    warnings: list[str] = field(default_factory=list)  # chat template checks, kept
    measured: int = 0  # what the load added to the process
    rss_before: int = 0  # process memory just before the load
    load_seconds: float | None = None
    last_used: float | None = None  # wall clock, for people
    used_order: int = 0  # a counter, for least-recently-used order
    memory_report: MemoryReport | None = None  # of the last unload
    in_use: int = 0  # replies that hold or wait for it: it is not evicted
    generating: int = 0
    stale: bool = False  # resident, but its entry changed: unload when idle
    cache_loan: int = 0  # RAM lent to its prompt cache beyond the estimate (prompt_cache.py)
    # (key, bytes) of base weights other entries may share (an entry and its adapters):
    # the budget counts each key once (Backend.shared_weights).
    shared: tuple[object, int] | None = None

    @property
    def resident(self) -> bool:
        return self.backend is not None

    def held_on(self, device: str) -> int:
        """Bytes this slot takes of `device`'s budget, resident or loading."""
        return (self.estimate or 0) if (self.resident or self.loading) and \
            self.device == device else 0

    def forget_plan(self) -> None:
        """After a failed or finished load: no reservation, no progress."""
        self.loading, self.progress = False, None


def status_of(model_id: str, name: str, backend: str, slot: ModelSlot | None) -> ModelStatus | None:
    """The status the slot alone decides (resident, loading, failed); None when it takes a
    look at the weights on disk (available, not downloaded, unreadable)."""
    if slot is None:
        return None
    common = dict(id=model_id, name=name, backend=backend, estimated_bytes=slot.estimate,
                  queued=len(slot.line))
    if slot.resident:
        state = ModelState.GENERATING if slot.generating else ModelState.RESIDENT
        return ModelStatus(state=state, measured_bytes=slot.measured,
                           load_seconds=slot.load_seconds, last_used=slot.last_used, **common)
    if slot.loading:
        return ModelStatus(state=ModelState.LOADING, progress=slot.progress, **common)
    if slot.failure is not None:
        return ModelStatus(state=ModelState.FAILED, reason=slot.failure, **common)
    return None
