"""Replies: send, regenerate, edit the last message, continue a cut reply, stop."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

import gradio as gr

from backends.base import BackendError, Chunk, GenParams, Message, PromptReport
from chatcore.conversations.attachments import AttachmentStore
from chatcore.generation.context import title_from, with_system
from chatcore.i18n import Texts, english
from chatcore.generation.manager import ModelManager, ModelUnavailable, UnknownModel
from chatcore.generation.replies import LiveReply, ReplyRequest, progress_bar, thought_title
from chatcore.conversations.store import NotFound, Store, StoredMessage
from chatcore.conversations.service import stored_reply
from chatui.sampling_controls import params_from_controls
from chatui.stop_registry import StopRegistry
from chatui.transcript import Turn, chatbot_messages, live_turn, model_name, turns_from

log = logging.getLogger(__name__)

# Re-rendering a long reply on every token is what makes browsers fall behind: send the
# page at most one update per interval (10 a second), whatever the token rate: on a small
# machine each update costs CPU the model needs (measured: 0.93 of raw speed at 20 a second,
# 0.97 at 10; see docs/benchmarks).
UPDATE_INTERVAL_S = 0.1
# On a small machine the page's own work competes with the model for the cores; a new
# message is shown with the reply's first words when they come this quickly.
FIRST_WORDS_WAIT_S = 0.25
# Markdown code fences around the Inspector's thought and facts.
THOUGHT_FENCE = "````"
CODE_FENCE = "```"


def user_of(request: gr.Request | None) -> str:
    """The signed-in user with --auth; everyone shares "" without it."""
    return (getattr(request, "username", None) or "") if request is not None else ""


def session_key(request: gr.Request | None) -> str:
    return (request.session_hash if request is not None else None) or "anonymous"


class ChatHandlers:
    """Gradio callbacks for one chat page; the store holds what was said, the manager runs."""

    def __init__(self, manager: ModelManager, store: Store,
                 stops: StopRegistry | None = None, texts: Texts | None = None) -> None:
        self.texts = texts or english()
        self.manager = manager
        self.store = store
        self.attachments = AttachmentStore(store)
        self.stops = stops or StopRegistry()

    def model_name(self, model_id: str) -> str:
        return model_name(self.manager.registry, model_id)

    def display(self, user: str, conversation_id: int | None) -> list[Turn]:
        """The conversation's bubbles, each message's attachments as chips under it."""
        messages = self._messages(user, conversation_id)
        turns = turns_from(messages, self.model_name, texts=self.texts)
        if conversation_id is not None:
            attached = self.attachments.by_message(user, conversation_id)
            for message, turn in zip(messages, turns):
                if message.id in attached:
                    turn.footer = "  ".join(a.chip(texts=self.texts) for a in attached[message.id])
        return turns

    # -- actions -------------------------------------------------------------------------
    def send(self, message: str, conversation_id: int | None, editing: bool, model_id: str,
             system: str, temperature: float, top_p: float, top_k: float,
             max_new_tokens: float, repetition_penalty: float, seed: float | None,
             think: str | None = None, thinking_budget: float | None = None,
             pending: list[int] | None = None, request: gr.Request = None) -> Iterator[tuple]:
        """`pending`: attachments for this message (they go with it, and stay with the
        conversation for follow-up questions)."""
        user = user_of(request)
        if not (message or "").strip() and pending:
            message = self.texts("chat.attached_prompt")
        if not (message or "").strip():
            yield chatbot_messages(self.display(user, conversation_id), texts=self.texts), \
                message, conversation_id, editing
            return
        params = params_from_controls(temperature, top_p, top_k, max_new_tokens,
                                      repetition_penalty, seed, think, thinking_budget,
                                      texts=self.texts)
        if conversation_id is not None and editing:
            self._supersede_last_exchange(user, conversation_id)
        if conversation_id is None:
            conversation_id = self.store.create_conversation(
                user, title_from(message), model_id, system or "", params.settings())
        else:
            self.store.update_settings(user, conversation_id, model_id, system or "",
                                       params.settings())
        message_id = self.store.add_message(user, conversation_id, StoredMessage("user", message))
        if pending:
            self.attachments.attach(user, message_id, pending)
        yield from self._reply(user, conversation_id, model_id, system, params,
                               session_key(request))

    def regenerate(self, conversation_id: int | None, model_id: str, system: str,
                   temperature: float, top_p: float, top_k: float, max_new_tokens: float,
                   repetition_penalty: float, seed: float | None, think: str | None = None,
                   thinking_budget: float | None = None,
                   request: gr.Request = None) -> Iterator[tuple]:
        """A new last reply; the earlier one stays in the store, marked superseded."""
        user = user_of(request)
        messages = self._messages(user, conversation_id)
        if not messages:
            yield [], gr.update(), conversation_id, False
            return
        if messages[-1].role == "assistant":
            self.store.supersede(user, conversation_id, [messages[-1].id])
        params = params_from_controls(temperature, top_p, top_k, max_new_tokens,
                                      repetition_penalty, seed, think, thinking_budget,
                                      texts=self.texts)
        yield from self._reply(user, conversation_id, model_id, system, params,
                               session_key(request))

    def continue_reply(self, conversation_id: int | None, model_id: str, system: str,
                       temperature: float, top_p: float, top_k: float, max_new_tokens: float,
                       repetition_penalty: float, seed: float | None,
                       think: str | None = None, thinking_budget: float | None = None,
                       request: gr.Request = None) -> Iterator[tuple]:
        user = user_of(request)
        messages = self._messages(user, conversation_id)
        if not messages or messages[-1].role != "assistant" or \
                messages[-1].finish_reason != "length":
            gr.Info(self.texts("chat.continue_only_cut"))
            yield chatbot_messages(self.display(user, conversation_id), texts=self.texts), \
                gr.update(), conversation_id, False
            return
        if (why := self._cannot_continue(model_id)) is not None:
            gr.Info(why)
            yield chatbot_messages(self.display(user, conversation_id), texts=self.texts), \
                gr.update(), conversation_id, False
            return
        params = params_from_controls(temperature, top_p, top_k, max_new_tokens,
                                      repetition_penalty, seed, think, thinking_budget,
                                      texts=self.texts)
        params = replace(params, continue_final=True)
        yield from self._reply(user, conversation_id, model_id, system, params,
                               session_key(request), continuing=messages[-1])

    def _cannot_continue(self, model_id: str) -> str | None:
        """Why the model's engine cannot extend a cut reply, or None when it can."""
        try:
            engine = self.manager.engine(model_id)
        except (UnknownModel, ModelUnavailable) as exc:
            return str(exc)
        if engine.can_continue:
            return None
        return self.texts("chat.cannot_continue", model=self.model_name(model_id),
                          setting=self.texts("sampling.max_new_tokens"))

    def edit_last(self, conversation_id: int | None, request: gr.Request) -> tuple:
        """Put the last user message back in the box; Send then replaces it and its reply."""
        messages = self._messages(user_of(request), conversation_id)
        last_user = next((m for m in reversed(messages) if m.role == "user"), None)
        if last_user is None:
            return gr.update(), False
        gr.Info(self.texts("chat.editing"))
        return last_user.content, True

    def stop(self, request: gr.Request) -> None:
        self.stops.stop(session_key(request))

    # -- what the model sees -------------------------------------------------------------
    def inspect(self, conversation_id: int | None, request: gr.Request) -> tuple[str, str]:
        """The prompt the last reply was generated from, exactly, with what ended it."""
        try:
            conversation = self.store.get_conversation(user_of(request), conversation_id)
        except (NotFound, TypeError):
            return "", self.texts("chat.inspector.empty")
        replies = [i for i, m in enumerate(conversation.messages) if m.role == "assistant"]
        if not replies:
            return "", self.texts("chat.inspector.empty")
        reply = conversation.messages[replies[-1]]
        prompt = with_system(conversation.system_prompt, conversation.messages[:replies[-1]])
        params = GenParams(**(reply.params or {}))
        if (hidden := prompt_hidden(self.manager, reply.model or "",
                                    texts=self.texts)) is not None:
            return "", hidden
        grounding = self._grounding(user_of(request), conversation_id,
                                    conversation.messages[:replies[-1]])
        try:
            report, dropped = self.manager.inspect(reply.model or "", prompt, params, grounding)
        except (UnknownModel, ModelUnavailable, BackendError) as exc:
            return "", self.texts("chat.error", detail=str(exc))
        details = inspector_details(self.model_name(reply.model or ""), report, params,
                                    dropped, texts=self.texts)
        if reply.thought:
            title = thought_title(reply.thought_seconds, reply.thought_tokens, texts=self.texts)
            lead = self.texts("chat.inspector.thought", title=title.lower())
            details += (f"\n\n{lead}\n\n{THOUGHT_FENCE}text\n{reply.thought}\n"
                        f"{THOUGHT_FENCE}")
        return report.prompt, details

    def meter(self, draft: str, conversation_id: int | None, model_id: str, system: str,
              max_new_tokens: float, pending: list[int] | None = None,
              request: gr.Request = None) -> str:
        """Tokens the next prompt takes, against the room the context leaves; attachments
        (the conversation's and those waiting to be sent) are counted whole."""
        user = user_of(request)
        history = [Message(m.role, m.content) for m in self._messages(user, conversation_id)]
        ids = ([] if conversation_id is None else
               self.attachments.of_conversation(user, conversation_id)) + list(pending or [])
        grounding = self.attachments.grounding(user, ids, draft or "")
        try:
            meter = self.manager.context_meter(model_id, system or "", history, draft or "",
                                               int(max_new_tokens))
            whole = self.manager.context_meter(
                model_id, system or "", history, f"{draft or ''}\n\n{grounding.everything()}",
                int(max_new_tokens)) if grounding is not None else meter
        except (UnknownModel, ModelUnavailable):
            return self.texts("chat.meter.unloaded", model=self.model_name(model_id))
        except BackendError as exc:
            return self.texts("chat.meter.error", detail=str(exc))
        attached = whole.draft - meter.draft
        # Counts as plain digits (no grouping), as the meter has always shown them.
        attachments = self.texts("chat.meter.attachments", n=str(attached)) if attached else ""
        line = self.texts(
            "chat.meter.line", system=str(meter.system), history=str(meter.history),
            draft=str(meter.draft), attachments=attachments, total=str(whole.total),
            budget=str(meter.budget), bar=progress_bar(whole.total / max(1, meter.budget)))
        if attached and whole.total > meter.budget:
            line += "  \n" + self.texts("chat.meter.overflow")
        elif meter.left_out:
            line += "  \n" + self.texts("chat.meter.left_out", n=meter.left_out)
        return line

    # -- the reply -----------------------------------------------------------------------
    def _reply(self, user: str, conversation_id: int, model_id: str, system: str,
               params: GenParams, key: str,
               continuing: StoredMessage | None = None) -> Iterator[tuple]:
        stored = self._messages(user, conversation_id)
        prompt = with_system(system, stored)
        turns = self.display(user, conversation_id)  # with the attachments' chips
        name = self.model_name(model_id)
        shown = turns.pop() if continuing is not None else None
        outputs = lambda streaming: (  # noqa: E731
            chatbot_messages(turns, streaming, texts=self.texts), "", conversation_id, False)
        turns.append(Turn("assistant", shown.content if shown else ""))
        cancel = self.stops.begin(key)
        try:
            # The model starts first; the page hears of the new message with the first words
            # (or FIRST_WORDS_WAIT_S later), so updating it does not slow the prompt's reading.
            wanted = ReplyRequest(model_id, prompt, params,
                                  grounding=self._grounding(user, conversation_id, stored),
                                  user=user)
            with self.manager.start([wanted], cancel) as replies:
                live = replies.live[0]
                turns[-1] = live_turn(live, name, texts=self.texts, continued=shown)
                if not replies.wait_for_news(FIRST_WORDS_WAIT_S):
                    yield outputs(True)
                last_update = time.perf_counter()
                for _, event in replies:
                    first_words = isinstance(event, Chunk) and event.text == live.text != ""
                    now = time.perf_counter()
                    # The first words go out at once; the interval paces what follows.
                    if now - last_update >= UPDATE_INTERVAL_S or \
                            not isinstance(event, Chunk) or first_words:
                        last_update = now
                        turns[-1] = live_turn(live, name, texts=self.texts, continued=shown)
                        yield outputs(True)
            turns[-1] = live_turn(live, name, texts=self.texts, continued=shown)
            if not live.error:
                self._save(user, conversation_id, live, continuing)
        except (UnknownModel, ModelUnavailable, BackendError) as exc:
            turns[-1] = Turn("assistant", turns[-1].content, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - never a traceback on the page
            log.exception("reply from %s failed", model_id)
            turns[-1] = Turn("assistant", turns[-1].content,
                             error=self.texts("chat.unexpected_error", detail=str(exc)))
        finally:
            self.stops.end(key, cancel)
        yield outputs(False)

    def _save(self, user: str, conversation_id: int, live: LiveReply,
              continuing: StoredMessage | None) -> None:
        if continuing is not None:
            self.store.extend_message(user, conversation_id, continuing.id, live.text,
                                      live.meter.completion_tokens, live.meter.finish_reason,
                                      live.stopped)
            return
        if not live.text and live.stopped:
            return  # stopped before the first word: nothing to keep
        self.store.add_message(user, conversation_id, stored_reply(live))

    def _grounding(self, user: str, conversation_id: int | None,
                   messages: Sequence[StoredMessage]):
        """The conversation's attachments ranked for its last question, or None."""
        if conversation_id is None:
            return None
        question = next((m.content for m in reversed(messages) if m.role == "user"), "")
        return self.attachments.grounding(
            user, self.attachments.of_conversation(user, conversation_id), question)

    def _messages(self, user: str, conversation_id: int | None) -> list[StoredMessage]:
        if conversation_id is None:
            return []
        try:
            return self.store.get_conversation(user, conversation_id).messages
        except NotFound:
            return []

    def _supersede_last_exchange(self, user: str, conversation_id: int) -> None:
        messages = self._messages(user, conversation_id)
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
        if last_user is not None:
            self.store.supersede(user, conversation_id, [m.id for m in messages[last_user:]])


def prompt_hidden(manager: ModelManager, model_id: str,
                  texts: Texts | None = None) -> str | None:
    """Why the Inspector cannot show this model's exact prompt, or None when it can."""
    texts = texts or english()
    try:
        engine = manager.engine(model_id)
    except (UnknownModel, ModelUnavailable) as exc:
        return texts("chat.error", detail=str(exc))
    if engine.shows_prompt:
        return None
    return texts("chat.inspector.hidden", model=model_name(manager.registry, model_id))


def inspector_details(model_name: str, report: PromptReport, params: GenParams,
                      dropped: int, texts: Texts | None = None) -> str:
    """Where the chat template came from and how long the prompt is, then the facts as
    JSON (its keys stay English: they are data)."""
    texts = texts or english()
    facts = {"model": model_name, "template": report.template,
             "prompt_tokens": report.prompt_tokens, "stop_strings": list(report.stop_strings),
             "end_of_sequence_ids": list(report.eos_ids), "sampling": params.settings(),
             "messages_left_out": dropped}
    summary = texts("chat.inspector.summary", template=report.template,
                    tokens=str(report.prompt_tokens),
                    left_out=texts("chat.inspector.left_out", n=str(dropped)) if dropped else "")
    return (f"{summary}\n\n{CODE_FENCE}json\n{json.dumps(facts, indent=2, ensure_ascii=False)}"
            f"\n{CODE_FENCE}")
