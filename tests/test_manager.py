"""The manager: worker threads that end with their request, stop signals, failed loads."""
from __future__ import annotations

import threading
import time

import pytest

from backends.base import BackendError, GenParams, Message
from chatcore.config import ModelEntry, ModelRegistry
from chatcore.factory import make_backend
from chatcore.manager import ModelManager, ModelState, ModelUnavailable, UnknownModel
from tests.conftest import SHIPPED_MODELS, generation_threads
from tests.fakes import ScriptedBackend

HELLO = [Message("user", "hello")]


def registry_of(*ids: str) -> ModelRegistry:
    entries = tuple(ModelEntry(id=i, backend="llamacpp", path=__file__) for i in ids)
    return ModelRegistry(path=SHIPPED_MODELS, entries=entries, broken=())


def manager_with(backends: dict[str, ScriptedBackend]) -> ModelManager:
    return ModelManager(registry_of(*backends), lambda entry: backends[entry.id])


def test_early_close_cancels_and_joins_the_worker():
    backend = ScriptedBackend(" ".join(["word"] * 200), delay=0.01)
    manager = manager_with({"m": backend})
    cancel = threading.Event()
    stream = manager.stream_chat("m", HELLO, GenParams(), cancel)
    next(stream)
    stream.close()  # what a disconnecting client does
    assert cancel.is_set()
    assert generation_threads() == []
    assert backend.produced < 10


def test_cancel_by_session_key_stops_only_that_session():
    manager = manager_with({"a": ScriptedBackend("x " * 100, delay=0.01),
                            "b": ScriptedBackend("y " * 20, delay=0.01)})
    event_a = manager.begin_generation("session-a")
    event_b = manager.begin_generation("session-b")
    stream_a = manager.stream_chat("a", HELLO, GenParams(), event_a)
    next(stream_a)
    assert manager.cancel("session-a") is True
    last_a = list(stream_a)[-1]
    last_b = list(manager.stream_chat("b", HELLO, GenParams(), event_b))[-1]
    assert last_a.finish_reason == "cancelled"
    assert last_b.finish_reason == "stop" and last_b.usage.completion_tokens == 20
    assert manager.cancel("nobody") is False


def test_backend_error_reaches_the_consumer_and_the_next_request_works():
    backend = ScriptedBackend("a b c d", fail_at=2)
    manager = manager_with({"m": backend})
    with pytest.raises(BackendError, match="scripted failure at word 2"):
        list(manager.stream_chat("m", HELLO, GenParams(), threading.Event()))
    assert generation_threads() == []
    backend.fail_at = None
    assert list(manager.stream_chat("m", HELLO, GenParams(), threading.Event()))[-1].finish_reason == "stop"


def test_one_generation_at_a_time_per_model():
    backend = ScriptedBackend("a b c d e", delay=0.02)
    manager = manager_with({"m": backend})
    spans: list[tuple[float, float]] = []

    def run() -> None:
        stream = manager.stream_chat("m", HELLO, GenParams(), threading.Event())
        first = None
        for chunk in stream:
            first = first or time.perf_counter()
        spans.append((first, time.perf_counter()))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (s1, e1), (s2, e2) = sorted(spans)
    assert s2 >= e1 - 0.01, "two generations overlapped on one model"


def test_a_failed_load_marks_the_model_and_leaves_others_working():
    manager = manager_with({"bad": ScriptedBackend(fail_load="truncated file"),
                            "good": ScriptedBackend("fine")})
    with pytest.raises(ModelUnavailable, match="truncated file"):
        list(manager.stream_chat("bad", HELLO, GenParams(), threading.Event()))
    assert manager.status("bad").state == ModelState.FAILED
    assert manager.status("bad").reason == "truncated file"
    text = "".join(c.text for c in manager.stream_chat("good", HELLO, GenParams(), threading.Event()))
    assert text == "fine"
    assert manager.status("good").state == ModelState.RESIDENT


def test_unknown_model_lists_the_known_ids():
    manager = manager_with({"a": ScriptedBackend()})
    with pytest.raises(UnknownModel, match="unknown model id 'zz'; known ids: a"):
        manager.entry("zz")


def test_real_model_stops_through_the_manager(smollm2_path):
    """Stop on the real engine: the reply ends within a few tokens and no worker is left."""
    from chatcore.config import load_registry

    registry = load_registry(SHIPPED_MODELS)
    manager = ModelManager(registry, make_backend)
    cancel = threading.Event()
    story = [Message("user", "Write a long story about a dragon who learns to cook.")]
    stream = manager.stream_chat("smollm2-135m", story,
                                 GenParams(temperature=0.0, max_new_tokens=400), cancel)
    received = [next(stream) for _ in range(3)]
    cancel.set()
    rest = list(stream)
    assert rest[-1].finish_reason == "cancelled"
    # The worker runs ahead of the reader by the chunks already queued, never more.
    assert rest[-1].usage.completion_tokens <= len(received) + len(rest) + 1
    assert rest[-1].usage.completion_tokens < 40
    assert generation_threads() == []
    manager.unload_all()


def test_shipped_registry_statuses(smollm2_path):
    from chatcore.config import load_registry

    manager = ModelManager(load_registry(SHIPPED_MODELS), make_backend)
    states = {s.id: s for s in manager.statuses()}
    assert states["smollm2-135m"].state == ModelState.AVAILABLE
    llama = states["llama-3.1-8b-instruct-q4"]
    assert llama.state == ModelState.NOT_DOWNLOADED
    assert "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf" in llama.reason
    with pytest.raises(ModelUnavailable, match="not downloaded"):
        manager.load("llama-3.1-8b-instruct-q4")
    assert manager.status("llama-3.1-8b-instruct-q4").state == ModelState.NOT_DOWNLOADED
