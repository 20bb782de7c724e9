"""Replies: send, regenerate, edit the last message, continue a cut reply, stop."""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from collections.abc import Iterator

import gradio as gr

from backends.base import BackendError, Chunk, Message
from backends.sampling import SamplingSettings
from chatcore.compare.preferences import Preferences
from chatcore.conversations.service import (
    Asking,
    CannotContinue,
    ConversationService,
    PlannedReply,
)
from chatcore.conversations.running import Refused, RunningReplies, RunningReply
from chatcore.conversations.store import MAX_MESSAGE_CHARS, Store
from chatcore.conversations.tree import MAX_SIBLINGS, TooManyVersions, TreeError
from chatcore.generation.manager import ModelManager, ModelUnavailable, UnknownModel
from chatcore.generation.replies import progress_bar
from chatcore.i18n import Texts
from chatui.stop_registry import StopRegistry
from chatcore.costs.book import CostBook
from chatui.cost_controls import CostWords
from chatui.inspector_text import last_reply_prompt
from chatui.transcript import Turn, chatbot_messages, live_turn, model_name, turns_from

log = logging.getLogger(__name__)

HIDDEN_MODEL = ":hidden:"  # stands for the model of a reply blind mode hides (no real id)

# Re-rendering a long reply on every token is what makes browsers fall behind: send the
# page at most one update per interval (10 a second), whatever the token rate: on a small
# machine each update costs CPU the model needs (measured: 0.93 of raw speed at 20 a second,
# 0.97 at 10; see docs/benchmarks).
UPDATE_INTERVAL_S = 0.1
# On a small machine the page's own work competes with the model for the cores; a new
# message is shown with the reply's first words when they come this quickly.
FIRST_WORDS_WAIT_S = 0.25


def user_of(request: gr.Request | None) -> str:
    """The signed-in user with --auth; everyone shares "" without it."""
    return (getattr(request, "username", None) or "") if request is not None else ""


def session_key(request: gr.Request | None) -> str:
    return (request.session_hash if request is not None else None) or "anonymous"


class ChatHandlers:
    """Gradio callbacks for one chat page; the store holds what was said, the manager runs."""

    def __init__(self, manager: ModelManager, store: Store, *, texts: Texts,
                 stops: StopRegistry | None = None, costs: CostBook | None = None,
                 running: RunningReplies | None = None) -> None:
        """`running`: the app's running replies (every page's chat shares them)."""
        self.texts = texts
        self.manager = manager
        self.store = store
        self.conversations = ConversationService(store, manager)
        self.attachments = self.conversations.attachments
        self.stops = stops or StopRegistry()
        self.running = running or RunningReplies(self.conversations)
        self.costs = CostWords(manager, costs or CostBook(store), texts=texts)
        self.preferences = Preferences(store)  # votes on a reply's versions; blind mode

    def model_name(self, model_id: str) -> str:
        return model_name(self.manager.registry, model_id)

    def hidden_name(self, model_id: str) -> str:
        """A model's name, or "model hidden" for a reply blind mode hides."""
        return self.texts("answer.hidden_model") if model_id == HIDDEN_MODEL \
            else self.model_name(model_id)

    def display(self, user: str, conversation_id: int | None,
                until: int | None = None) -> list[Turn]:
        """The bubbles of the branch shown (up to message `until`, when given), each
        message's attachments as chips under it, "‹ 2/3 ›" in the footer of a reply with
        versions (every message's versions: the rows under the chat, branch_controls.py)."""
        conversation = self.conversations.shown(user, conversation_id)
        messages = conversation.messages if conversation else []
        if until is not None:
            messages = messages[:next((i + 1 for i, m in enumerate(messages)
                                       if m.id == until), len(messages))]
        if hidden := self.preferences.hidden(user, conversation_id):  # blind mode
            messages = [replace(m, model=HIDDEN_MODEL) if m.id in hidden else m
                        for m in messages]
        turns = turns_from(messages, self.hidden_name, texts=self.texts,
                           cost=self.costs.stored)
        if conversation is not None:
            attached = self.attachments.by_message(user, conversation_id)
            for message, turn in zip(messages, turns):
                if message.id in attached:
                    turn.footer = "  ".join(a.chip(texts=self.texts) for a in attached[message.id])
                place = conversation.positions.get(message.id)
                if message.role == "assistant" and place is not None and place.count > 1:
                    version = f"‹ {place.index}/{place.count} ›"
                    turn.footer = f"{version} · {turn.footer}" if turn.footer else version
        return turns

    def too_many(self, exc: TooManyVersions, user: str, conversation_id: int | None) -> tuple:
        """A 33rd version refused: the chat as it was, and why."""
        gr.Warning(self.texts("branches.too_many", id=str(exc.parent_id or ""),
                              count=str(MAX_SIBLINGS)))
        return chatbot_messages(self.display(user, conversation_id), texts=self.texts), \
            gr.update(), conversation_id, False

    # -- actions -------------------------------------------------------------------------
    def send(self, message: str, conversation_id: int | None, editing: int | bool | None,
             model_id: str,
             system: str, settings: SamplingSettings, pending: list[int] | None = None,
             request: gr.Request = None) -> Iterator[tuple]:
        """`pending`: attachments for this message (they go with it, and stay with the
        conversation for follow-up questions); `editing`: the id of the question shown that
        the message is a new version of (True: the last one), else a new question."""
        user = user_of(request)
        if not (message or "").strip() and pending:
            message = self.texts("chat.attached_prompt")
        if not (message or "").strip():
            yield chatbot_messages(self.display(user, conversation_id), texts=self.texts), \
                message, conversation_id, editing
            return
        if (refusal := self._refusal(user, conversation_id)) is not None:
            yield refusal
            return
        asking = Asking(user, conversation_id, model_id, system or "", settings)
        try:
            plan = self.conversations.send(asking, message, pending or (), editing)
        except TooManyVersions as exc:
            yield self.too_many(exc, user, conversation_id)
            return
        except TreeError as exc:  # a question no longer shown (another tab flipped it)
            gr.Warning(self.texts("branches.refused", detail=str(exc)))
            yield chatbot_messages(self.display(user, conversation_id), texts=self.texts), \
                message, conversation_id, None
            return
        yield from self._reply(plan, session_key(request))

    def regenerate(self, conversation_id: int | None, model_id: str, system: str,
                   settings: SamplingSettings, request: gr.Request = None) -> Iterator[tuple]:
        """A new version of the last reply, beside the earlier ones (‹ › flips back)."""
        if (refusal := self._refusal(user_of(request), conversation_id)) is not None:
            yield refusal
            return
        asking = Asking(user_of(request), conversation_id, model_id, system or "", settings)
        try:
            plan = self.conversations.regenerate(asking)
        except TooManyVersions as exc:
            yield self.too_many(exc, asking.user, conversation_id)
            return
        if plan is None:
            yield [], gr.update(), conversation_id, False
            return
        yield from self._reply(plan, session_key(request))

    def continue_reply(self, conversation_id: int | None, model_id: str, system: str,
                       settings: SamplingSettings,
                       request: gr.Request = None) -> Iterator[tuple]:
        user = user_of(request)
        if (refusal := self._refusal(user, conversation_id)) is not None:
            yield refusal
            return
        asking = Asking(user, conversation_id, model_id, system or "", settings)
        try:
            plan = self.conversations.continue_reply(asking)
        except CannotContinue as exc:
            gr.Info(self.texts("chat.continue_only_cut") if exc.model is None else
                    self.texts("chat.cannot_continue", model=self.model_name(exc.model),
                               setting=self.texts("sampling.max_new_tokens")))
            yield chatbot_messages(self.display(user, conversation_id), texts=self.texts), \
                gr.update(), conversation_id, False
            return
        yield from self._reply(plan, session_key(request))

    def edit_last(self, conversation_id: int | None, request: gr.Request) -> tuple:
        """Put the last question shown back in the box; Send then adds a new version of it
        (with its own reply) beside the old one."""
        question = self.conversations.last_question(user_of(request), conversation_id)
        if question is None:
            return gr.update(), None
        gr.Info(self.texts("chat.editing"))
        return question.content, question.id

    def edit_message(self, history: list[dict], conversation_id: int | None, model_id: str,
                     system: str, settings: SamplingSettings, edit: gr.EditData,
                     request: gr.Request = None) -> Iterator[tuple]:
        """A question edited in place in the chat (any question shown, not only the last):
        a new version of it beside the old one, answered on a branch of its own."""
        shown_before = [m for m in (history or [])[:edit.index]
                        if isinstance(m, dict) and m.get("role") == "user"]
        questions = [m for m in self.conversations.messages(user_of(request), conversation_id)
                     if m.role == "user"]
        text = edit.value if isinstance(edit.value, str) else ""
        if len(shown_before) >= len(questions) or not text.strip():
            yield chatbot_messages(self.display(user_of(request), conversation_id),
                                   texts=self.texts), gr.update(), conversation_id, None
            return
        yield from self.send(text[:MAX_MESSAGE_CHARS], conversation_id,
                             questions[len(shown_before)].id, model_id, system, settings,
                             request=request)

    def stop(self, conversation_id: int | None = None, request: gr.Request = None) -> None:
        """End the reply running in the conversation shown (started in any of the user's
        tabs), else the one this tab started before it knew its conversation."""
        if not self.running.stop(user_of(request), conversation_id):
            self.stops.stop(session_key(request))

    def attach(self, conversation_id: int | None,
               request: gr.Request = None) -> Iterator[tuple]:
        """Follow the reply still running in the conversation just opened (started before
        a reload, or in another tab): its text so far, then the rest as it comes."""
        user = user_of(request)
        run = self.running.find(user, conversation_id)
        if run is None:
            yield gr.update(), gr.update(), gr.update(), gr.update()
            return
        with run.guard:  # the reply is either stored already, or not yet and followed
            if run.finished:
                yield chatbot_messages(self.display(user, conversation_id), texts=self.texts), \
                    gr.update(), conversation_id, gr.update()
                return
            turns = self._turns(run.plan)
        yield from self._follow(run, turns, session_key(request), joining=True)

    # -- what the model sees -------------------------------------------------------------
    def inspect(self, conversation_id: int | None, request: gr.Request) -> tuple[str, str]:
        """The prompt the last reply was generated from, exactly, with what ended it."""
        return last_reply_prompt(self, user_of(request), conversation_id)

    def attachment_tokens(self, user: str, model_id: str, ids: list[int]) -> dict[int, int]:
        """Each attachment's tokens, whole, in the model's tokenizer: what its chip shows and
        the meter adds up; {} while the model is not loaded."""
        grounding = self.attachments.grounding(user, ids, "")
        try:
            return {attachment: self.manager.context_meter(model_id, "", [], block, 0).draft
                    for attachment, block in (grounding.each() if grounding else {}).items()}
        except (UnknownModel, ModelUnavailable, BackendError):
            return {}

    def meter(self, draft: str, conversation_id: int | None, model_id: str, system: str,
              max_new_tokens: float, pending: list[int] | None = None,
              request: gr.Request = None) -> str:
        """Tokens the next prompt takes, against the room the context leaves; attachments
        (the conversation's and those waiting to be sent) are counted whole, each as its
        chip says."""
        user = user_of(request)
        history = [Message(m.role, m.content) for m in self.conversations.messages(user, conversation_id)]
        ids = ([] if conversation_id is None else
               self.attachments.of_conversation(user, conversation_id)) + list(pending or [])
        try:
            meter = self.manager.context_meter(model_id, system or "", history, draft or "",
                                               int(max_new_tokens))
        except (UnknownModel, ModelUnavailable):
            return self.texts("chat.meter.unloaded", model=self.model_name(model_id))
        except BackendError as exc:
            return self.texts("chat.meter.error", detail=str(exc))
        attached = sum(self.attachment_tokens(user, model_id, ids).values())
        total = meter.total + attached
        # Counts as plain digits (no grouping), as the meter has always shown them.
        attachments = self.texts("chat.meter.attachments", n=str(attached)) if attached else ""
        line = self.texts(
            "chat.meter.line", system=str(meter.system), history=str(meter.history),
            draft=str(meter.draft), attachments=attachments, total=str(total),
            budget=str(meter.budget), bar=progress_bar(total / max(1, meter.budget)))
        if attached and total > meter.budget:
            line += "  \n" + self.texts("chat.meter.overflow")
        elif meter.left_out:
            line += "  \n" + self.texts("chat.meter.left_out", n=meter.left_out)
        return line

    # -- the reply -----------------------------------------------------------------------
    def follow_new(self, plan: PlannedReply, request: gr.Request = None) -> Iterator[tuple]:
        """Run a reply planned elsewhere (chatui/answer_controls.py) as Send's replies run."""
        yield from self._reply(plan, session_key(request))

    def _reply(self, plan: PlannedReply, key: str) -> Iterator[tuple]:
        """Start the reply on its own (it runs to its end if this tab goes away) and
        follow it."""
        user, conversation_id = plan.request.user, plan.conversation_id
        try:
            run = self.running.start(plan, followed=True)
        except Refused as exc:
            yield self._refused(exc, user, conversation_id)
            return
        yield from self._follow(run, self._turns(plan), key)

    def _turns(self, plan: PlannedReply) -> list[Turn]:
        """The branch up to what the reply answers (a regenerated reply's older versions
        are one flip away), with the attachments' chips."""
        return self.display(plan.request.user, plan.conversation_id,
                            None if plan.continuing is not None else plan.parent_id)

    def _follow(self, run: RunningReply, turns: list[Turn], key: str,
                joining: bool = False) -> Iterator[tuple]:
        """`turns`: the conversation as stored (with the attachments' chips), without the
        running reply; `joining`: this page joins a reply already running (the message box
        keeps its draft, and the text so far is shown at once)."""
        plan = run.plan
        model_id, conversation_id = plan.request.model_id, plan.conversation_id
        blind = plan.continuing is None and self.preferences.hides_new(
            plan.request.user, conversation_id, plan.parent_id, model_id)
        name = self.hidden_name(HIDDEN_MODEL if blind else model_id)
        shown = turns.pop() if plan.continuing is not None else None
        outputs = lambda streaming: (  # noqa: E731
            chatbot_messages(turns, streaming, texts=self.texts),
            gr.update() if joining else "", conversation_id, False)
        turns.append(Turn("assistant", shown.content if shown else ""))
        run.follow(joining)
        self.stops.follow(key, run.cancel)
        live, position, replaying = run.reader(), 0, joining
        try:
            # The model starts first; the page hears of the new message with the first words
            # (or FIRST_WORDS_WAIT_S later), so updating it does not slow the prompt's reading.
            news = run.events_after(0, FIRST_WORDS_WAIT_S)
            turns[-1] = live_turn(live, name, texts=self.texts, continued=shown)
            if not news:
                yield outputs(True)
            last_update = time.perf_counter()
            while news or not run.finished:
                for event in news:
                    position += 1
                    live.apply(event)
                    first_words = isinstance(event, Chunk) and event.text == live.text != ""
                    now = time.perf_counter()
                    # The first words go out at once (a page that joins a running reply
                    # shows the text so far, once it has read it); the interval paces what
                    # follows.
                    if replaying:
                        if not run.caught_up(position):
                            continue
                        replaying = False
                    elif not (now - last_update >= UPDATE_INTERVAL_S or first_words or
                              not isinstance(event, Chunk)):
                        continue
                    last_update = now
                    turns[-1] = live_turn(live, name, texts=self.texts, continued=shown)
                    yield outputs(True)
                news = run.events_after(position, 1.0)
        finally:
            run.unfollow()
            self.stops.end(key, run.cancel)
        turns[-1] = self._ended(run, turns[-1], name, shown, blind)
        yield outputs(False)

    def _ended(self, run: RunningReply, turn: Turn, name: str, shown: Turn | None,
               blind: bool = False) -> Turn:
        """The bubble of a reply that ended: with its figures and cost (none in blind mode:
        a price could name the model), or its error."""
        exc = run.failure
        if exc is None and run.live is not None:
            return live_turn(run.live, name, texts=self.texts, continued=shown,
                             cost="" if blind else self.costs.reply(run.live))
        if isinstance(exc, (UnknownModel, ModelUnavailable, BackendError)):
            return Turn("assistant", turn.content, error=str(exc))
        log.error("reply from %s failed", run.plan.request.model_id, exc_info=exc)
        return Turn("assistant", turn.content,
                    error=self.texts("chat.unexpected_error", detail=str(exc)))

    def _refusal(self, user: str, conversation_id: int | None) -> tuple | None:
        """What the page shows when no reply may start now, or None when one may."""
        try:
            self.running.admit(user, conversation_id)
        except Refused as exc:
            return self._refused(exc, user, conversation_id)
        return None

    def _refused(self, exc: Refused, user: str, conversation_id: int | None) -> tuple:
        gr.Warning(self.texts("running.busy") if exc.conversation is not None else
                   self.texts("running.too_many", n=exc.limit) if exc.limit else
                   self.texts("running.stopping"))
        return chatbot_messages(self.display(user, conversation_id), texts=self.texts), \
            gr.update(), conversation_id, False
