"""The Models tab: its table from a scripted manager, and Load and Unload on the real app."""
from __future__ import annotations

import threading

import pytest
from gradio_client import Client

from backends.base import GenParams, Message
from chatcore.generation.registry import BrokenEntry, ModelEntry, ModelRegistry
from chatcore.generation.manager import ModelManager
from chatcore.generation.memory import MemoryBudget
from chatcore.i18n import english
from chatui.models_tab import COLUMNS, ModelsHandlers, status_rows
from tests.conftest import SHIPPED_MODELS
from tests.fakes import ScriptedBackend, reply_chunks


def test_table_shows_state_memory_and_reasons():
    backends = {"ok": ScriptedBackend("fine", memory=40 * 10**6),
                "bad": ScriptedBackend(fail_load="truncated file", memory=10**6)}
    registry = ModelRegistry(
        path=SHIPPED_MODELS,
        entries=tuple(ModelEntry(id=i, name=i.upper(), backend="llamacpp", path=__file__)
                      for i in backends),
        broken=(BrokenEntry(3, "typo", "typo", "models.yaml: entry 3: field 'x': unknown field"),))
    manager = ModelManager(registry, lambda e: backends[e.id],
                           budget=MemoryBudget({"cpu": 10**9}))
    list(reply_chunks(manager, "ok", [Message("user", "hi")], GenParams(), threading.Event()))
    try:
        manager.load("bad")
    except Exception:  # noqa: BLE001 - the failure is what the table must show
        pass
    rows = {row[0].split(" (")[-1].rstrip(")"): dict(zip(COLUMNS, row))
            for row in status_rows(manager, texts=english())}
    assert rows["ok"]["State"] == "resident"
    assert rows["ok"]["Estimated"] == "40 MB"
    assert rows["ok"]["Measured"].startswith("RSS +")
    assert rows["ok"]["Load time"].endswith(" s") and rows["ok"]["Last used"]
    assert rows["bad"]["State"] == "failed" and rows["bad"]["Details"] == "truncated file"
    assert rows["typo"]["State"] == "invalid entry"
    table, summary = ModelsHandlers(manager, texts=english()).refresh()
    assert summary == "cpu: 40 MB of a 1.0 GB budget"
    assert ModelsHandlers(manager, texts=english()).unload("ok").startswith("Unloaded **ok**: ")
    assert status_rows(manager, texts=english())[0][2] == "available"


@pytest.mark.slow
def test_load_and_unload_buttons_on_the_running_app(running_app):
    client = Client(running_app.url, verbose=False)
    client.predict("smollm2-135m", api_name="/load_model")
    again = client.predict("smollm2-135m", api_name="/load_model")
    assert again == "**smollm2-135m** is already resident."
    unloaded = client.predict("smollm2-135m", api_name="/unload_model")
    assert unloaded.startswith("Unloaded **smollm2-135m**: ") and "after unload" in unloaded
    assert client.predict("smollm2-135m", api_name="/unload_model") == "smollm2-135m was not loaded."
    reloaded = client.predict("smollm2-135m", api_name="/load_model")
    assert reloaded.startswith("Loaded **smollm2-135m**")
    missing = client.predict("llama-3.1-8b-instruct-q4", api_name="/load_model")
    assert missing.startswith("⚠️ Llama 3.1 8B Instruct (Q4_K_M): not downloaded")
