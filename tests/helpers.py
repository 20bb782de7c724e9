"""Small helpers every test file shares, defined once."""
from __future__ import annotations

import threading
from collections.abc import Sequence

from backends.base import Chunk, GenParams, Message
from backends.sampling import SamplingSettings
from tests.fakes import reply_chunks


def greedy(max_new_tokens: int = 24, **settings) -> GenParams:
    """Temperature 0: the one reply every engine gives the same prompt."""
    return GenParams(SamplingSettings(temperature=0.0, max_new_tokens=max_new_tokens,
                                      **settings))


def reply_text(manager, model_id: str, messages: Sequence[Message],
               params: GenParams | None = None) -> str:
    """A whole reply through the manager, as every entry point gets it."""
    return "".join(c.text for c in reply_chunks(manager, model_id, messages,
                                                params or greedy()))


def backend_reply(backend, messages: Sequence[Message],
                  params: GenParams | None = None) -> tuple[str, Chunk]:
    """A whole reply straight from a backend, and its last chunk (finish reason, usage)."""
    chunks = list(backend.stream_chat(messages, params or greedy(), threading.Event()))
    return "".join(c.text for c in chunks), chunks[-1]
