"""Chat page logic with a scripted backend: what is shown, what the model is sent."""
from __future__ import annotations

from types import SimpleNamespace

from chatcore.config import BrokenEntry, ModelEntry, ModelRegistry
from chatcore.manager import ModelManager
from chatui.chat_tab import ChatHandlers, model_choices, model_info
from tests.conftest import SHIPPED_MODELS
from tests.fakes import ScriptedBackend

REQUEST = SimpleNamespace(session_hash="tab-1")
PARAMS = ("", 0.0, 0.9, 40, 64, 1.0, -1)  # system, temperature, top_p, top_k, max, penalty, seed


class RecordingBackend(ScriptedBackend):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prompts = []

    def stream_chat(self, messages, params, cancel):
        self.prompts.append([m.as_dict() for m in messages])
        yield from super().stream_chat(messages, params, cancel)


def handlers_with(backend) -> ChatHandlers:
    registry = ModelRegistry(
        path=SHIPPED_MODELS,
        entries=(ModelEntry(id="fake", name="Fake", backend="llamacpp", path=__file__),),
        broken=(BrokenEntry(2, "typo", "typo", "models.yaml: entry 2 (id 'typo'): field "
                            "'temprature': unknown field (check the spelling)"),),
    )
    return ChatHandlers(ModelManager(registry, lambda entry: backend))


def last(updates):
    return list(updates)[-1]


def test_reply_streams_with_a_footer_that_never_reaches_the_model():
    backend = RecordingBackend("Paris is the capital")
    handlers = handlers_with(backend)
    updates = list(handlers.send("Capital?", [], "fake", *PARAMS, request=REQUEST))
    chat, turns, box = updates[-1]
    assert box == ""
    assert chat[0] == {"role": "user", "content": "Capital?"}
    assert chat[1]["content"].startswith("Paris is the capital\n\n<sub>Fake · ")
    assert "4 tokens" in chat[1]["content"]
    assert updates[0][0][1]["content"] == "…"  # the placeholder while the model starts
    last(handlers.send("And Spain?", turns, "fake", *PARAMS, request=REQUEST))
    assert backend.prompts[1] == [
        {"role": "user", "content": "Capital?"},
        {"role": "assistant", "content": "Paris is the capital"},
        {"role": "user", "content": "And Spain?"},
    ]


def test_system_prompt_is_sent_first():
    backend = RecordingBackend("ok")
    handlers = handlers_with(backend)
    last(handlers.send("hi", [], "fake", "Be terse.", *PARAMS[1:], request=REQUEST))
    assert backend.prompts[0][0] == {"role": "system", "content": "Be terse."}


def test_backend_error_is_shown_in_the_chat_and_the_next_message_works():
    backend = RecordingBackend("a b c", fail_at=1)
    handlers = handlers_with(backend)
    chat, turns, _ = last(handlers.send("hi", [], "fake", *PARAMS, request=REQUEST))
    assert "⚠️ scripted failure at word 1" in chat[-1]["content"]
    assert "Traceback" not in chat[-1]["content"]
    backend.fail_at = None
    chat, turns, _ = last(handlers.send("again", turns, "fake", *PARAMS, request=REQUEST))
    assert chat[-1]["content"].startswith("a b c")
    # The failed reply is shown but not sent back to the model.
    assert [m["content"] for m in backend.prompts[-1]] == ["hi", "again"]


def test_broken_entry_is_listed_with_its_reason_and_refuses_politely():
    handlers = handlers_with(RecordingBackend("x"))
    labels = dict((value, label) for label, value in model_choices(handlers.manager))
    assert labels == {"fake": "Fake", "typo": "typo (invalid entry)"}
    assert "field 'temprature': unknown field" in model_info(handlers.manager, "typo")
    chat, _, _ = last(handlers.send("hi", [], "typo", *PARAMS, request=REQUEST))
    assert "⚠️ models.yaml: entry 2 (id 'typo')" in chat[-1]["content"]


def test_regenerate_replaces_the_last_reply():
    backend = RecordingBackend("same answer")
    handlers = handlers_with(backend)
    _, turns, _ = last(handlers.send("q", [], "fake", *PARAMS, request=REQUEST))
    chat, turns, _ = last(handlers.regenerate(turns, "fake", *PARAMS, request=REQUEST))
    assert [t.role for t in turns] == ["user", "assistant"]
    assert backend.prompts[-1] == [{"role": "user", "content": "q"}]


def test_empty_message_sends_nothing():
    backend = RecordingBackend("x")
    handlers = handlers_with(backend)
    chat, turns, _ = last(handlers.send("   ", [], "fake", *PARAMS, request=REQUEST))
    assert chat == [] and turns == [] and backend.prompts == []


def test_choosing_a_model_loads_its_defaults():
    handlers = handlers_with(RecordingBackend("x"))
    info, temperature, top_p, top_k, max_new, penalty, seed = handlers.select_model("fake")
    assert "**Fake**" in info
    assert (temperature, top_p, top_k, max_new, penalty, seed) == (0.7, 0.9, 40, 512, 1.0, -1)


def test_the_reply_says_while_its_model_loads():
    handlers = handlers_with(RecordingBackend("ready now"))
    updates = list(handlers.send("hi", [], "fake", *PARAMS, request=REQUEST))
    shown = [u[0][-1]["content"] for u in updates]
    assert any(text.startswith("…") and "Loading Fake: reading ▰▰▰▰▰▰▱▱▱▱▱▱ 50%" in text for text in shown)
    assert shown[-1].startswith("ready now")
