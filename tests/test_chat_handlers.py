"""Chat page logic with a scripted backend and a real store: what is shown, sent and kept."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from backends.sampling import SamplingSettings
from chatcore.generation.registry import BrokenEntry, ModelEntry, ModelRegistry
from chatcore.generation.manager import ModelManager
from chatcore.conversations.store import Store
from chatcore.i18n import english
from chatui.exports import ExportFiles
from chatui.chat_handlers import ChatHandlers
from chatui.inspector_text import prompt_hidden
from chatui.chat_tab import model_choices, model_info, select_model
from chatui.conversations import ConversationHandlers
from tests.conftest import SHIPPED_MODELS
from tests.fakes import ScriptedBackend

ALICE = SimpleNamespace(session_hash="tab-1", username="alice")
GREEDY = SamplingSettings(temperature=0.0, max_new_tokens=64)
PARAMS = ("", GREEDY)  # the system prompt and the settings


class RecordingBackend(ScriptedBackend):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prompts = []
        self.continued = []

    def stream_chat(self, messages, params, cancel):
        self.prompts.append([m.as_dict() for m in messages])
        self.continued.append(params.continue_final)
        yield from super().stream_chat(messages, params, cancel)


@pytest.fixture()
def page(tmp_path):
    """Handlers over one scripted model "fake", a broken entry, and a real store."""
    backend = RecordingBackend("Paris is the capital")
    registry = ModelRegistry(
        path=SHIPPED_MODELS,
        entries=(ModelEntry(id="fake", name="Fake", backend="llamacpp", path=__file__,
                            context_length=64),),
        broken=(BrokenEntry(2, "typo", "typo", "models.yaml: entry 2 (id 'typo'): field "
                            "'temprature': unknown field (check the spelling)"),),
    )
    manager = ModelManager(registry, lambda entry: backend)
    store = Store(tmp_path)
    chat = ChatHandlers(manager, store, texts=english())
    yield SimpleNamespace(backend=backend, manager=manager, store=store, chat=chat,
                          convs=ConversationHandlers(manager, store, chat,
                                                     ExportFiles(tmp_path / "exports"),
                                                     texts=english()))
    store.close()


def send(page, text, conversation_id=None, editing=False, model="fake", request=ALICE):
    return list(page.chat.send(text, conversation_id, editing, model, *PARAMS,
                               request=request))


def test_first_message_creates_a_titled_conversation_and_both_messages_are_kept(page):
    updates = send(page, "Name the capital of France.")
    chat, box, conversation_id, editing = updates[-1]
    assert box == "" and editing is False
    assert chat[0] == {"role": "user", "content": "Name the capital of France."}
    assert chat[1]["content"].startswith("Paris is the capital\n\n<sub>Fake · ")
    assert updates[0][0][1]["content"].startswith("…")
    stored = page.store.get_conversation("alice", conversation_id)
    assert stored.title == "Name the capital of France."
    assert [(m.role, m.content) for m in stored.messages] == [
        ("user", "Name the capital of France."), ("assistant", "Paris is the capital")]
    assert stored.messages[1].completion_tokens == 4 and stored.messages[1].model == "fake"
    assert page.store.list_conversations("bob") == []


def test_footers_never_reach_the_model(page):
    conversation_id = send(page, "Capital?")[-1][2]
    send(page, "And Spain?", conversation_id)
    assert page.backend.prompts[1] == [
        {"role": "user", "content": "Capital?"},
        {"role": "assistant", "content": "Paris is the capital"},
        {"role": "user", "content": "And Spain?"},
    ]


def test_a_failed_reply_is_shown_not_stored_and_the_next_message_works(page):
    page.backend.fail_at = 1
    chat, _, conversation_id, _ = send(page, "hi")[-1]
    assert "⚠️ scripted failure at word 1" in chat[-1]["content"]
    assert [m.role for m in page.store.get_conversation("alice", conversation_id).messages] \
        == ["user"]
    page.backend.fail_at = None
    chat, _, _, _ = send(page, "again", conversation_id)[-1]
    assert chat[-1]["content"].startswith("Paris is the capital")


def test_regenerate_keeps_the_earlier_reply_retrievable(page):
    conversation_id = send(page, "q")[-1][2]
    page.backend.words = ["A", "different", "answer"]
    list(page.chat.regenerate(conversation_id, "fake", *PARAMS, request=ALICE))
    everything = page.store.get_conversation("alice", conversation_id,
                                             include_superseded=True).messages
    assert [(m.content, m.superseded) for m in everything] == [
        ("q", False), ("Paris is the capital", True), ("A different answer", False)]
    assert page.backend.prompts[-1] == [{"role": "user", "content": "q"}]
    opened = page.convs.open(conversation_id, ALICE)
    assert "Paris is the capital" in opened[-1]  # the Earlier replies panel


def test_edit_last_message_replaces_it_and_its_reply(page):
    conversation_id = send(page, "Name the capitol of France")[-1][2]
    text, editing = page.chat.edit_last(conversation_id, ALICE)
    question = page.store.get_conversation("alice", conversation_id).messages[0]
    assert (text, editing) == ("Name the capitol of France", question.id)
    send(page, "Name the capital of France.", conversation_id, editing=editing)
    active = page.store.get_conversation("alice", conversation_id).messages
    assert [m.content for m in active] == ["Name the capital of France.", "Paris is the capital"]
    assert page.backend.prompts[-1] == [{"role": "user", "content": "Name the capital of France."}]


def test_a_question_edited_in_the_chat_gets_a_new_version_with_its_own_reply(page):
    """The chat's own edit (Gradio's edit event on a user message) works on any question:
    editing the first of two gives it a second version answered on its own branch."""
    import gradio as gr

    conversation_id = send(page, "Name the capitol of France")[-1][2]
    history = send(page, "And of Spain?", conversation_id)[-1][0]
    edit = gr.EditData(None, {"index": 0, "value": "Name the capital of France.",
                              "previous_value": "Name the capitol of France"})
    updates = list(page.chat.edit_message(history, conversation_id, "fake", *PARAMS, edit,
                                          request=ALICE))
    assert [m["content"] for m in updates[-1][0]][0] == "Name the capital of France."
    shown = page.store.get_conversation("alice", conversation_id)
    assert [m.content for m in shown.messages] == ["Name the capital of France.",
                                                   "Paris is the capital"]
    assert shown.positions[shown.messages[0].id].count == 2
    assert page.backend.prompts[-1] == [{"role": "user",
                                         "content": "Name the capital of France."}]
    everything = page.store.get_conversation("alice", conversation_id, include_superseded=True)
    assert "And of Spain?" in [m.content for m in everything.messages]  # the old branch stays


def test_continue_extends_a_reply_cut_at_the_token_limit(page):
    page.backend.words = ["one", "two", "three"]
    cut = list(page.chat.send("count", None, False, "fake", "",
                              SamplingSettings(temperature=0.0, max_new_tokens=2),
                              request=ALICE))
    conversation_id = cut[-1][2]
    # The scripted engine ignores max_new_tokens; mark the stored reply as cut by hand.
    reply = page.store.get_conversation("alice", conversation_id).messages[-1]
    page.store.extend_message("alice", conversation_id, reply.id, "", 0, "length", False)
    list(page.chat.continue_reply(conversation_id, "fake", *PARAMS, request=ALICE))
    assert page.backend.continued[-1] is True
    assert page.backend.prompts[-1][-1] == {"role": "assistant", "content": "one two three"}
    active = page.store.get_conversation("alice", conversation_id).messages
    assert active[-1].content == "one two threeone two three"
    assert len(active) == 2


def test_history_over_the_context_is_trimmed_and_the_page_says_so(page):
    conversation_id = None
    for n in range(8):  # 64-token context, the scripted tokenizer counts words
        conversation_id = send(page, f"question {n} with several words in it", conversation_id)[-1][2]
    chat = send(page, "last one", conversation_id)[-1][0]
    assert "12 earlier messages left out to fit the model" in chat[-1]["content"]
    sent = page.backend.prompts[-1]
    assert sent[-1] == {"role": "user", "content": "last one"} and sent[0]["role"] == "user"
    assert len(sent) < 17


def test_a_message_too_long_for_the_context_gets_a_clear_error(page):
    chat = send(page, "word " * 100)[-1][0]
    assert "⚠️ this message needs 100 tokens" in chat[-1]["content"]


def test_broken_entry_is_listed_with_its_reason_and_refuses_politely(page):
    labels = dict((value, label) for label, value in model_choices(page.manager, texts=english()))
    assert labels == {"fake": "Fake", "typo": "typo (invalid entry)"}
    assert "field 'temprature': unknown field" in model_info(page.manager, "typo", texts=english())
    chat = send(page, "hi", model="typo")[-1][0]
    assert "⚠️ models.yaml: entry 2 (id 'typo')" in chat[-1]["content"]


def test_the_reply_says_while_its_model_loads(page):
    shown = [u[0][-1]["content"] for u in send(page, "hi")]
    assert any(text.startswith("…") and "Loading Fake: reading ▰▰▰▰▰▰▱▱▱▱▱▱ 50%" in text
               for text in shown)


def test_opening_a_conversation_restores_its_model_prompt_and_settings(page):
    sent = SamplingSettings(temperature=0.3, top_p=0.8, top_k=20, min_p=0.05,
                            max_new_tokens=32, repetition_penalty=1.1, seed=7, think=False,
                            thinking_budget=50)
    result = list(page.chat.send("hi", None, False, "fake", "Be terse.", sent, request=ALICE))
    conversation_id = result[-1][2]
    assert page.backend.prompts[-1][0] == {"role": "system", "content": "Be terse."}
    send(page, "another conversation")  # other settings elsewhere change nothing here
    chat, cid, editing, title, model, system, *settings, _ = page.convs.open(conversation_id,
                                                                             ALICE)
    assert (cid, title, model, system) == (conversation_id, "hi", "fake", "Be terse.")
    assert settings == [0.3, 0.8, 20, 0.05, 32, 1.1, 7, "off", 50]


def test_presets_built_in_and_saved(page):
    assert page.convs.apply_preset("Concise", ALICE).startswith("Answer briefly")
    _, message = page.convs.save_preset("Pirate", "Talk like a pirate.", ALICE)
    assert message == "Saved preset “Pirate”."
    assert page.convs.apply_preset("Pirate", ALICE) == "Talk like a pirate."
    bob = SimpleNamespace(session_hash="tab-2", username="bob")
    assert "Pirate" not in page.convs.preset_choices("bob")
    assert page.convs.save_preset("Concise", "x", bob)[1].endswith("choose another name.")


def test_choosing_a_model_loads_its_defaults(page):
    info, *values = select_model(page.manager, "fake", texts=english())
    assert "**Fake**" in info
    # temperature, top p, top k, min p, max new tokens, penalty, seed, Think, thinking budget
    assert values == [0.7, 0.9, 40, 0.0, 512, 1.0, -1, "default", 0]


def test_export_writes_inside_the_export_folder_and_import_makes_a_new_conversation(
        page, tmp_path):
    conversation_id = send(page, "Name the capital of France.")[-1][2]
    page.store.rename("alice", conversation_id, "../../etc/passwd")
    download, message = page.convs.export_json(conversation_id, request=ALICE)
    exported = download["value"]
    assert exported.startswith(str(tmp_path / "exports")) and exported.endswith(".json")
    assert message.startswith("Exported ")
    markdown, _ = page.convs.export_markdown(conversation_id, request=ALICE)
    assert "Paris is the capital" in open(markdown["value"], encoding="utf-8").read()
    listed, message = page.convs.import_file(exported, "", ALICE)
    assert message == "Imported “../../etc/passwd”."
    assert len(page.store.list_conversations("alice")) == 2


def test_a_bad_import_file_is_refused_through_the_page(page, tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"format": "local-chat/conversation", "version": 1, "title": "x"}')
    _, message = page.convs.import_file(str(bad), "", ALICE)
    assert message.startswith("⚠️ Not imported: broken.json: field 'model'")
    assert page.store.list_conversations("alice") == []


def test_after_a_reply_only_the_sidebar_is_refreshed(page):
    page.backend.fail_at = 1
    conversation_id = send(page, "Name the capital of France.")[-1][2]
    listed, title, earlier = page.convs.after_reply("", conversation_id, ALICE)
    assert title == "Name the capital of France."
    assert listed["choices"] == [("Name the capital of France.", conversation_id)]
    assert earlier.startswith("No earlier replies")
    # No chat output: the error the reply showed stays on the page.


def test_a_reply_that_ends_before_any_text_says_so(page):
    page.backend.words = []  # the model's first token is its end
    chat, *_ = send(page, "Say nothing.")[-1]
    footer = chat[-1]["content"]
    assert "the model ended its reply before any text" in footer, footer
    conversation = page.store.list_conversations("alice")[0]
    reopened = page.chat.display("alice", conversation.id)
    assert "the model ended its reply before any text" in reopened[-1].footer


def test_continue_and_the_inspector_say_why_a_remote_model_cannot(page, monkeypatch):
    """Capabilities come from the engine's class, before anything loads or is sent."""
    remote = ModelEntry(id="far", name="Far", backend="openai",
                        base_url="http://127.0.0.1:9/v1")
    page.manager.replace_registry(ModelRegistry(
        path=SHIPPED_MODELS, entries=(*page.manager.registry.entries, remote), broken=()))
    said = []
    monkeypatch.setattr("chatui.chat_handlers.gr.Info", said.append)
    conversation_id = send(page, "count")[-1][2]
    reply = page.store.get_conversation("alice", conversation_id).messages[-1]
    page.store.extend_message("alice", conversation_id, reply.id, "", 0, "length", False)
    asked = len(page.backend.prompts)
    list(page.chat.continue_reply(conversation_id, "far", *PARAMS, request=ALICE))
    assert said == ["Far cannot continue a cut reply: its engine does not take a started "
                    "answer. Regenerate it with a higher Max new tokens."]
    assert len(page.backend.prompts) == asked
    assert "applies its own chat template" in prompt_hidden(page.manager, "far", texts=english())


def test_settings_the_engine_cannot_apply_are_named_under_the_reply(page):
    page.backend.unhonoured = lambda params: [f"top_k {params.sampling.top_k}"]
    conversation_id = send(page, "hello")[-1][2]
    shown = page.chat.display("alice", conversation_id)
    live = send(page, "again", conversation_id)[-1][0][-1]["content"]
    assert "not applied by this engine: top_k 40" in live
    assert shown[-1].content == "Paris is the capital"  # the note is not part of the reply


def test_conversations_that_share_a_title_are_numbered_oldest_first(page):
    ids = [page.store.create_conversation("alice", title, "fake")
           for title in ("Hello", "Trip plan", "Hello")]
    assert page.convs.choices("alice") == [("Hello (#2)", ids[2]), ("Trip plan", ids[1]),
                                           ("Hello (#1)", ids[0])]
    # A search shows fewer entries; each keeps the number it has in the whole list.
    page.store.rename("alice", ids[0], "Hello there")
    page.store.rename("alice", ids[1], "Hello")
    page.store.create_conversation("alice", "Bread", "fake")
    assert sorted(page.convs.choices("alice", "hello"), key=lambda c: c[1]) == [
        ("Hello there", ids[0]), ("Hello (#1)", ids[1]), ("Hello (#2)", ids[2])]
