"""One prompt, one streamed reply on stdout: the app for scripts and terminals."""
from __future__ import annotations

import sys
import threading
from typing import TextIO

from backends.base import GenParams, Message
from chatcore.manager import ModelManager
from chatcore.meter import EMPTY_REPLY


def run_prompt(manager: ModelManager, model_id: str, prompt: str, system: str | None,
               params: GenParams, out: TextIO = sys.stdout) -> str:
    """Stream the reply to `out`; returns the finish reason. Raises the manager's errors."""
    messages = [Message("system", system)] if system else []
    messages.append(Message("user", prompt))
    finish, saw_text = "stop", False
    for chunk in manager.stream_chat(model_id, messages, params, threading.Event()):
        out.write(chunk.text)
        out.flush()
        saw_text = saw_text or bool(chunk.text.strip())
        finish = chunk.finish_reason or finish
    out.write("\n")
    out.flush()
    if not saw_text:
        print(f"note: {EMPTY_REPLY}", file=sys.stderr)
    return finish
