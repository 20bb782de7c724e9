"""Running replies: one worker per reply, a fair line per model, the CPU shared between
replies that decode on this machine's cores.

A model's engine answers as many replies at once as it has parallel slots (llama.cpp batches
them; most engines have one), or all of them when it schedules requests itself (a remote
server): the others wait in the model's line and are told their place. A reply holds its
model (it is not evicted) from the moment it asks until its last chunk. Background replies
(an evaluation run's) wait until no person's reply is running or waiting, so the run yields
between its replies.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace

from backends.base import Backend, BackendError, Chunk, GenParams, Message
from chatcore.generation.registry import ModelEntry
from chatcore.generation.context import fit_context, ground
from chatcore.generation.cpu_share import CpuShare
from chatcore.generation.replies import (
    Grounded,
    LiveReply,
    Loading,
    Measured,
    Replies,
    ReplyRequest,
    Trimmed,
    Unhonoured,
    Waiting,
)
from chatcore.generation.residency import Residency
from chatcore.generation.slots import ModelSlot, ModelUnavailable

log = logging.getLogger(__name__)

WAIT_POLL_S = 0.1


class Scheduler:
    def __init__(self, residency: Residency, entry_of: Callable[[str], ModelEntry],
                 cpu: CpuShare) -> None:
        self._residency = residency
        self._entry_of = entry_of
        self.cpu = cpu
        self._people = 0  # replies a person asked for, running or waiting
        self._quiet = threading.Condition()
        # Told how long each finished reply's engine worked (ModelManager.measure_with).
        self.on_measured: Callable[[Measured], None] | None = None

    def wait_quiet(self, cancel: threading.Event) -> bool:
        """Block until no person's reply is running or waiting; False if `cancel` is set
        first. Background work calls this between its replies."""
        with self._quiet:
            while self._people:
                if cancel.is_set():
                    return False
                self._quiet.wait(WAIT_POLL_S)
        return not cancel.is_set()

    def start(self, requests: Sequence[ReplyRequest | tuple], cancel: threading.Event,
              loop: asyncio.AbstractEventLoop | None = None) -> Replies:
        """Start every reply now, before anyone reads: a page can show its placeholder while
        the model already works. `cancel` stops them all; `loop` makes the replies readable
        with `async for` on that event loop."""
        requests = [ReplyRequest(*request) for request in requests]
        for request in requests:
            self._entry_of(request.model_id)  # an unknown id fails here, in the caller
        replies = Replies([LiveReply(r.model_id, r.params) for r in requests], cancel, loop)
        with self._quiet:
            self._people += sum(not r.background for r in requests)

        def target(index: int, request: ReplyRequest) -> Callable[[], None]:
            return lambda: self._serve(request, cancel, replies, index)

        return replies.run([target(i, r) for i, r in enumerate(requests)],
                           [f"generate-{r.model_id}" for r in requests])

    def _serve(self, request: ReplyRequest, cancel: threading.Event, replies: Replies,
               index: int) -> None:
        model_id, params = request.model_id, replace(request.params, owner=request.user)
        emit = lambda item: replies.emit(index, item)  # noqa: E731
        residency = self._residency
        with residency.lock:
            slot = residency.slot(model_id)
            slot.in_use += 1  # a model someone waits for is not evicted
        ticket = None
        try:
            if request.background and not self.wait_quiet(cancel):
                emit(Chunk("", finish_reason="cancelled"))
                return
            entry = self._entry_of(model_id)
            backend = residency.load(entry, lambda f, step: emit(Loading(f, step)))
            messages, selection = ground(request.messages, request.grounding,
                                         backend.count_tokens, entry.context_length,
                                         params.sampling.max_new_tokens)
            if selection is not None:
                emit(Grounded(selection.sources()))
            messages, dropped = fit_context(messages, backend.count_tokens,
                                            entry.context_length, params.sampling.max_new_tokens)
            if dropped:
                emit(Trimmed(dropped))
            if unhonoured := backend.unhonoured(params):
                emit(Unhonoured(tuple(unhonoured)))
            ticket = None if backend.concurrent else slot.line.join()
            ahead, holders = None, backend.parallel
            while ticket is not None and not slot.line.wait_turn(ticket, WAIT_POLL_S, holders):
                if cancel.is_set():
                    emit(Chunk("", finish_reason="cancelled"))
                    return
                if (position := slot.line.position(ticket, holders)) != ahead:
                    ahead = position
                    emit(Waiting(position))
            self._generate(model_id, slot, backend, messages, params, cancel, emit)
        except (BackendError, ModelUnavailable) as exc:  # ContextOverflow among them
            emit(exc)
        except Exception as exc:  # noqa: BLE001 - shown to the person, logged in full
            log.exception("generation with %s failed", model_id)
            emit(BackendError(f"{model_id} failed while generating: {exc}"))
        finally:
            if ticket is not None:
                slot.line.leave(ticket)
            residency.mark_used(model_id)
            with residency.lock:
                slot.in_use -= 1
            residency.unload_if_stale(model_id)
            if not request.background:
                with self._quiet:
                    self._people -= 1
                    self._quiet.notify_all()
            replies.finish(index)

    def _generate(self, model_id: str, slot: ModelSlot, backend: Backend,
                  messages: Sequence[Message], params: GenParams, cancel: threading.Event,
                  emit: Callable[[object], None]) -> None:
        with self._residency.lock:
            slot.generating += 1
        # The replies one model batches count once: they decode in one pass of its threads.
        share = self.cpu.share(model_id) if backend.decodes_on_cpu() else nullcontext(None)
        try:
            with share as threads:
                params = replace(params, threads=threads) if threads else params
                last, spent, prompt_spent = time.perf_counter(), 0.0, None
                for chunk in backend.stream_chat(messages, params, cancel):
                    # Replies one model decodes together in a batch share its time: each
                    # is charged its share of every interval, not the whole of it.
                    now = time.perf_counter()
                    spent += (now - last) / max(1, slot.generating)
                    last = now
                    if prompt_spent is None and (chunk.text or chunk.thought):
                        prompt_spent = spent
                    if chunk.finish_reason is not None and prompt_spent is not None:
                        self._measured(model_id, backend, chunk, prompt_spent,
                                       spent - prompt_spent)
                    emit(chunk)
        finally:
            with self._residency.lock:
                slot.generating -= 1

    def _measured(self, model_id: str, backend: Backend, last: Chunk, prompt_seconds: float,
                  decode_seconds: float) -> None:
        """Tell the listener (before the last chunk goes out, so a footer can read it) how
        long the engine took for the prompt and for the output after the first token."""
        usage = last.usage
        if self.on_measured is None or usage is None or usage.completion_tokens < 2:
            return
        entry = self._entry_of(model_id)
        device = "remote" if entry.is_remote else (backend.placement or "cpu")
        # Tokens taken from a saved state were not read again: they took no time.
        read = max(usage.prompt_tokens - usage.cached_tokens, 0)
        try:
            self.on_measured(Measured(model_id, entry.backend, device, read, prompt_seconds,
                                      usage.completion_tokens - 1, decode_seconds))
        except Exception:  # noqa: BLE001 - a figure lost never fails the reply
            log.exception("recording the time of a reply of %s failed", model_id)
