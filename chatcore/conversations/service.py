"""The chat use case: what a conversation stores, when, and where in its tree.

Every front end (the page today; the next ones: branches, images, tools) asks this service
to send, regenerate, edit, continue, open or delete, and only turns its results into its
own components. A reply is planned here (`PlannedReply`: the conversation, the request the
manager runs, the message it extends), run through `reply()`, and kept by it when it ends
cleanly: a failed reply leaves no message, a reply stopped before its first word leaves
none either, and a continued reply extends the message it continues. Regenerating and
editing add siblings (chatcore/conversations/tree.py), so every version stays reachable.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from backends.base import GenParams
from backends.sampling import SamplingSettings, stored
from chatcore.conversations.attachments import AttachmentStore
from chatcore.conversations.store import AT_END, Conversation, NotFound, Store, StoredMessage
from chatcore.conversations.tree import MAX_SIBLINGS, TooManyVersions, TreeError
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
    # The message the reply answers: a new reply is its child, beside any earlier versions.
    parent_id: int | None = None


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

    def shown(self, user: str, conversation_id: int | None) -> Conversation | None:
        """The conversation's shown branch with each message's place among its versions;
        None for no conversation or another's."""
        if conversation_id is None:
            return None
        try:
            return self.store.get_conversation(user, conversation_id)
        except NotFound:
            return None

    def flip(self, user: str, conversation_id: int, message_id: int, index: int) -> None:
        """Show version `index` (from 1) of a message, and the later messages its branch
        showed last (TreeError naming the message when there is no such version)."""
        self.store.flip(user, conversation_id, message_id, index)

    def open(self, user: str, conversation_id: int) -> tuple[Conversation, SamplingSettings]:
        """A conversation, superseded messages included, with the settings it last used
        (NotFound when it is not the user's)."""
        conversation = self.store.get_conversation(user, conversation_id,
                                                   include_superseded=True)
        return conversation, stored(conversation.params)

    def last_question(self, user: str, conversation_id: int | None) -> StoredMessage | None:
        """The last user message shown, to edit: sending with `editing` set to its id then
        adds a new version of it (its answer comes with it)."""
        return next((m for m in reversed(self.messages(user, conversation_id))
                     if m.role == "user"), None)

    # -- writing -------------------------------------------------------------------------
    def send(self, asking: Asking, text: str, attachments: Sequence[int] = (),
             editing: int | bool | None = None) -> PlannedReply:
        """Keep the user's message (a new conversation titled from it when there is none),
        with its attachments. `editing`, a question's id on the branch shown (True: the last
        question shown), makes the message a new version of that question, beside it, on a
        branch of its own; the old one stays reachable. TreeError naming the message when
        it is no question shown, TooManyVersions past MAX_SIBLINGS; nothing stored then."""
        user, conversation_id = asking.user, asking.conversation_id
        settings = asking.settings.model_dump()
        parent_id: int | None = AT_END
        if conversation_id is not None and editing is not None and editing is not False:
            parent_id = self._edited_parent(user, conversation_id, editing)
        if conversation_id is None:
            conversation_id = self.store.create_conversation(
                user, title_from(text), asking.model_id, asking.system, settings)
        else:
            self.store.update_settings(user, conversation_id, asking.model_id, asking.system,
                                       settings)
        message_id = self.store.add_message(user, conversation_id,
                                            StoredMessage("user", text), parent_id)
        if attachments:
            self.attachments.attach(user, message_id, attachments)
        return self._plan(asking, conversation_id, self.messages(user, conversation_id))

    def regenerate(self, asking: Asking) -> PlannedReply | None:
        """A new version of the last reply shown, beside it (the reply answers the same
        question); None when the conversation has nothing to answer, TreeError when the
        question already has MAX_SIBLINGS replies, before any is generated."""
        conversation = self.shown(asking.user, asking.conversation_id)
        if conversation is None or not conversation.messages:
            return None
        messages = conversation.messages
        if messages[-1].role == "assistant":
            last = messages.pop()
            if conversation.positions[last.id].count >= MAX_SIBLINGS:
                raise TooManyVersions(last.parent_id, f"message {last.parent_id}")
        self._remember(asking)
        return self._plan(asking, conversation.id, messages)

    def answer_with(self, asking: Asking, message_id: int) -> PlannedReply:
        """A new version of reply `message_id` (on the branch shown) from `asking`'s model
        and settings, beside it: the same question answered by another model. The
        conversation keeps the model and settings it last used (the next message goes to
        the page's picker, not to this model). TreeError naming the message when it is not
        a reply shown in the user's conversation, TooManyVersions past MAX_SIBLINGS,
        UnknownModel or ModelUnavailable for a model that cannot answer; nothing stored."""
        conversation = self.shown(asking.user, asking.conversation_id)
        messages = conversation.messages if conversation is not None else []
        index = next((i for i, m in enumerate(messages) if m.id == message_id), None)
        if index is None or messages[index].role != "assistant":
            raise TreeError(f"message {message_id} is not a reply shown in conversation "
                            f"{asking.conversation_id}")
        if conversation.positions[message_id].count >= MAX_SIBLINGS:
            raise TooManyVersions(messages[index].parent_id,
                                  f"message {messages[index].parent_id}")
        self.manager.entry(asking.model_id)
        return self._plan(asking, conversation.id, messages[:index])

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
        return self._plan(asking, asking.conversation_id, messages, continuing=messages[-1])

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
            self.store.add_message(user, plan.conversation_id, stored_reply(live),
                                   plan.parent_id)

    def grounding(self, user: str, conversation_id: int | None,
                  messages: Sequence[StoredMessage]):
        """The conversation's attachments ranked for its last question, or None."""
        if conversation_id is None:
            return None
        question = next((m.content for m in reversed(messages) if m.role == "user"), "")
        return self.attachments.grounding(
            user, self.attachments.of_conversation(user, conversation_id), question)

    # -- inside --------------------------------------------------------------------------
    def _edited_parent(self, user: str, conversation_id: int, editing: int | bool) -> int | None:
        """The parent a new version of question `editing` goes under (checked first)."""
        conversation = self.shown(user, conversation_id)
        questions = [m for m in conversation.messages if m.role == "user"] \
            if conversation is not None else []
        if editing is True:
            if not questions:
                return AT_END
            editing = int(questions[-1].id or 0)
        question = next((m for m in questions if m.id == editing), None)
        if question is None:
            raise TreeError(f"message {editing} is not a question shown in conversation "
                            f"{conversation_id}")
        if conversation.positions[question.id].count >= MAX_SIBLINGS:
            raise TooManyVersions(question.parent_id, f"message {question.id}")
        return question.parent_id

    def _plan(self, asking: Asking, conversation_id: int, messages: list[StoredMessage],
              continuing: StoredMessage | None = None) -> PlannedReply:
        """A reply to `messages` (the branch up to what it answers, or extends)."""
        params = GenParams(asking.settings, continue_final=continuing is not None)
        request = ReplyRequest(asking.model_id, with_system(asking.system, messages), params,
                               grounding=self.grounding(asking.user, conversation_id,
                                                        messages),
                               user=asking.user)
        parent = continuing.parent_id if continuing else messages[-1].id if messages else None
        return PlannedReply(conversation_id, request, continuing, parent)

    def _remember(self, asking: Asking) -> None:
        """The model, system prompt and settings the conversation last used: a reopened
        conversation shows them."""
        self.store.update_settings(asking.user, asking.conversation_id, asking.model_id,
                                   asking.system, asking.settings.model_dump())


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
