"""The conversation a page holds, and how it is shown.

The page keeps clean turns (what the model sees) apart from what is displayed under them
(speed figures, errors), so a footer never leaks into the next prompt.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

from backends.base import Message


@dataclass
class Turn:
    role: str
    content: str
    footer: str = ""
    error: str = ""


def prompt_messages(turns: list[Turn], system_prompt: str) -> list[Message]:
    """What the model is sent: the system prompt, then every turn that is not an error."""
    messages = [Message("system", system_prompt.strip())] if system_prompt.strip() else []
    messages += [Message(t.role, t.content) for t in turns if not t.error and t.content]
    return messages


def chatbot_messages(turns: list[Turn], streaming: bool = False) -> list[dict[str, str]]:
    """Gradio Chatbot messages; the footer under a reply is small and escaped."""
    shown = []
    for index, turn in enumerate(turns):
        content = turn.content
        if turn.error:
            content = (content + "\n\n" if content else "") + f"⚠️ {turn.error}"
        elif streaming and index == len(turns) - 1 and turn.role == "assistant" and not content:
            content = "…"  # a footer here says what the reply waits for
        if turn.footer:
            content += f"\n\n<sub>{html.escape(turn.footer)}</sub>"
        shown.append({"role": turn.role, "content": content})
    return shown
