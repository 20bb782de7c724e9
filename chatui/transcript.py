"""How a conversation is shown: stored messages become chat bubbles with a footer.

Footers (speed figures, notices, errors) are display-only: what the model is sent comes
from the store, so a footer never leaks into the next prompt.
"""
from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

from chatcore.generation.registry import ModelRegistry
from chatcore.i18n import Texts
from chatcore.generation.reply_timing import reply_summary
from chatcore.documents.passages import sources_note
from chatcore.generation.replies import LiveReply, thought_title
from chatcore.conversations.store import StoredMessage


@dataclass
class Turn:
    role: str
    content: str
    footer: str = ""
    error: str = ""
    thought: str = ""  # a thinking model's thought, shown folded above the reply
    thought_title: str = ""
    thinking: bool = False  # the thought is still being written


def model_name(registry: ModelRegistry, model_id: str) -> str:
    """How the page names a model: its display name, or the id of one no longer listed."""
    entry = registry.get(model_id)
    return entry.display_name if entry else model_id


def live_turn(live: LiveReply, name: str, *, texts: Texts,
              continued: Turn | None = None, cost: str = "") -> Turn:
    """The bubble of a reply in progress (after `continued`'s text, when it extends one);
    `cost` is what a finished reply cost (chatui/cost_controls.py), put after its figures."""
    start = continued.content if continued is not None else ""
    title = texts("reply.thinking") if live.thinking else \
        thought_title(live.thought_seconds, live.thought_tokens, texts)
    footer = live.footer(name, texts)
    footer = " · ".join([footer, cost]) if footer and cost else footer
    return Turn("assistant", start + live.text, footer, live.error,
                thought=live.thought, thought_title=title, thinking=live.thinking)


def turns_from(messages: list[StoredMessage], model_name: Callable[[str], str], *,
               texts: Texts, cost: Callable[[StoredMessage], str] = lambda _: "") -> list[Turn]:
    """`cost` says what a stored reply cost (chatui/cost_controls.py), "" where unknown."""
    turns = []
    for message in messages:
        footer = ""
        if message.role == "assistant":
            footer = reply_summary(model_name(message.model or "?"), message.time_to_first_token,
                                   message.tokens_per_second, message.completion_tokens,
                                   message.finish_reason, empty=not message.content.strip(),
                                   texts=texts)
            if message.sources:
                footer += " · " + sources_note(message.sources, texts)
            if spent := cost(message):
                footer += " · " + spent
        turns.append(Turn(message.role, message.content, footer, thought=message.thought,
                          thought_title=thought_title(message.thought_seconds,
                                                      message.thought_tokens, texts)))
    return turns


def chatbot_messages(turns: list[Turn], streaming: bool = False,
                     hide_thoughts: bool = False, *, texts: Texts) -> list[dict]:
    """Gradio Chatbot messages; the footer under a reply is small and escaped. A thought
    comes first as a folded message (Gradio's metadata title); with `hide_thoughts` (blind
    Compare before the vote) only its title, its length and time, is shown."""
    shown: list[dict] = []
    for index, turn in enumerate(turns):
        if turn.thought or turn.thinking:
            shown.append({"role": "assistant",
                          "content": texts("reply.thought_hidden") if hide_thoughts
                          else turn.thought,
                          "metadata": {"title": turn.thought_title,
                                       "status": "pending" if turn.thinking else "done"}})
        content = turn.content
        if turn.error:
            content = (content + "\n\n" if content else "") + \
                texts("reply.error", detail=turn.error)
        elif streaming and index == len(turns) - 1 and turn.role == "assistant" and not content:
            content = "…"  # a footer here says what the reply waits for
        if turn.footer:
            content += f"\n\n<sub>{html.escape(turn.footer)}</sub>"
        shown.append({"role": turn.role, "content": content})
    return shown
