"""The model manager: the only owner of backend instances, and the one way to run a reply.

It composes the jobs a model needs: residency (load within the memory budget, evict the
least recently used idle models, unload: chatcore/generation/residency.py), scheduling (one worker per
reply, a fair line per model, the CPU share: chatcore/generation/scheduler.py), and the status
read-model over each model's slot (chatcore/generation/slots.py). Every consumer (page, Compare, API,
CLI, bench) starts replies with `start` and reads the `LiveReply` it gets back.
"""
from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from backends.base import Backend, BackendError, GenParams, Message, ProgressCallback, PromptReport
from backends.chat_template import NAMED_TEMPLATES, fallback_warning
from backends.cuda import empty_cache
from backends.lora import AdapterError, read_adapter
from chatcore.generation.registry import ModelEntry, ModelRegistry
from chatcore.generation.context import fit_context, ground, with_system
from chatcore.generation.cpu_share import CpuShare
from chatcore.generation.factory import engine_class
from chatcore.i18n import Texts
from chatcore.generation.memory import MemoryBudget, process_rss_bytes, release_freed_memory
from chatcore.generation.replies import Measured, Replies, ReplyRequest
from chatcore.generation.residency import BackendFactory, Residency, Room
from chatcore.generation.scheduler import Scheduler
from chatcore.generation.slots import (
    MemoryReport,
    ModelBusy,
    ModelState,
    ModelStatus,
    ModelUnavailable,
    UnknownModel,
    status_of,
)
from chatcore.generation.weights import ModelNotAvailable, resolve_weights

__all__ = ["ContextMeter", "ModelBusy", "ModelManager", "ModelState", "ModelStatus",
           "ModelUnavailable", "Room", "UnknownModel"]


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


class ModelManager:
    def __init__(self, registry: ModelRegistry, backend_factory: BackendFactory,
                 budget: MemoryBudget | None = None, allow_download: bool = False,
                 cpu: CpuShare | None = None,
                 weights_check: Callable[[Path], str | None] | None = None) -> None:
        """`weights_check(path)` reads a weights file's header and returns what is wrong
        with it (None when it looks loadable), so states are truthful before a load."""
        self.registry = registry
        self._weights_check = weights_check
        self._allow_download = allow_download
        self._residency = Residency(budget or MemoryBudget.parse(None), backend_factory)
        self._scheduler = Scheduler(self._residency, self.entry, cpu or CpuShare())

    @property
    def budget(self) -> MemoryBudget:
        return self._residency.budget

    @property
    def cpu(self) -> CpuShare:
        return self._scheduler.cpu

    # -- replies -----------------------------------------------------------------------
    def start(self, requests: Sequence[ReplyRequest | tuple[str, Sequence[Message], GenParams]],
              cancel: threading.Event,
              loop: asyncio.AbstractEventLoop | None = None) -> Replies:
        """Start replies to (model id, messages, params) requests, one worker each, now.

        Read the `Replies` as (request index, event) pairs, with `for` or, given `loop`,
        `async for`; `replies.live[index]` follows each reply. A failed request yields its
        error (BackendError or ModelUnavailable) as its last event and the others go on;
        `cancel` stops them all, and closing the replies cancels and joins the workers.
        """
        return self._scheduler.start(requests, cancel, loop)

    def measure_with(self, listener: Callable[[Measured], None] | None) -> None:
        """Tell `listener` how long the engine worked on each finished reply, whoever asked
        for it (page, Compare, API, Evaluate): what a token costs is computed from these."""
        self._scheduler.on_measured = listener

    def wait_quiet(self, cancel: threading.Event) -> bool:
        """Block until no person's reply is running or waiting (False if cancelled first):
        background work (an evaluation run) calls this before each of its replies."""
        return self._scheduler.wait_quiet(cancel)

    # -- status ------------------------------------------------------------------------
    def entry(self, model_id: str) -> ModelEntry:
        entry = self.registry.get(model_id)
        if entry is None:
            broken = self.registry.broken_entry(model_id)
            if broken is not None:
                raise ModelUnavailable(broken.reason)
            raise UnknownModel(model_id, self.registry.ids)
        return entry

    def statuses(self) -> list[ModelStatus]:
        """Every declared model in file order, broken entries last."""
        found = [self.status(e.id) for e in self.registry.entries]
        found += [ModelStatus(b.id, b.name, "?", ModelState.INVALID, b.reason)
                  for b in self.registry.broken]
        return found

    def status(self, model_id: str) -> ModelStatus:
        entry = self.entry(model_id)
        residency = self._residency
        with residency.lock:
            slot = residency.peek(model_id)
            known = status_of(entry.id, entry.name, entry.backend, slot)
            common = dict(id=entry.id, name=entry.name, backend=entry.backend,
                          estimated_bytes=slot.estimate if slot else None,
                          queued=len(slot.line) if slot else 0)
        if known is not None:
            return known
        state, reason = self._state_on_disk(entry)
        return ModelStatus(state=state, reason=reason, **common)

    def _state_on_disk(self, entry: ModelEntry) -> tuple[ModelState, str]:
        if entry.is_remote:
            return ModelState.AVAILABLE, ""
        try:
            weights = resolve_weights(entry, allow_download=False)
        except ModelNotAvailable as exc:
            if not exc.not_downloaded:
                return ModelState.FAILED, exc.reason
            if not self._allow_download:
                return ModelState.NOT_DOWNLOADED, exc.reason
            return ModelState.AVAILABLE, ""
        problem = self._weights_check(weights) if self._weights_check else None
        if problem:
            return ModelState.UNREADABLE, problem
        for adapter in entry.adapters:  # a missing or cut adapter, like a model file
            try:
                read_adapter(Path(adapter.path))
            except AdapterError as exc:
                return ModelState.UNREADABLE, str(exc)
        return ModelState.AVAILABLE, ""

    def engine(self, model_id: str) -> type[Backend]:
        """The class that runs (or would run) the model: its capability flags say what a
        reply with it can do, before it is loaded."""
        backend = self._residency.backend(model_id)
        return type(backend) if backend is not None else engine_class(self.entry(model_id))

    def placement(self, model_id: str) -> str:
        """Where a loaded model's weights ended up ("cpu", "cuda:0, cpu"), or ""."""
        backend = self._residency.backend(model_id)
        return backend.placement if backend is not None else ""

    def runtime_notes(self, model_id: str) -> list[str]:
        """How a loaded model runs (weight buffers, parallel slots, KV cache), or []."""
        backend = self._residency.backend(model_id)
        return backend.runtime_notes if backend is not None else []

    def template_warnings(self, model_id: str) -> list[str]:
        """What the last load's check found wrong with the chat template; before a load,
        a named fallback in the entry (its file carries no template, as a scan reads)."""
        with self._residency.lock:
            slot = self._residency.peek(model_id)
            if slot and slot.warnings:
                return list(slot.warnings)
        entry = self.registry.get(model_id)
        if entry is not None and entry.chat_template in NAMED_TEMPLATES:
            return [fallback_warning(entry.chat_template)]
        return []

    def memory_report(self, model_id: str) -> MemoryReport | None:
        """Memory around this model's last unload, if it was unloaded."""
        with self._residency.lock:
            slot = self._residency.peek(model_id)
            return slot.memory_report if slot else None

    def memory_summary(self, texts: Texts) -> str:
        return self._residency.memory_summary(texts)

    # -- residency ---------------------------------------------------------------------
    def load(self, model_id: str, progress: ProgressCallback | None = None) -> Backend:
        """The resident backend for `model_id`, loading it (and making room) first if needed."""
        return self._residency.load(self.entry(model_id), progress)

    def room(self, device: str) -> Room:
        return self._residency.room(device)

    def plan(self, model_id: str) -> tuple[int, str]:
        """Bytes a load of `model_id` would reserve and the device, without loading it.
        Raises ModelUnavailable when its weights are not here or cannot be read."""
        entry = self.entry(model_id)
        try:
            return self._residency.plan(entry)
        except (ModelNotAvailable, BackendError) as exc:
            raise ModelUnavailable(f"{entry.name}: {exc}") from exc

    def shared_weights(self, model_id: str) -> tuple[object, int] | None:
        """(key, bytes) of base weights the model shares with other entries (an entry and
        the same base with adapters), which a plan counts once; None if its own or unknown."""
        try:
            return self._residency.shared_of(self.entry(model_id))
        except (ModelNotAvailable, BackendError):
            return None

    def resident(self) -> list[str]:
        """Ids of the models in memory now (loaded, not loading)."""
        return [e.id for e in self.registry.entries if self._residency.backend(e.id)]

    def unload(self, model_id: str) -> bool:
        """Free a resident model; False if it was not resident. Refused while it answers."""
        self.entry(model_id)
        return self._residency.unload(model_id)

    def unload_all(self) -> None:
        self._residency.unload_all()

    def release_memory(self) -> int:
        """Collect garbage and hand freed pages back to the system; returns process bytes.
        Every unload does this already; the Models tab offers it again as a button."""
        gc.collect()
        release_freed_memory()
        empty_cache()
        return process_rss_bytes()

    def replace_registry(self, registry: ModelRegistry) -> list[str]:
        """Swap in an edited registry; returns the ids whose entry changed or went away.

        New entries are usable at once. A resident model whose entry changed is unloaded
        now if idle, or when its reply ends, so the edit applies to its next load and never
        disturbs a reply in progress.
        """
        old, self.registry = self.registry, registry
        changed = [e.id for e in old.entries if registry.get(e.id) != e]
        for model_id in changed:
            self._residency.forget(model_id)
        return changed

    # -- what a model sees -------------------------------------------------------------
    def inspect(self, model_id: str, messages: Sequence[Message], params: GenParams,
                grounding=None) -> tuple[PromptReport, int]:
        """The prompt a reply to `messages` (and its attachments' `grounding`) is, or was,
        given, and how many messages were left out to fit; the model must be resident."""
        backend = self._resident_backend(model_id)
        context = self.entry(model_id).context_length
        messages, _ = ground(messages, grounding, backend.count_tokens, context,
                             params.sampling.max_new_tokens)
        fitted, dropped = fit_context(messages, backend.count_tokens, context,
                                      params.sampling.max_new_tokens)
        return backend.prompt_report(fitted, params), dropped

    def context_meter(self, model_id: str, system: str, history: Sequence[Message],
                      draft: str, max_new_tokens: int) -> ContextMeter:
        backend = self._resident_backend(model_id)
        context = self.entry(model_id).context_length
        head = with_system(system, [])
        count = backend.count_tokens
        # The fixed part is the prompt of an empty question: the system prompt, or the one
        # the template adds by itself when there is none, and the template's framing; the
        # draft is what its text adds, and the history the rest.
        fixed = count(head + [Message("user", "")])
        alone = count(head + [Message("user", draft)])
        messages = head + list(history) + [Message("user", draft)]
        full = count(messages) if history else alone
        try:
            _, dropped = fit_context(messages, count, context, max_new_tokens)
        except BackendError:
            dropped = len(history)
        return ContextMeter(fixed, full - alone, alone - fixed,
                            context - min(max_new_tokens, context // 2), dropped)

    def _resident_backend(self, model_id: str) -> Backend:
        self.entry(model_id)
        backend = self._residency.backend(model_id)
        if backend is None:
            raise ModelUnavailable(f"{model_id} is not loaded: send a message first")
        return backend
