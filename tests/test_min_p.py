"""min_p, the setting added to prove that a setting is one field of the schema: it reaches
the engine from the page, Compare, the API and models.yaml's defaults without a handler
naming it, and each engine applies it (llama.cpp's min-p sampler, transformers' min_p, a
remote server that takes it) or names it as not applied."""
from __future__ import annotations

import threading

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from backends.base import GenParams, Message
from backends.openai import OpenAIBackend
from backends.sampling import SamplingSettings
from chatcore.api.v1 import build_api
from chatcore.conversations.store import Store
from chatcore.generation.manager import ModelManager
from chatcore.generation.registry import ModelEntry, ModelRegistry
from chatcore.i18n import english
from chatui.chat_handlers import ChatHandlers
from chatui.chat_tab import select_model
from chatui.compare_handlers import CompareHandlers
from chatui.exports import ExportFiles
from chatui.sampling_controls import FIELDS
from tests.conftest import SHIPPED_MODELS
from tests.fakes import ScriptedBackend
from tests.test_chat_handlers import ALICE

PROMPT = [Message("user", "Write a short story about a cat.")]
SEEDS = range(10)


class RecordingBackend(ScriptedBackend):
    """Scripted words; records the settings each reply was asked with (UI logic only)."""

    def __init__(self) -> None:
        super().__init__("hello there")
        self.asked: list[SamplingSettings] = []

    def stream_chat(self, messages, params, cancel):
        self.asked.append(params.sampling)
        yield from super().stream_chat(messages, params, cancel)


@pytest.fixture()
def setup(tmp_path):
    backend = RecordingBackend()
    entry = ModelEntry(id="fake", name="Fake", backend="llamacpp", path=__file__,
                       context_length=256, defaults={"min_p": 0.25})
    manager = ModelManager(ModelRegistry(path=SHIPPED_MODELS, entries=(entry,), broken=()),
                           lambda _: backend)
    store = Store(tmp_path)
    yield manager, store, backend
    store.close()


def test_min_p_reaches_the_engine_from_every_entry_point(setup, tmp_path):
    manager, store, backend = setup
    chosen = SamplingSettings(temperature=0.8, min_p=0.3)
    # The page: the chat, then Compare's two panes.
    list(ChatHandlers(manager, store, texts=english()).send(
        "hi", None, False, "fake", "", chosen, request=ALICE))
    list(CompareHandlers(manager, store, ExportFiles(tmp_path / "x"), texts=english()).send(
        "hi", None, False, "2", "", ["fake"] * 4, [chosen, SamplingSettings(min_p=0.6)] * 2,
        request=ALICE))
    # The API, with min_p given, then without it: the entry's default.
    server = FastAPI()
    server.include_router(build_api(manager, None))
    client = TestClient(server)
    message = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/v1/chat/completions", json={**message, "min_p": 0.3}).status_code \
        == 200
    assert client.post("/v1/chat/completions", json=message).status_code == 200
    assert [s.min_p for s in backend.asked] == [0.3, 0.3, 0.6, 0.3, 0.25]
    # The page shows the entry's default when the model is chosen.
    _, *shown = select_model(manager, "fake", texts=english())
    assert dict(zip(FIELDS, shown))["min_p"] == 0.25


def test_an_out_of_range_min_p_is_a_400_naming_the_bound(setup):
    manager, _, backend = setup
    server = FastAPI()
    server.include_router(build_api(manager, None))
    reply = TestClient(server).post("/v1/chat/completions", json={
        "model": "fake", "messages": [{"role": "user", "content": "hi"}], "min_p": 1.5})
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == "min_p: Input should be less than or equal to 1"
    assert backend.asked == []


def distinct_replies(backend, min_p: float, temperature: float = 1.5) -> set[str]:
    """What the model says over the same seeds, all other settings wide open."""
    replies = set()
    for seed in SEEDS:
        settings = SamplingSettings(temperature=temperature, top_p=1.0, top_k=0, min_p=min_p,
                                    max_new_tokens=6, seed=seed)
        replies.add("".join(c.text for c in backend.stream_chat(
            PROMPT, GenParams(settings), threading.Event())))
    return replies


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["smollm2", "smollm2_fp32"])
def test_min_p_narrows_sampling_and_leaves_greedy_alone(engine, request):
    backend = request.getfixturevalue(engine)  # llama.cpp, then transformers
    wide, narrow = distinct_replies(backend, 0.0), distinct_replies(backend, 0.9)
    assert len(narrow) < len(wide), (narrow, wide)
    assert backend.unhonoured(GenParams(SamplingSettings(top_k=0, min_p=0.9))) == []
    assert distinct_replies(backend, 0.9, temperature=0.0) == \
        distinct_replies(backend, 0.0, temperature=0.0)  # greedy: one reply, the same


@pytest.mark.slow
def test_a_server_that_takes_min_p_gets_it_and_one_that_may_not_is_named(llama_server):
    takes = OpenAIBackend(llama_server.base_url, "smollm2", server_settings=("min_p",))
    unknown = OpenAIBackend(llama_server.base_url, "smollm2")
    takes.load()
    try:
        wide, narrow = distinct_replies(takes, 0.0), distinct_replies(takes, 0.9)
        assert len(narrow) < len(wide), (narrow, wide)  # the server applied it
        assert takes.unhonoured(GenParams(SamplingSettings(top_k=0, min_p=0.9))) == []
    finally:
        takes.unload()
    assert unknown.unhonoured(GenParams(SamplingSettings(top_k=0, min_p=0.9))) == ["min_p 0.9"]
