"""One request through every entry point (the Chat page, Compare, the API, the CLI) reaches
the engine with the same parameters and gives the same greedy text, with the real SmolLM2."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

import chat_app
from chatcore.i18n import english
from backends.sampling import SamplingSettings
from backends.llamacpp import LlamaCppBackend
from chatcore.api.v1 import build_api
from chatcore.generation.registry import load_registry
from chatcore.generation.factory import make_backend
from chatcore.generation.manager import ModelManager
from chatcore.conversations.store import Store
from chatui.chat_handlers import ChatHandlers
from chatui.compare_handlers import CompareHandlers
from tests.conftest import CAPITAL_PROMPT, SHIPPED_MODELS

MODEL = "smollm2-135m"
MAX_TOKENS = 24
REQUEST = SimpleNamespace(session_hash="tab-1", username="")


class RecordingLlamaCpp(LlamaCppBackend):
    """The real engine, noting what each reply asked of it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.asked: list[tuple[list[dict], dict]] = []

    def stream_chat(self, messages, params, cancel):
        self.asked.append(([m.as_dict() for m in messages], params.sampling.model_dump()))
        yield from super().stream_chat(messages, params, cancel)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, smollm2_path):
    registry = load_registry(SHIPPED_MODELS)
    engines: list[RecordingLlamaCpp] = []

    def factory(entry):
        plain = make_backend(entry)
        engine = RecordingLlamaCpp(plain.model_path, context_length=plain.context_length,
                                   n_threads=plain.n_threads)
        engines.append(engine)
        return engine

    manager = ModelManager(registry, factory)
    store = Store(tmp_path_factory.mktemp("data"))
    yield SimpleNamespace(manager=manager, store=store, engines=engines,
                          defaults=registry.get(MODEL).defaults)
    manager.unload_all()
    store.close()


def greedy(setup) -> SamplingSettings:
    """The entry's defaults, greedy and short: the same settings on every path."""
    return setup.defaults.model_copy(update={"temperature": 0.0, "max_new_tokens": MAX_TOKENS})


def through_page(setup) -> str:
    updates = list(ChatHandlers(setup.manager, setup.store, texts=english()).send(
        CAPITAL_PROMPT, None, False, MODEL, "", greedy(setup), request=REQUEST))
    shown = updates[-1][0][-1]["content"]
    return shown.split("\n\n<sub>")[0]


def through_compare(setup, tmp_path) -> list[str]:
    compare = CompareHandlers(setup.manager, setup.store, tmp_path, texts=english())
    # Two panes (of four: the others hidden) on the same model, with the same settings.
    updates = list(compare.send(CAPITAL_PROMPT, None, False, 2, "", [MODEL] * 4,
                                [greedy(setup)] * 4, request=REQUEST))
    comparison = updates[-1][4]
    return [reply.content for reply in comparison.rounds[-1].replies]


def through_api(setup) -> str:
    app = FastAPI()
    app.include_router(build_api(setup.manager, None))

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            return await http.post("/v1/chat/completions", timeout=120, json={
                "model": MODEL, "temperature": 0, "max_tokens": MAX_TOKENS,
                "messages": [{"role": "user", "content": CAPITAL_PROMPT}]})

    reply = asyncio.run(ask())
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["message"]["content"]


def through_cli(setup, capsys) -> str:
    args = chat_app.parse_args(["--model", MODEL, "--prompt", CAPITAL_PROMPT,
                                "--temperature", "0", "--max-new-tokens", str(MAX_TOKENS)])
    capsys.readouterr()
    assert chat_app._one_shot(setup.manager, args, setup.defaults, MODEL) == 0
    return capsys.readouterr().out.rstrip("\n")


@pytest.mark.slow
def test_every_entry_point_asks_the_engine_the_same_and_gets_the_same_greedy_text(
        setup, tmp_path, capsys):
    texts = {"page": through_page(setup)}
    compare = through_compare(setup, tmp_path)
    texts.update({"compare A": compare[0], "compare B": compare[1],
                  "api": through_api(setup), "cli": through_cli(setup, capsys)})
    asked = [ask for engine in setup.engines for ask in engine.asked]
    assert len(setup.engines) == 1, "the model was loaded more than once"
    assert len(asked) == 5, asked
    assert all(ask == asked[0] for ask in asked), asked
    assert asked[0][0] == [{"role": "user", "content": CAPITAL_PROMPT}]
    assert asked[0][1]["temperature"] == 0.0 and asked[0][1]["max_new_tokens"] == MAX_TOKENS
    assert "Paris" in texts["page"], texts
    assert len(set(texts.values())) == 1, texts
