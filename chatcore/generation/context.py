"""Fitting a conversation into a model's context window, and naming new conversations."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from backends.base import BackendError, Message

TITLE_WORDS = 8
TITLE_CHARS = 60


def with_system(system: str, turns: Iterable) -> list[Message]:
    """The messages a model is sent: the system prompt, if any, then the turns (messages or
    stored messages, anything with a role and content)."""
    head = [Message("system", system.strip())] if (system or "").strip() else []
    return head + [Message(t.role, t.content) for t in turns]


class ContextOverflow(BackendError):
    """Even the newest message alone does not fit; the message gives the numbers."""


def fit_context(messages: Sequence[Message], count_tokens: Callable[[Sequence[Message]], int],
                context_length: int, max_new_tokens: int) -> tuple[list[Message], int]:
    """Drop the oldest turns until the prompt plus the reply fit; the system prompt stays.

    Returns the messages to send and how many were left out.
    """
    reserve = min(max_new_tokens, context_length // 2)
    limit = context_length - reserve
    system = [m for m in messages[:1] if m.role == "system"]
    turns = list(messages[len(system):])
    dropped = 0
    while count_tokens(system + turns) > limit:
        if len(turns) <= 1:
            size = count_tokens(system + turns)
            raise ContextOverflow(
                f"this message needs {size} tokens with the system prompt, but the model's "
                f"context holds {context_length} and {reserve} are kept for the reply: "
                "shorten the message or lower max new tokens")
        turns.pop(0)
        dropped += 1
        while len(turns) > 1 and turns[0].role != "user":  # a history starts with a question
            turns.pop(0)
            dropped += 1
    return system + turns, dropped


def ground(messages: Sequence[Message], grounding, count_tokens: Callable[[Sequence[Message]], int],
           context_length: int, max_new_tokens: int) -> tuple[list[Message], object | None]:
    """The messages with the attachments' text in the last user message: whole when it fits
    the room the prompt and the reply's reserve leave, else the best passages (a
    chatcore.conversations.attachments.Grounding decides). Returns the messages and its Selection, or
    None without attachments."""
    if grounding is None:
        return list(messages), None
    room = context_length - min(max_new_tokens, context_length // 2) - count_tokens(messages)
    return grounding.fit(messages, room, count_tokens)


def title_from(message: str) -> str:
    """A short title from the first message, without asking a model."""
    words = message.split()
    title = " ".join(words[:TITLE_WORDS])
    if len(title) > TITLE_CHARS:
        title = title[: TITLE_CHARS - 1].rstrip() + "…"
    elif len(words) > TITLE_WORDS:
        title += "…"
    return title or "New chat"
