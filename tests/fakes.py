"""A scripted backend for manager and page logic; never proof that an engine works."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from backends.base import Backend, BackendError, Chunk, GenParams, Message, Usage


class ScriptedBackend(Backend):
    """Yields the words of `reply` one by one, `delay` seconds apart."""

    can_continue = True  # it stands in for a local engine

    def __init__(self, reply: str = "one two three four five", delay: float = 0.0,
                 fail_at: int | None = None, fail_load: str | None = None,
                 memory: int = 0) -> None:
        self.words = reply.split()
        self.delay = delay
        self.fail_at = fail_at
        self.fail_load = fail_load
        self.memory = memory
        self.produced = 0
        self.loaded = False
        self.loads = 0

    def load(self, progress=None) -> None:
        if progress is not None:
            progress(0.5, "reading")
        if self.fail_load:
            raise BackendError(self.fail_load)
        self.loaded = True
        self.loads += 1

    def unload(self) -> None:
        self.loaded = False

    def stream_chat(self, messages: Sequence[Message], params: GenParams,
                    cancel: threading.Event) -> Iterator[Chunk]:
        finish = "stop"
        count = 0
        for index, word in enumerate(self.words):
            if cancel.is_set():
                finish = "cancelled"
                break
            if index == self.fail_at:
                raise BackendError(f"scripted failure at word {index}")
            time.sleep(self.delay)
            self.produced += 1
            count += 1
            yield Chunk(("" if index == 0 else " ") + word)
        yield Chunk("", finish_reason=finish, usage=Usage(len(messages), count))

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return sum(len(m.content.split()) for m in messages)

    def memory_estimate(self) -> int:
        return self.memory


def reply_chunks(manager, model_id: str, messages: Sequence[Message], params: GenParams,
                 cancel: threading.Event | None = None) -> Iterator[Chunk]:
    """One reply's chunks through `manager.start`, the way every entry point runs replies;
    its error is raised. Closing the generator early cancels the reply and joins it."""
    with manager.start([(model_id, messages, params)], cancel or threading.Event()) as replies:
        for _, event in replies:
            if isinstance(event, Exception):
                raise event
            if isinstance(event, Chunk):
                yield event


def reply_events(manager, model_id: str, messages: Sequence[Message], params: GenParams,
                 cancel: threading.Event | None = None) -> Iterator[object]:
    """Like `reply_chunks`, with the loading, waiting and trimming events too."""
    with manager.start([(model_id, messages, params)], cancel or threading.Event()) as replies:
        for _, event in replies:
            if isinstance(event, Exception):
                raise event
            yield event


def one_model_manager(backend: Backend, context_length: int = 256):
    """A manager whose only entry, "fake", is `backend` (for service and UI logic)."""
    from chatcore.generation.manager import ModelManager
    from chatcore.generation.registry import ModelEntry, ModelRegistry
    from tests.conftest import SHIPPED_MODELS

    entry = ModelEntry(id="fake", name="Fake", backend="llamacpp", path=__file__,
                       context_length=context_length)
    return ModelManager(ModelRegistry(path=SHIPPED_MODELS, entries=(entry,), broken=()),
                        lambda _: backend)
