"""The "‹ 2/3 ›" rows under the chat: flip between a message's versions.

Every message on the branch shown that has siblings gets a row: its name ("Reply 2"), a
previous and a next button (real buttons with aria-labels, so Tab and Enter reach them) and
its place, "2/3". A click asks the service to flip (chatcore/conversations/tree.py); the
rest of the thread follows the branch chosen. A reply's row also names its model and, when
its versions come from two models, offers to prefer one (chatui/answer_controls.py).
"""
from __future__ import annotations

import html
import logging
from collections.abc import Callable

import gradio as gr

from chatcore.conversations.store import Conversation, NotFound, StoredMessage
from chatcore.conversations.tree import TreeError
from chatcore.i18n import Texts
from chatui.answer_controls import AnswerControls
from chatui.chat_handlers import ChatHandlers, user_of
from chatui.transcript import chatbot_messages

log = logging.getLogger(__name__)

# One listener on the whole block (its rows are re-rendered): a button says which message
# to flip and to which version.
FLIP_JS = """
element.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-message]');
  if (!button || button.disabled) return;
  trigger('click', {message: Number(button.dataset.message),
                    index: Number(button.dataset.index),
                    prefer: button.dataset.prefer || null});
});
"""
BRANCH_CSS = """
.branch-row { display: flex; flex-wrap: wrap; gap: 0.4em; align-items: center;
  font-size: 0.85em; }
.branch-row span, .branch-row button { white-space: nowrap; }
.branch-row button { min-width: 2em; border: 1px solid var(--border-color-primary);
  border-radius: var(--radius-sm); background: var(--button-secondary-background-fill); }
.branch-row button:disabled { opacity: 0.4; }
.branch-row button:focus-visible { outline: 2px solid var(--color-accent); }
.branch-row button.branch-prefer { padding: 0 0.5em; font: inherit; }
.branch-row button[aria-pressed="true"] { border-color: var(--color-accent); font-weight: 600; }
"""
# The markup, filled with escaped words from the catalog.
BUTTON = ('<button type="button" class="branch-flip" aria-label="{}" data-message="{}" '
          'data-index="{}"{}>{}</button>')
ROW = ('<div class="branch-row" role="group" aria-label="{}" data-message="{}">'
       '<span>{}</span>{}<span class="branch-place">{}</span>{}{}</div>')


def branch_rows(conversation: Conversation | None, *, texts: Texts,
                extra: Callable[[StoredMessage], str] | None = None) -> str:
    """The rows' HTML for the branch shown ("" when no message has another version);
    `extra`: markup a message's row ends with (a reply's model, its preference buttons)."""
    if conversation is None:
        return ""
    rows, counted = [], {"user": 0, "assistant": 0}
    for message in conversation.messages:
        counted[message.role] += 1
        place = conversation.positions.get(message.id)
        if place is None or place.count < 2:
            continue
        key = "branches.question" if message.role == "user" else "branches.reply"
        what = texts(key, number=str(counted[message.role]))
        buttons = []
        for symbol, label, index in (("‹", "branches.previous", place.index - 1),
                                     ("›", "branches.next", place.index + 1)):
            disabled = "" if 1 <= index <= place.count else " disabled"
            buttons.append(BUTTON.format(html.escape(texts(label, what=what)), message.id,
                                         index, disabled, symbol))
        position = texts("branches.position", what=what, index=str(place.index),
                         count=str(place.count))
        rows.append(ROW.format(html.escape(position), message.id, html.escape(what),
                               buttons[0], f"{place.index}/{place.count}", buttons[1],
                               extra(message) if extra else ""))
    return "\n".join(rows)


def answer_targets(conversation: Conversation | None, *, texts: Texts) -> dict:
    """The replies shown, as "Answer with…" offers them ("Reply 2"), the last one picked."""
    replies = [m for m in conversation.messages if m.role == "assistant"] \
        if conversation is not None else []
    choices = [(texts("branches.reply", number=str(number)), int(m.id or 0))
               for number, m in enumerate(replies, 1)]
    return gr.update(choices=choices, value=choices[-1][1] if choices else None)


class BranchControls:
    """Gradio callbacks for the rows: what they show, and a flip."""

    def __init__(self, chat: ChatHandlers, *, texts: Texts,
                 answers: AnswerControls | None = None) -> None:
        self.chat = chat
        self.texts = texts
        self.answers = answers

    def rows(self, conversation_id: int | None, request: gr.Request) -> tuple[str, dict]:
        """The rows, and the replies "Answer with…" can answer again (the last one picked)."""
        user = user_of(request)
        conversation = self.chat.conversations.shown(user, conversation_id)
        extra = self.answers.row_extra(user, conversation_id) if self.answers else None
        return (branch_rows(conversation, texts=self.texts, extra=extra),
                answer_targets(conversation, texts=self.texts))

    def flip(self, conversation_id: int | None, event: gr.EventData,
             request: gr.Request) -> tuple:
        """Show the version a button asked for; a bad request changes nothing and says
        why (a message gone, a version out of range)."""
        user = user_of(request)
        data = getattr(event, "_data", None) or {}
        if conversation_id is None:  # a row left from a chat since closed: nothing to flip
            return [], "", answer_targets(None, texts=self.texts)
        if data.get("prefer") and self.answers is not None:  # a preference, not a flip
            self.answers.prefer(conversation_id, data, user)
            return (chatbot_messages(self.chat.display(user, conversation_id),
                                     texts=self.texts), *self.rows(conversation_id, request))
        try:
            message, index = int(data.get("message")), int(data.get("index"))
            self.chat.conversations.flip(user, conversation_id, message, index)
        except (TypeError, ValueError):
            gr.Warning(self.texts("branches.refused", detail=repr(data)))
        except (TreeError, NotFound) as exc:
            gr.Warning(self.texts("branches.refused", detail=str(exc)))
        return (chatbot_messages(self.chat.display(user, conversation_id), texts=self.texts),
                *self.rows(conversation_id, request))
