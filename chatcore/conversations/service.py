"""The chat use case: what a conversation stores, when, and what supersedes what.

Every front end (the page today; the next ones: branches, images, tools) asks this service
to send, regenerate, edit, continue, open or delete, and only turns its results into its
own components. A reply is planned here (`PlannedReply`: the conversation, the request the
manager runs, the message it extends), run through `reply()`, and kept by it when it ends
cleanly: a failed reply leaves no message, a reply stopped before its first word leaves
none either, and a continued reply extends the message it continues.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from backends.base import GenParams
from backends.sampling import SamplingSettings, stored
from chatcore.conversations.attachments import AttachmentStore
from chatcore.conversations.store import Conversation, NotFound, Store, StoredMessage
from chatcore.generation.context import title_from, with_system
from chatcore.generation.manager import ModelManager, ModelUnavailable, UnknownModel
from chatcore.generation.replies import LiveReply, Replies, ReplyRequest


@dataclass(frozen=True)
class Asking:
    """Who asks, in which conversation (None: a new one), of which model, with what."""

    user: str
    conversation_id: int | None
    model_id: str
    system: str
    settings: SamplingSettings


@dataclass(frozen=True)
class PlannedReply:
    conversation_id: int
    request: ReplyRequest
    continuing: StoredMessage | None = None  # the cut reply this one extends


class CannotContinue(Exception):
    """A reply cannot be continued: `model` is None when the last message is not a cut
    reply, else the model whose engine cannot extend one (the message says why)."""

    def __init__(self, message: str, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model


class ConversationService:
    def __init__(self, store: Store, manager: ModelManager) -> None:
        self.store = store
        self.manager = manager
        self.attachments = AttachmentStore(store)

    # -- reading -------------------------------------------------------------------------
    def messages(self, user: str, conversation_id: int | None) -> list[StoredMessage]:
        """The conversation's current messages; none for no conversation or another's."""
        if conversation_id is None:
            return []
        try:
            return self.store.get_conversation(user, conversation_id).messages
        except NotFound:
            return []

    def open(self, user: str, conversation_id: int) -> tuple[Conversation, SamplingSettings]:
        """A conversation, superseded messages included, with the settings it last used
        (NotFound when it is not the user's)."""
        conversation = self.store.get_conversation(user, conversation_id,
                                                   include_superseded=True)
        return conversation, stored(conversation.params)

    def last_question(self, user: str, conversation_id: int | None) -> str | None:
        """The last user message, to edit: sending with `editing` then replaces it and
        everything after it."""
        return next((m.content for m in reversed(self.messages(user, conversation_id))
                     if m.role == "user"), None)

    # -- writing -------------------------------------------------------------------------
    def send(self, asking: Asking, text: str, attachments: Sequence[int] = (),
             editing: bool = False) -> PlannedReply:
        """Keep the user's message (a new conversation titled from it when there is none),
        with its attachments; `editing` first supersedes the last exchange."""
        user, conversation_id = asking.user, asking.conversation_id
        settings = asking.settings.model_dump()
        if conversation_id is not None and editing:
            self._supersede_last_exchange(user, conversation_id)
        if conversation_id is None:
            conversation_id = self.store.create_conversation(
                user, title_from(text), asking.model_id, asking.system, settings)
        else:
            self.store.update_settings(user, conversation_id, asking.model_id, asking.system,
                                       settings)
        message_id = self.store.add_message(user, conversation_id,
                                            StoredMessage("user", text))
        if attachments:
            self.attachments.attach(user, message_id, attachments)
        return self._plan(asking, conversation_id)

    def regenerate(self, asking: Asking) -> PlannedReply | None:
        """A new last reply; the one it replaces stays stored, superseded. None when the
        conversation has nothing to answer."""
        messages = self.messages(asking.user, asking.conversation_id)
        if not messages or asking.conversation_id is None:
            return None
        if messages[-1].role == "assistant":
            self.store.supersede(asking.user, asking.conversation_id, [messages[-1].id])
        self._remember(asking)
        return self._plan(asking, asking.conversation_id)

    def continue_reply(self, asking: Asking) -> PlannedReply:
        """The cut last reply, extended where it stopped (CannotContinue otherwise)."""
        messages = self.messages(asking.user, asking.conversation_id)
        if asking.conversation_id is None or not messages or \
                messages[-1].role != "assistant" or messages[-1].finish_reason != "length":
            raise CannotContinue("only a reply cut at its token limit can be continued")
        try:
            engine = self.manager.engine(asking.model_id)
        except (UnknownModel, ModelUnavailable) as exc:
            raise CannotContinue(str(exc), asking.model_id) from None
        if not engine.can_continue:
            raise CannotContinue(f"{asking.model_id}'s engine cannot continue a cut reply",
                                 asking.model_id)
        self._remember(asking)
        return self._plan(asking, asking.conversation_id, continuing=messages[-1])

    def delete(self, user: str, conversation_id: int) -> None:
        self.store.delete(user, conversation_id)

    # -- the reply -----------------------------------------------------------------------
    @contextmanager
    def reply(self, plan: PlannedReply, cancel: threading.Event) -> Iterator[Replies]:
        """Run the planned reply; when it ends without an error it is kept (`save`)."""
        with self.manager.start([plan.request], cancel) as replies:
            yield replies
        live = replies.live[0]
        if not live.error:
            self.save(plan, live)

    def save(self, plan: PlannedReply, live: LiveReply) -> None:
        user = plan.request.user
        if plan.continuing is not None:
            self.store.extend_message(user, plan.conversation_id, plan.continuing.id,
                                      live.text, live.meter.completion_tokens,
                                      live.meter.finish_reason, live.stopped)
        elif live.text or not live.stopped:  # stopped before the first word: nothing to keep
            self.store.add_message(user, plan.conversation_id, stored_reply(live))

    def grounding(self, user: str, conversation_id: int | None,
                  messages: Sequence[StoredMessage]):
        """The conversation's attachments ranked for its last question, or None."""
        if conversation_id is None:
            return None
        question = next((m.content for m in reversed(messages) if m.role == "user"), "")
        return self.attachments.grounding(
            user, self.attachments.of_conversation(user, conversation_id), question)

    # -- inside --------------------------------------------------------------------------
    def _plan(self, asking: Asking, conversation_id: int,
              continuing: StoredMessage | None = None) -> PlannedReply:
        messages = self.messages(asking.user, conversation_id)
        params = GenParams(asking.settings, continue_final=continuing is not None)
        request = ReplyRequest(asking.model_id, with_system(asking.system, messages), params,
                               grounding=self.grounding(asking.user, conversation_id,
                                                        messages),
                               user=asking.user)
        return PlannedReply(conversation_id, request, continuing)

    def _remember(self, asking: Asking) -> None:
        """The model, system prompt and settings the conversation last used: a reopened
        conversation shows them."""
        self.store.update_settings(asking.user, asking.conversation_id, asking.model_id,
                                   asking.system, asking.settings.model_dump())

    def _supersede_last_exchange(self, user: str, conversation_id: int) -> None:
        messages = self.messages(user, conversation_id)
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
        if last_user is not None:
            self.store.supersede(user, conversation_id, [m.id for m in messages[last_user:]])


def stored_reply(live: LiveReply) -> StoredMessage:
    """The assistant message the store keeps of a finished reply, with its figures."""
    meter = live.meter
    return StoredMessage(
        "assistant", live.text, model=live.model_id, params=live.params.sampling.model_dump(),
        time_to_first_token=meter.time_to_first_token,
        tokens_per_second=meter.tokens_per_second,
        prompt_tokens=meter.usage.prompt_tokens if meter.usage else None,
        completion_tokens=meter.completion_tokens, finish_reason=meter.finish_reason,
        stopped=live.stopped, thought=live.thought, thought_seconds=live.thought_seconds,
        thought_tokens=live.thought_tokens, sources=live.sources)
