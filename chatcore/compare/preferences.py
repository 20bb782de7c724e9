"""Preferring one of a reply's versions from two models: a vote, as Compare's are.

In the chat, "Answer with…" adds a version of a reply from another model beside it
(ConversationService.answer_with). When a question's replies come from at least two
models, saying which one is better ("prefer"), that they are as good ("tie") or that all
are bad is a comparison the person made with the names shown: it is stored in the same
VoteStore as Compare's votes, open (not blind), `source` "chat", with the conversation,
the question and the replies it judged. One preference per question: a second replaces the
first. Every front end (the page, later the API) asks this class, never the store.

Blind mode (a person's choice, kept in the store) hides the models' names on a question's
replies from two models or more until the person has said which is better: the page shows
"model hidden" in their footers and rows, also while a new one streams.
"""
from __future__ import annotations

from dataclasses import dataclass

from chatcore.compare.comparison import MAX_PANES
from chatcore.compare.votes import Vote, VotedPane, VoteStore
from chatcore.conversations.store import Conversation, NotFound, Store, StoredMessage

PREFER_OUTCOMES = ("prefer", "tie", "bad")  # the preferred reply better, a tie, all bad
BLIND_PREFERENCE = "versions_blind"  # the store's preference name: "on" or "off"


class PreferenceRefused(Exception):
    """A preference that cannot be stored; the message names the message and why."""


@dataclass(frozen=True)
class Preference:
    """Who prefers, in which conversation, which reply (the one shown), and how."""

    user: str
    conversation_id: int
    message_id: int
    outcome: str  # one of PREFER_OUTCOMES


@dataclass(frozen=True)
class Judging:
    """One question's replies as preferring sees them: the models that gave them, and the
    user's vote on them (None when not judged, or when one model gave them all)."""

    replies: tuple[StoredMessage, ...]
    models: set[str]
    vote: Vote | None

    @property
    def can_prefer(self) -> bool:
        return len(self.models) >= 2


class Preferences:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.votes = VoteStore(store)

    def versions(self, user: str, conversation_id: int, message_id: int) -> list[StoredMessage]:
        """Reply `message_id` and its siblings (the replies to the same question), oldest
        first; PreferenceRefused naming the message when it is no reply of the user's
        conversation."""
        return self._read(user, conversation_id, message_id)[1]

    def _read(self, user: str, conversation_id: int,
              message_id: int) -> tuple[Conversation, list[StoredMessage]]:
        """The conversation's whole tree, and the versions of reply `message_id`."""
        try:
            tree = self.store.get_conversation(user, conversation_id, include_superseded=True)
        except NotFound:
            raise PreferenceRefused(f"message {message_id} is not in conversation "
                                    f"{conversation_id}") from None
        target = next((m for m in tree.messages if m.id == message_id), None)
        if target is None:
            raise PreferenceRefused(f"message {message_id} is not in conversation "
                                    f"{conversation_id}")
        if target.role != "assistant":
            raise PreferenceRefused(f"message {message_id} is a question, not a reply")
        return tree, [m for m in tree.messages
                      if m.role == "assistant" and m.parent_id == target.parent_id]

    def prefer(self, preference: Preference) -> Vote:
        """Store the preference as an open vote (replacing the user's earlier one on the
        same question); PreferenceRefused, nothing stored, for a reply of another
        conversation or user, an unknown outcome, or versions from fewer than two models."""
        message_id = preference.message_id
        if preference.outcome not in PREFER_OUTCOMES:
            raise PreferenceRefused(f"message {message_id}: {preference.outcome[:40]!r} is "
                                    f"none of {', '.join(PREFER_OUTCOMES)}")
        tree, versions = self._read(preference.user, preference.conversation_id, message_id)
        preferred = next(m for m in versions if m.id == message_id)
        models = _models(versions)
        if len(models) < 2:
            raise PreferenceRefused(
                f"message {message_id}: its versions all come from one model "
                f"({preferred.model or 'unknown'}); preferring needs replies from two")
        # The reply preferred, then the newest reply of each other model (of the models
        # answered last: a vote, as Compare's, covers at most MAX_PANES).
        others = sorted((newest for model, newest in models.items()
                         if model != preferred.model), key=lambda m: m.id or 0)
        chosen = [preferred] + others[-(MAX_PANES - 1):]
        asked = next((m for m in tree.messages if m.id == preferred.parent_id), None)
        vote = Vote(prompt=asked.content if asked else "",
                    outcome={"prefer": _label(0)}.get(preference.outcome, preference.outcome),
                    panes=[_pane(i, m) for i, m in enumerate(chosen)],
                    system_prompt=tree.system_prompt, blind=False, source="chat",
                    conversation_id=preference.conversation_id,
                    question_id=preferred.parent_id, message_ids=[m.id for m in chosen])
        vote.id = self.votes.add(preference.user, vote)
        return vote

    # -- blind mode ----------------------------------------------------------------------
    def blind(self, user: str) -> bool:
        return self.store.preference(user, BLIND_PREFERENCE) == "on"

    def set_blind(self, user: str, on: bool) -> None:
        self.store.set_preference(user, BLIND_PREFERENCE, "on" if on else "off")

    def judging(self, user: str, conversation_id: int | None) -> dict[int | None, Judging]:
        """Each question of the conversation (every branch), by id, with its replies and,
        when they come from two models or more, the user's vote on them: one read of the
        tree for a whole page of rows."""
        if conversation_id is None:
            return {}
        try:
            tree = self.store.get_conversation(user, conversation_id, include_superseded=True)
        except NotFound:
            return {}
        replies: dict[int | None, list[StoredMessage]] = {}
        for message in tree.messages:
            if message.role == "assistant":
                replies.setdefault(message.parent_id, []).append(message)
        return {question: Judging(tuple(versions), set(_models(versions)),
                                  self.votes.on_question(user, conversation_id, question)
                                  if len(_models(versions)) >= 2 else None)
                for question, versions in replies.items()}

    def hidden(self, user: str, conversation_id: int | None,
               judging: dict[int | None, Judging] | None = None) -> set[int]:
        """The replies whose model blind mode hides: every reply to a question answered by
        two models or more that the user has not judged yet (none with blind mode off).
        `judging`: the conversation's, when the caller has read it already."""
        if conversation_id is None or not self.blind(user):
            return set()
        judging = self.judging(user, conversation_id) if judging is None else judging
        return {int(m.id or 0) for judged in judging.values()
                if judged.can_prefer and judged.vote is None for m in judged.replies}

    def hides_new(self, user: str, conversation_id: int, question_id: int | None,
                  model_id: str) -> bool:
        """Whether a new reply from `model_id` to question `question_id` streams with its
        model hidden: blind mode is on, another model answered that question, and the user
        has not judged its replies yet."""
        if question_id is None or not self.blind(user):
            return False
        try:
            tree = self.store.get_conversation(user, conversation_id, include_superseded=True)
        except NotFound:
            return False
        models = {m.model for m in tree.messages
                  if m.role == "assistant" and m.parent_id == question_id and m.model}
        return bool(models - {model_id}) and \
            self.votes.on_question(user, conversation_id, question_id) is None

    def current(self, user: str, conversation_id: int, message_id: int) -> Vote | None:
        """The user's vote on the question reply `message_id` answers, if any."""
        try:
            versions = self.versions(user, conversation_id, message_id)
        except PreferenceRefused:
            return None
        return self.votes.on_question(user, conversation_id, versions[0].parent_id)


def _models(versions: list[StoredMessage]) -> dict[str, StoredMessage]:
    """Each model among the versions, with its newest reply."""
    newest: dict[str, StoredMessage] = {}
    for message in versions:
        if message.model:
            newest[message.model] = message
    return newest


def _label(index: int) -> str:
    return chr(ord("A") + index) if index < 26 else f"R{index + 1}"


def _pane(index: int, message: StoredMessage) -> VotedPane:
    return VotedPane(label=_label(index), model=message.model or "", params=message.params or {},
                     reply=message.content, time_to_first_token=message.time_to_first_token,
                     tokens_per_second=message.tokens_per_second,
                     completion_tokens=message.completion_tokens,
                     finish_reason=message.finish_reason, thought=message.thought,
                     thought_seconds=message.thought_seconds,
                     thought_tokens=message.thought_tokens)
