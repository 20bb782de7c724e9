""""Answer with…" another model, and preferring one of a reply's versions from two models.

"Answer with…" asks the service for a new version of the last reply shown from the model
picked beside the button, with the settings under Parameters
(ConversationService.answer_with); it runs, streams, survives a reload and stops like any
reply (ChatHandlers.follow_new). A reply whose versions come from two models or more gets
"Prefer this one", "Tie" and "Both bad" in its "‹ 2/3 ›" row (chatui/branch_controls.py
draws the rows, this module what a reply's row adds); a click is an open vote
(chatcore/compare/preferences.py) the Compare tab's leaderboard counts.
"""
from __future__ import annotations

import html
from collections.abc import Callable, Iterator

import gradio as gr

from backends.sampling import SamplingSettings
from chatcore.compare.preferences import PREFER_OUTCOMES, Preference, PreferenceRefused
from chatcore.compare.votes import Vote
from chatcore.conversations.service import Asking
from chatcore.conversations.store import StoredMessage
from chatcore.conversations.tree import TooManyVersions, TreeError
from chatcore.generation.manager import ModelUnavailable, UnknownModel
from chatcore.i18n import Texts
from chatui.chat_handlers import ChatHandlers, user_of
from chatui.transcript import chatbot_messages

# A preference button; the rows' one click listener (branch_controls.FLIP_JS) sends its
# message and outcome.
PREFER_BUTTON = ('<button type="button" class="branch-prefer" data-message="{}" '
                 'data-prefer="{}" aria-pressed="{}">{}</button>')
MAX_EVENT_TEXT = 200  # of a malformed click's data or model id, quoted in its refusal


class AnswerControls:
    """Gradio callbacks for "Answer with…" and the preference buttons."""

    def __init__(self, chat: ChatHandlers, *, texts: Texts) -> None:
        self.chat = chat
        self.texts = texts
        self.preferences = chat.preferences

    # -- answer with another model -------------------------------------------------------
    def answer(self, conversation_id: int | None, model_id: str | None, system: str,
               settings: SamplingSettings, target: int | None = None,
               request: gr.Request = None) -> Iterator[tuple]:
        """A new version of reply `target` (a reply shown; None: the last one) from
        `model_id`, beside it."""
        user = user_of(request)
        if not model_id:
            gr.Info(self.texts("answer.pick"))
            yield self._unchanged(user, conversation_id)
            return
        conversation = self.chat.conversations.shown(user, conversation_id)
        last = next((m for m in reversed(conversation.messages) if m.role == "assistant"),
                    None) if conversation is not None else None
        if last is None:
            gr.Info(self.texts("answer.nothing"))
            yield self._unchanged(user, conversation_id)
            return
        # A model id is a registry's: a longer one is unknown anyway, and quoted bounded.
        asking = Asking(user, conversation_id, model_id[:MAX_EVENT_TEXT], system or "",
                        settings)
        try:
            reply_id = int(last.id or 0) if target in (None, "") else int(target)
            plan = self.chat.conversations.answer_with(asking, reply_id)
        except TooManyVersions as exc:
            yield self.chat.too_many(exc, user, conversation_id)
            return
        except (TreeError, UnknownModel, ModelUnavailable, TypeError, ValueError) as exc:
            gr.Warning(self.texts("answer.refused", detail=str(exc)[:MAX_EVENT_TEXT]))
            yield self._unchanged(user, conversation_id)
            return
        yield from self.chat.follow_new(plan, request)

    def _unchanged(self, user: str, conversation_id: int | None) -> tuple:
        return (chatbot_messages(self.chat.display(user, conversation_id), texts=self.texts),
                gr.update(), conversation_id, False)

    # -- preferring ----------------------------------------------------------------------
    def prefer(self, conversation_id: int | None, data: dict, user: str) -> None:
        """Store a preference button's vote; a refusal changes nothing and says why."""
        try:
            preference = Preference(user, int(conversation_id or 0), int(data["message"]),
                                    str(data["prefer"])[:MAX_EVENT_TEXT])
        except (KeyError, TypeError, ValueError):
            gr.Warning(self.texts("answer.refused", detail=repr(data)[:MAX_EVENT_TEXT]))
            return
        try:
            vote = self.preferences.prefer(preference)
        except PreferenceRefused as exc:
            gr.Warning(self.texts("answer.refused", detail=str(exc)))
            return
        gr.Info(self.texts("answer.voted", said=self._said(vote, preference.message_id)))

    def row_extra(self, user: str, conversation_id: int | None) -> Callable[[StoredMessage], str]:
        """What a reply's "‹ 2/3 ›" row adds: the model's name and, when its versions come
        from two models, the preference buttons and the vote already cast."""
        judging = self.preferences.judging(user, conversation_id)  # one read of the tree
        hidden = self.preferences.hidden(user, conversation_id, judging)  # blind mode

        def extra(message: StoredMessage) -> str:
            if message.role != "assistant" or message.id is None or conversation_id is None:
                return ""
            parts = []
            if message.id in hidden:
                parts.append(f'<span class="branch-model">· '
                             f'{html.escape(self.texts("answer.hidden_model"))}</span>')
            elif message.model:
                parts.append(f'<span class="branch-model">· '
                             f'{html.escape(self.chat.model_name(message.model))}</span>')
            judged = judging.get(message.parent_id)
            if judged is None or not judged.can_prefer:
                return "".join(parts)
            vote = judged.vote
            chosen = _chosen(vote, message.id)
            for outcome in PREFER_OUTCOMES:
                parts.append(PREFER_BUTTON.format(
                    message.id, outcome, "true" if outcome == chosen else "false",
                    html.escape(self.texts(f"answer.{outcome}"))))
            if vote is not None:
                parts.append(f'<span class="branch-vote">'
                             f'{html.escape(self._said(vote, message.id))}</span>')
            return "".join(parts)
        return extra

    # -- blind mode ----------------------------------------------------------------------
    def blind_now(self, request: gr.Request = None) -> bool:
        """The user's blind mode, for the checkbox when the page opens."""
        return self.preferences.blind(user_of(request))

    def set_blind(self, on: bool, conversation_id: int | None,
                  request: gr.Request = None) -> tuple:
        """Keep the choice, and show the chat and its rows with the names hidden or back."""
        user = user_of(request)
        self.preferences.set_blind(user, bool(on))
        return self._unchanged(user, conversation_id)[0]

    def _said(self, vote: Vote, message_id: int) -> str:
        """The vote in words, from the point of view of reply `message_id`."""
        chosen = _chosen(vote, message_id)
        if chosen == "" and vote.winner is not None:
            winner = vote.panes[vote.winner].model
            return self.texts("answer.said_other", model=self.chat.model_name(winner))
        return self.texts(f"answer.said_{chosen}")


def _chosen(vote: Vote | None, message_id: int) -> str:
    """Which button the vote pressed on reply `message_id`'s row: "prefer" when this reply
    was preferred, "tie" or "bad", "" for none (no vote, or another reply preferred)."""
    if vote is None:
        return ""
    if vote.winner is None:
        return vote.outcome
    return "prefer" if vote.message_ids[vote.winner] == message_id else ""
