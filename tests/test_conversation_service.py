"""The chat use case, driven without Gradio: what a conversation stores, when, and what
supersedes what. A scripted backend stands in for the engine (this is conversation logic,
not proof that an engine works); the store is the real SQLite one."""
from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from backends.sampling import SamplingSettings
from chatcore.conversations.service import (
    Asking,
    CannotContinue,
    ConversationService,
    PlannedReply,
)
from chatcore.conversations.store import NotFound, Store
from tests.conftest import ROOT
from tests.fakes import one_model_manager, ScriptedBackend

SETTINGS = SamplingSettings(temperature=0.3, min_p=0.1, seed=7, think=False)


class RecordingBackend(ScriptedBackend):
    def __init__(self) -> None:
        super().__init__("Paris is the capital")
        self.asked = []

    def stream_chat(self, messages, params, cancel):
        self.asked.append(([m.as_dict() for m in messages], params))
        yield from super().stream_chat(messages, params, cancel)


@pytest.fixture()
def service(tmp_path):
    backend = RecordingBackend()
    manager = one_model_manager(backend, context_length=256)
    store = Store(tmp_path)
    service = ConversationService(store, manager)
    service.backend = backend
    yield service
    store.close()


def asking(conversation_id=None, settings=SETTINGS, user="alice", system="") -> Asking:
    return Asking(user, conversation_id, "fake", system, settings)


def run(service: ConversationService, plan: PlannedReply, cancel=None) -> None:
    with service.reply(plan, cancel or threading.Event()) as replies:
        for _ in replies:
            pass


def contents(service, conversation_id, user="alice", superseded=False):
    conversation = service.store.get_conversation(user, conversation_id,
                                                  include_superseded=superseded)
    return [(m.role, m.content, m.superseded) if superseded else (m.role, m.content)
            for m in conversation.messages]


def test_send_keeps_the_question_then_the_reply_with_the_settings_it_ran_with(service):
    plan = service.send(asking(system="Be brief."), "Name the capital of France.")
    assert contents(service, plan.conversation_id) == [("user", "Name the capital of France.")]
    run(service, plan)
    assert contents(service, plan.conversation_id) == [
        ("user", "Name the capital of France."), ("assistant", "Paris is the capital")]
    messages, params = service.backend.asked[-1]
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert params.sampling == SETTINGS and params.owner == "alice"
    conversation, settings = service.open("alice", plan.conversation_id)
    assert conversation.title == "Name the capital of France." and settings == SETTINGS
    assert conversation.messages[-1].params == SETTINGS.model_dump()


def test_regenerate_adds_a_sibling_and_remembers_the_new_settings(service):
    first = service.send(asking(), "q")
    run(service, first)
    other = SamplingSettings(temperature=1.2, seed=99, think=True, thinking_budget=50)
    again = service.regenerate(asking(first.conversation_id, other))
    run(service, again)
    assert contents(service, first.conversation_id, superseded=True) == [
        ("user", "q", False), ("assistant", "Paris is the capital", True),
        ("assistant", "Paris is the capital", False)]
    assert service.open("alice", first.conversation_id)[1] == other
    assert service.regenerate(asking(None)) is None  # nothing to answer


def test_editing_adds_a_new_version_of_the_last_question(service):
    plan = service.send(asking(), "Name the capitol of France")
    run(service, plan)
    question = service.last_question("alice", plan.conversation_id)
    assert question.content == "Name the capitol of France"
    edited = service.send(asking(plan.conversation_id), "Name the capital of France.",
                          editing=question.id)
    run(service, edited)
    assert contents(service, plan.conversation_id) == [
        ("user", "Name the capital of France."), ("assistant", "Paris is the capital")]
    assert service.backend.asked[-1][0] == [{"role": "user",
                                             "content": "Name the capital of France."}]
    assert contents(service, plan.conversation_id, superseded=True) == [
        ("user", "Name the capitol of France", True), ("assistant", "Paris is the capital", True),
        ("user", "Name the capital of France.", False),
        ("assistant", "Paris is the capital", False)]


def test_continue_extends_only_a_cut_reply(service):
    plan = service.send(asking(), "count")
    run(service, plan)
    with pytest.raises(CannotContinue) as refused:
        service.continue_reply(asking(plan.conversation_id))
    assert refused.value.model is None
    reply = service.messages("alice", plan.conversation_id)[-1]
    service.store.extend_message("alice", plan.conversation_id, reply.id, "", 0, "length",
                                 False)  # the scripted engine ignores the token limit
    more = service.continue_reply(asking(plan.conversation_id))
    assert more.request.params.continue_final and more.continuing.id == reply.id
    run(service, more)
    assert contents(service, plan.conversation_id)[-1] == (
        "assistant", "Paris is the capitalParis is the capital")


def test_a_failed_reply_and_one_stopped_before_its_first_word_leave_nothing(service):
    plan = service.send(asking(), "q")
    service.backend.fail_at = 1
    run(service, plan)
    stopped = service.regenerate(asking(plan.conversation_id))
    service.backend.fail_at = None
    cancel = threading.Event()
    cancel.set()
    run(service, stopped, cancel)
    assert contents(service, plan.conversation_id) == [("user", "q")]


def test_another_users_conversation_is_none_of_theirs(service):
    plan = service.send(asking(), "private")
    run(service, plan)
    assert service.messages("bob", plan.conversation_id) == []
    assert service.regenerate(asking(plan.conversation_id, user="bob")) is None
    with pytest.raises(NotFound):
        service.open("bob", plan.conversation_id)
    with pytest.raises(NotFound):
        service.delete("bob", plan.conversation_id)
    service.delete("alice", plan.conversation_id)
    assert service.messages("alice", plan.conversation_id) == []


def test_the_use_case_needs_no_user_interface():
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, chatcore.conversations.service; "
         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'chatui')))"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert imported == "[]"
