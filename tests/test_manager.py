"""The manager: worker threads that end with their request, stop signals, failed loads."""
from __future__ import annotations

import threading

import pytest

from backends.base import BackendError, Chunk, GenParams, Message
from chatcore.generation.registry import ModelEntry, ModelRegistry
from chatcore.generation.factory import make_backend
from chatcore.generation.manager import ModelManager, ModelState, ModelUnavailable, UnknownModel
from chatcore.generation.replies import Waiting
from tests.conftest import SAFETY_S, SHIPPED_MODELS, generation_threads
from chatui.stop_registry import StopRegistry
from tests.fakes import ScriptedBackend, reply_chunks, reply_events
from tests.helpers import greedy

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
    stream = reply_chunks(manager, "m", HELLO, GenParams(), cancel)
    next(stream)
    stream.close()  # what a disconnecting client does
    assert cancel.is_set()
    assert generation_threads() == []
    assert backend.produced < 10


def test_cancel_by_session_key_stops_only_that_session():
    manager = manager_with({"a": ScriptedBackend("x " * 100, delay=0.01),
                            "b": ScriptedBackend("y " * 20, delay=0.01)})
    stops = StopRegistry()  # the page's: Stop in one tab ends that tab's reply
    event_a = stops.begin("session-a")
    event_b = stops.begin("session-b")
    stream_a = reply_chunks(manager, "a", HELLO, GenParams(), event_a)
    next(stream_a)
    assert stops.stop("session-a") is True
    last_a = list(stream_a)[-1]
    last_b = list(reply_chunks(manager, "b", HELLO, GenParams(), event_b))[-1]
    assert last_a.finish_reason == "cancelled"
    assert last_b.finish_reason == "stop" and last_b.usage.completion_tokens == 20
    assert stops.stop("nobody") is False
    replaced = stops.begin("session-b")  # a new reply in the same tab stops the old one
    assert event_b.is_set() and not replaced.is_set()
    stops.end("session-b", event_b)  # the old reply ending does not forget the new one
    assert stops.stop("session-b") is True and replaced.is_set()


def test_backend_error_reaches_the_consumer_and_the_next_request_works():
    backend = ScriptedBackend("a b c d", fail_at=2)
    manager = manager_with({"m": backend})
    with pytest.raises(BackendError, match="scripted failure at word 2"):
        list(reply_chunks(manager, "m", HELLO, GenParams(), threading.Event()))
    assert generation_threads() == []
    backend.fail_at = None
    assert list(reply_chunks(manager, "m", HELLO, GenParams(), threading.Event()))[-1].finish_reason == "stop"


def test_one_generation_at_a_time_per_model():
    """The first reply holds the model until the second request waits in line: had the
    manager let the second in instead, the backend would count two calls at once."""
    backend = ScriptedBackend("a b c d e")
    manager = manager_with({"m": backend})
    original = backend.stream_chat
    lock = threading.Lock()
    calls = {"now": 0, "most": 0}
    entered, release = threading.Event(), threading.Event()

    def counting(messages, params, cancel):
        with lock:
            calls["now"] += 1
            calls["most"] = max(calls["most"], calls["now"])
            if calls["now"] > 1:
                release.set()
        entered.set()
        try:
            if messages[-1].content == "first":
                release.wait(SAFETY_S)  # until the second request waits, or got in too
            yield from original(messages, params, cancel)
        finally:
            with lock:
                calls["now"] -= 1
    backend.stream_chat = counting

    replies: dict[str, str] = {}
    told_to_wait: list[str] = []

    def run(text: str) -> None:
        chunks = []
        for event in reply_events(manager, "m", [Message("user", text)], GenParams(),
                                           threading.Event()):
            if isinstance(event, Waiting):
                told_to_wait.append(text)
                release.set()
            elif isinstance(event, Chunk):
                chunks.append(event.text)
        replies[text] = "".join(chunks)

    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert entered.wait(SAFETY_S), "the first reply never reached the backend"
    second = threading.Thread(target=run, args=("second",))
    second.start()
    for thread in (first, second):
        thread.join()
    assert calls["most"] == 1, "two generations ran on one model at once"
    assert told_to_wait == ["second"]
    assert replies == {"first": "a b c d e", "second": "a b c d e"}


def test_a_failed_load_marks_the_model_and_leaves_others_working():
    manager = manager_with({"bad": ScriptedBackend(fail_load="truncated file"),
                            "good": ScriptedBackend("fine")})
    with pytest.raises(ModelUnavailable, match="truncated file"):
        list(reply_chunks(manager, "bad", HELLO, GenParams(), threading.Event()))
    assert manager.status("bad").state == ModelState.FAILED
    assert manager.status("bad").reason == "truncated file"
    text = "".join(c.text for c in reply_chunks(manager, "good", HELLO, GenParams(), threading.Event()))
    assert text == "fine"
    assert manager.status("good").state == ModelState.RESIDENT


def test_unknown_model_lists_the_known_ids():
    manager = manager_with({"a": ScriptedBackend()})
    with pytest.raises(UnknownModel, match="unknown model id 'zz'; known ids: a"):
        manager.entry("zz")


@pytest.mark.slow
def test_real_model_stops_through_the_manager(smollm2_path):
    """Stop on the real engine: the reply ends within a few tokens and no worker is left."""
    from chatcore.generation.registry import load_registry

    registry = load_registry(SHIPPED_MODELS)
    manager = ModelManager(registry, make_backend)
    cancel = threading.Event()
    story = [Message("user", "Write a long story about a dragon who learns to cook.")]
    stream = reply_chunks(manager, "smollm2-135m", story,
                                 greedy(400), cancel)
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
    from chatcore.generation.registry import load_registry

    manager = ModelManager(load_registry(SHIPPED_MODELS), make_backend)
    states = {s.id: s for s in manager.statuses()}
    assert states["smollm2-135m"].state == ModelState.AVAILABLE
    llama = states["llama-3.1-8b-instruct-q4"]
    assert llama.state == ModelState.NOT_DOWNLOADED
    assert "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf" in llama.reason
    with pytest.raises(ModelUnavailable, match="not downloaded"):
        manager.load("llama-3.1-8b-instruct-q4")
    assert manager.status("llama-3.1-8b-instruct-q4").state == ModelState.NOT_DOWNLOADED
