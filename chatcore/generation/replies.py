"""Replies being computed, and one live record per reply that every consumer reads.

The page, Compare, the API, the CLI and the bench all start replies with
`ModelManager.start` and read the same `LiveReply`: the text so far, the figures for the
footer, the notes a person should see (loading, place in line, history left out, settings
the engine cannot apply), and at the end the message the store keeps. A reply is told
apart by the index of its request.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from backends.base import Chunk, GenParams, Message
from chatcore.i18n import Texts
from chatcore.generation.reply_timing import ReplyMeter
from chatcore.documents.passages import sources_note


class ReplyRequest(NamedTuple):
    model_id: str
    messages: Sequence[Message]
    params: GenParams
    # A background reply (an evaluation run's) starts only when no person's reply is running
    # or waiting, so a chat or Compare request made during a run is served first.
    background: bool = False
    # Attachments for the last user message (chatcore.conversations.attachments.Grounding): whole, or
    # the passages that fit, once the model's tokenizer can count them.
    grounding: object | None = None
    # Who asks (the signed-in user, "" without sign-in): engines share what they keep of
    # earlier prompts (saved KV caches) only between one owner's requests.
    user: str = ""


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


@dataclass(frozen=True)
class Unhonoured:
    """Settings the model's engine will not apply to this reply, in words."""

    settings: tuple[str, ...]


@dataclass(frozen=True)
class Grounded:
    """What of the attachments the reply was given (passage_index.Selection.sources: JSON,
    shown as "used 6 of 41 passages (pages 3, 4, 9)"); empty when they went in whole."""

    sources: str


StreamEvent = Chunk | Loading | Waiting | Trimmed | Unhonoured | Grounded


@dataclass(frozen=True)
class Measured:
    """How long one finished reply's engine worked, timed around the engine alone (no load,
    no wait in line), for what a token costs (chatcore/costs): the prompt from the start of
    generation to the first token, the output after it; while a model decodes several
    replies in one batch, each is charged its share of the time."""

    model_id: str
    engine: str  # the entry's backend: llamacpp, transformers, openai
    device: str  # where the weights were ("cpu", "cuda:0"), "remote" for a server
    prompt_tokens: int
    prompt_seconds: float
    output_tokens: int  # after the first, as decode speed counts them
    decode_seconds: float


def progress_bar(fraction: float, width: int = 12) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "▰" * filled + "▱" * (width - filled)


def thought_title(seconds: float | None, tokens: int | None, texts: Texts) -> str:
    """"Thought for 3.2 s, 140 tokens": how a folded thought is titled everywhere."""
    parts = [texts("reply.thought_seconds", seconds=texts.number(seconds, 1))] \
        if seconds is not None else []
    if tokens:
        parts.append(texts("reply.thought_tokens", n=tokens))
    return texts("reply.thought_for", details=", ".join(parts)) if parts \
        else texts("reply.thought")


@dataclass
class LiveReply:
    """One reply as it arrives; `apply` each event, read `text` and `footer`; what is kept
    of it is chatcore/conversations/service.py's `stored_reply`."""

    model_id: str
    params: GenParams
    text: str = ""
    error: str = ""
    done: bool = False
    meter: ReplyMeter = field(default_factory=ReplyMeter)
    status: Loading | Waiting | None = None  # what the reply waits for now
    trimmed: int = 0
    unhonoured: tuple[str, ...] = ()
    sources: str = ""  # which passages of the attachments went in (Grounded)
    thought: str = ""  # a thinking model's thought, apart from `text`
    thought_began: float | None = None
    thought_ended: float | None = None

    def apply(self, event: StreamEvent | Exception) -> None:
        if isinstance(event, Exception):
            self.error, self.done = str(event), True
        elif isinstance(event, (Loading, Waiting)):
            self.status = event
        elif isinstance(event, Trimmed):
            self.trimmed = event.dropped
        elif isinstance(event, Unhonoured):
            self.unhonoured = event.settings
        elif isinstance(event, Grounded):
            self.sources = event.sources
        else:
            self.status = None
            self.meter.observe(event)
            now = time.perf_counter()
            if event.thought:
                self.thought_began = self.thought_began or now
                self.thought += event.thought
            if self.thought_began and not self.thought_ended and (
                    event.text or event.finish_reason is not None):
                self.thought_ended = now
            self.text += event.text
            self.done = event.finish_reason is not None

    @property
    def thinking(self) -> bool:
        """The model is in its thought now (it began one and has not answered yet)."""
        return self.thought_began is not None and self.thought_ended is None

    @property
    def thought_seconds(self) -> float | None:
        if self.thought_began is None:
            return None
        return (self.thought_ended or time.perf_counter()) - self.thought_began

    @property
    def thought_tokens(self) -> int | None:
        usage = self.meter.usage
        return usage.reasoning_tokens if usage and self.thought else None

    @property
    def stopped(self) -> bool:
        return self.meter.finish_reason == "cancelled"

    def notes(self, texts: Texts) -> list[str]:
        """What stays true of the reply: history left out, settings not applied."""
        notes = []
        if self.trimmed:
            notes.append(texts("reply.trimmed", n=self.trimmed))
        if self.unhonoured:
            notes.append(texts("reply.unhonoured", settings=", ".join(self.unhonoured)))
        if self.sources:
            notes.append(sources_note(self.sources, texts))
        return notes

    def footer(self, name: str, texts: Texts) -> str:
        """The line under the reply: what it waits for, then its figures and notes."""
        if self.error:
            return ""
        if isinstance(self.status, Loading):
            return texts("reply.loading", model=name, step=self.status.step,
                         bar=progress_bar(self.status.fraction),
                         percent=f"{self.status.fraction:.0%}")
        if isinstance(self.status, Waiting):
            return texts("reply.waiting", model=name, n=self.status.ahead)
        if self.done:
            return " · ".join([self.meter.summary(name, texts), *self.notes(texts)])
        return " · ".join(self.notes(texts))


_DONE = object()
Emit = Callable[[int, object], None]


class Replies:
    """Replies already being computed, one worker thread each; read them as
    (index, event) with `for` or, on an event loop, `async for`. Each event is applied to
    `live[index]` before it is handed out. Close (or leave the `with` block) to cancel what
    is left and join every worker: no token is computed for a reader that is gone."""

    def __init__(self, live: list[LiveReply], cancel: threading.Event,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.live = live
        self.cancel = cancel
        self._loop = loop
        self._events: queue.Queue | asyncio.Queue = asyncio.Queue() if loop else queue.Queue()
        self._news = threading.Event()  # set with the first event any worker emits
        self._workers: list[threading.Thread] = []
        self._running = 0

    def emit(self, index: int, item: object) -> None:
        """Called from the workers: hand one event (or the end of a reply) to the reader."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._events.put_nowait, (index, item))
        else:
            self._events.put((index, item))
        self._news.set()

    def finish(self, index: int) -> None:
        """Called by a worker as its last act: its reply has no more events."""
        self.emit(index, _DONE)

    def run(self, targets: list[Callable[[], None]], names: list[str]) -> Replies:
        """Start one worker per reply (the scheduler's call)."""
        self._workers = [threading.Thread(target=target, name=name, daemon=True)
                         for target, name in zip(targets, names)]
        self._running = len(self._workers)
        for worker in self._workers:
            worker.start()
        return self

    def wait_for_news(self, timeout: float) -> bool:
        """Block until an event is ready to read (True) or `timeout` seconds pass."""
        return self._news.wait(timeout)

    def _take(self, index: int, item: object) -> tuple[int, StreamEvent | Exception] | None:
        if item is _DONE:
            self._running -= 1
            return None
        self.live[index].apply(item)
        return index, item

    # -- reading on a thread ---------------------------------------------------------------
    def __iter__(self) -> Replies:
        return self

    def __next__(self) -> tuple[int, StreamEvent | Exception]:
        while self._running:
            taken = self._take(*self._events.get())
            if taken is not None:
                return taken
        raise StopIteration

    def close(self) -> None:
        self.cancel.set()
        for worker in self._workers:
            worker.join()

    def __enter__(self) -> Replies:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading on an event loop ----------------------------------------------------------
    def __aiter__(self) -> Replies:
        return self

    async def __anext__(self) -> tuple[int, StreamEvent | Exception]:
        while self._running:
            taken = self._take(*await self._events.get())
            if taken is not None:
                return taken
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Cancel, and wait without blocking the loop until every worker has said it is
        done (its last act), so the joins return at once."""
        self.cancel.set()
        while self._running:
            self._take(*await self._events.get())
        for worker in self._workers:
            worker.join()
