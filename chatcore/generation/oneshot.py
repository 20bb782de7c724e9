"""One prompt, one streamed reply on stdout: the app for scripts and terminals."""
from __future__ import annotations

import sys
import threading
from typing import TextIO

from backends.base import Chunk, GenParams, Message
from chatcore.generation.manager import ModelManager
from chatcore.i18n import Texts


def run_prompt(manager: ModelManager, model_id: str, prompt: str, system: str | None,
               params: GenParams, out: TextIO | None = None, *, texts: Texts) -> str:
    """Stream the reply to `out` (stdout); returns the finish reason. Raises the manager's
    errors. The notes on stderr are in `texts`' language (English unless --language)."""
    out = out or sys.stdout
    messages = [Message("system", system)] if system else []
    messages.append(Message("user", prompt))
    with manager.start([(model_id, messages, params)], threading.Event()) as replies:
        for _, event in replies:
            if isinstance(event, Exception):
                raise event
            if isinstance(event, Chunk):
                out.write(event.text)
                out.flush()
    out.write("\n")
    out.flush()
    live = replies.live[0]
    for note in live.notes(texts):
        print(f"note: {note}", file=sys.stderr)
    if not live.meter.saw_text:
        print(f"note: {texts('reply.empty')}", file=sys.stderr)
    return live.meter.finish_reason or "stop"
