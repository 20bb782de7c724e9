"""Page replies that run on their own (chatcore/conversations/running.py): a reply with no
reader runs to its end and is stored once; a reader that joins late gets the text so far
then the rest; Stop works for the same user only; the bounds refuse with a reason. The
scheduling is driven with the scripted backend; one test runs SmolLM2 for real."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import gradio as gr
import pytest

from backends.sampling import SamplingSettings
from chatcore.conversations.running import Refused, RunningReplies
from chatcore.conversations.service import Asking, ConversationService
from chatcore.conversations.store import Store
from chatcore.generation.manager import ModelManager
from chatcore.i18n import load_texts
from chatui.chat_handlers import ChatHandlers
from tests.conftest import SAFETY_S, SHIPPED_MODELS, generation_threads, until
from tests.fakes import one_model_manager, ScriptedBackend

WORDS = " ".join(f"w{i}" for i in range(40))
ALICE_TAB_1 = SimpleNamespace(session_hash="tab-1", username="alice")
ALICE_TAB_2 = SimpleNamespace(session_hash="tab-2", username="alice")
BOB = SimpleNamespace(session_hash="tab-3", username="bob")


class GatedBackend(ScriptedBackend):
    """Says its words one by one, each only when the test lets it (`step`)."""

    def __init__(self, reply: str = WORDS) -> None:
        super().__init__(reply)
        self.gate = threading.Semaphore(0)
        self.cancelled = threading.Event()

    def stream_chat(self, messages, params, cancel):
        for chunk in super().stream_chat(messages, params, cancel):
            if chunk.finish_reason == "cancelled":
                self.cancelled.set()
            yield chunk
            if chunk.finish_reason is None:
                while not self.gate.acquire(timeout=0.01):
                    if cancel.is_set():
                        break

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.gate.release()


@pytest.fixture()
def world(tmp_path):
    backend = GatedBackend()
    manager = one_model_manager(backend, context_length=512)
    store = Store(tmp_path)
    service = ConversationService(store, manager)
    running = RunningReplies(service, per_user=2)
    yield SimpleNamespace(backend=backend, store=store, service=service, running=running)
    running.close()
    store.close()


def plan(world, user="alice", text="hi", conversation_id=None):
    return world.service.send(Asking(user, conversation_id, "fake", "", SamplingSettings()),
                              text)


def replies_of(world, user, conversation_id):
    return [m for m in world.service.messages(user, conversation_id) if m.role == "assistant"]


def read_all(run, position=0):
    """What one reader sees from `position` to the end: its text."""
    live = run.reader()
    while True:
        news = run.events_after(position, SAFETY_S)
        if not news and run.finished:
            return live
        for event in news:
            live.apply(event)
        position += len(news)


def test_a_reply_with_no_reader_runs_to_its_end_and_is_stored_once(world):
    run = world.running.start(plan(world))
    world.backend.step(100)
    assert until(lambda: run.finished)
    assert [m.content for m in replies_of(world, "alice", run.conversation_id)] == [WORDS]
    assert world.running.find("alice", run.conversation_id) is None


def test_a_reader_joining_late_gets_the_text_so_far_then_the_rest(world):
    run = world.running.start(plan(world))
    world.backend.step(9)
    assert until(lambda: run.live is not None and len(run.live.text.split()) >= 10)
    early = run.reader()
    for event in run.events_after(0, SAFETY_S):
        early.apply(event)
    assert early.text.split() == WORDS.split()[:10] and not early.done
    joined = world.running.find("alice", run.conversation_id)  # a reload finds it again
    assert joined is run
    world.backend.step(100)
    late = read_all(joined)  # joins now, reads from the first event
    assert late.text == WORDS and late.done
    assert [m.content for m in replies_of(world, "alice", run.conversation_id)] == [WORDS]


def test_stop_from_the_same_user_ends_the_computation_another_user_cannot(world):
    run = world.running.start(plan(world))
    world.backend.step(3)
    assert until(lambda: run.live is not None and len(run.live.text.split()) >= 4)
    assert world.running.find("bob", run.conversation_id) is None
    assert world.running.stop("bob", run.conversation_id) is False
    assert not run.cancel.is_set()
    assert world.running.stop("alice", run.conversation_id) is True
    assert world.backend.cancelled.wait(SAFETY_S)  # the engine saw the cancel
    assert until(lambda: run.finished)
    kept = replies_of(world, "alice", run.conversation_id)
    assert len(kept) == 1 and kept[0].stopped and len(kept[0].content.split()) < 40


def test_one_reply_per_conversation_and_a_cap_per_user(world):
    """The cap counts replies no page follows (a reload, a closed tab)."""
    first = world.running.start(plan(world))
    with pytest.raises(Refused, match=f"conversation {first.conversation_id} already has"):
        world.running.admit("alice", first.conversation_id)
    followed = world.running.start(plan(world, text="followed"), followed=True)
    world.running.start(plan(world, text="another"))  # followed does not count
    with pytest.raises(Refused, match="2 replies are running already") as refused:
        world.running.start(plan(world, text="a third"))
    assert refused.value.limit == 2
    followed.unfollow()  # its page went: it counts now
    with pytest.raises(Refused, match="2 replies are running already"):
        world.running.admit("alice", None)
    world.running.start(plan(world, user="bob"))  # bob's cap is his own
    world.running.close()  # the server stops: all of them end
    assert world.backend.cancelled.is_set()
    with pytest.raises(Refused, match="the server is stopping"):
        world.running.admit("alice", None)


def test_a_second_tab_of_the_same_user_follows_and_stops_bobs_page_cannot(world):
    """Through the page's handlers: tab 2 (a reload, or another browser) joins the reply
    tab 1 started and stops it; Bob's page neither sees nor stops it."""
    chat = ChatHandlers(world.service.manager, world.store, texts=load_texts("en"),
                        running=world.running)
    first = chat.send("hi", None, False, "fake", "", SamplingSettings(), request=ALICE_TAB_1)
    conversation_id = next(first)[2]
    world.backend.step(4)
    assert until(lambda: len(world.running.find("alice", conversation_id).live.text.split())
                 >= 5)
    first.close()  # tab 1 reloads: its follower is gone, the reply runs on
    run = world.running.find("alice", conversation_id)
    assert run is not None and not run.cancel.is_set()

    assert [u[0] for u in chat.attach(conversation_id, request=BOB)] == [
        gr.update()]  # nothing to follow for Bob
    chat.stop(conversation_id, request=BOB)
    assert not run.cancel.is_set()

    joined = chat.attach(conversation_id, request=ALICE_TAB_2)
    shown = next(joined)[0][-1]["content"]
    assert shown.startswith("w0 w1")  # the text so far, at once
    chat.stop(conversation_id, request=ALICE_TAB_2)
    last = list(joined)[-1][0][-1]["content"]
    assert world.backend.cancelled.wait(SAFETY_S)
    kept = replies_of(world, "alice", conversation_id)
    assert len(kept) == 1 and kept[0].stopped and last.startswith(kept[0].content)


@pytest.mark.slow
def test_a_real_reply_with_no_reader_is_stored_whole_once(tmp_path, smollm2_path):
    """SmolLM2 through the manager: the tab that started it is gone at once; the reply
    still runs to its token limit and is kept once, with its figures."""
    from chatcore.generation.factory import make_backend
    from chatcore.generation.registry import load_registry

    manager = ModelManager(load_registry(SHIPPED_MODELS), make_backend)
    store = Store(tmp_path)
    service = ConversationService(store, manager)
    running = RunningReplies(service)
    try:
        settings = SamplingSettings(max_new_tokens=24, temperature=0.0, seed=1)
        asked = Asking("", None, "smollm2-135m", "", settings)
        run = running.start(service.send(asked, "Write a long story about the sea."))
        assert until(lambda: run.finished, timeout=120)
        kept = [m for m in store.get_conversation("", run.conversation_id).messages
                if m.role == "assistant"]
        assert len(kept) == 1 and kept[0].completion_tokens == 24
        assert kept[0].finish_reason == "length" and kept[0].content == run.live.text
        assert until(lambda: generation_threads() == [])
    finally:
        running.close()
        manager.unload_all()
        store.close()
