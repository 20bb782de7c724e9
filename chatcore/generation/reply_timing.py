"""Time to first token and decode speed of one reply, measured where the chunks arrive."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from backends.base import Chunk, Usage
from chatcore.i18n import Texts


@dataclass
class ReplyMeter:
    started: float = field(default_factory=time.perf_counter)
    first_text_at: float | None = None
    finished_at: float | None = None
    usage: Usage | None = None
    finish_reason: str | None = None
    saw_text: bool = False  # anything but white space

    def observe(self, chunk: Chunk) -> None:
        now = time.perf_counter()
        self.saw_text = self.saw_text or bool(chunk.text.strip())
        if (chunk.text or chunk.thought) and self.first_text_at is None:
            self.first_text_at = now
        if chunk.finish_reason is not None:
            self.finished_at = now
            self.usage = chunk.usage
            self.finish_reason = chunk.finish_reason

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_text_at is None else self.first_text_at - self.started

    @property
    def completion_tokens(self) -> int:
        return self.usage.completion_tokens if self.usage else 0

    @property
    def tokens_per_second(self) -> float | None:
        """Decode speed after the first token, the figure engines report."""
        if self.first_text_at is None or self.finished_at is None or self.completion_tokens < 2:
            return None
        elapsed = self.finished_at - self.first_text_at
        return (self.completion_tokens - 1) / elapsed if elapsed > 0 else None

    @property
    def drafts(self) -> tuple[int, int] | None:
        """Speculative decoding's (accepted, drafted) tokens; None when nothing was drafted."""
        if self.usage is None:
            return None
        accepted = self.usage.accepted_prediction_tokens
        drafted = accepted + self.usage.rejected_prediction_tokens
        return (accepted, drafted) if drafted else None

    def summary(self, model_name: str, texts: Texts) -> str:
        return reply_summary(model_name, self.time_to_first_token, self.tokens_per_second,
                             self.completion_tokens, self.finish_reason, empty=not self.saw_text,
                             texts=texts, drafts=self.drafts)


def reply_summary(model_name: str, time_to_first_token: float | None,
                  tokens_per_second: float | None, completion_tokens: int | None,
                  finish_reason: str | None, empty: bool = False, *,
                  texts: Texts, drafts: tuple[int, int] | None = None) -> str:
    """The line under a reply, live or read back from the store; an empty reply says so
    rather than showing nothing. `drafts` (accepted, drafted) shows how much speculative
    decoding's guesses were taken, which explains a reply faster than the model's usual."""
    parts = [model_name]
    if time_to_first_token is not None:
        parts.append(texts("reply.first_token", seconds=texts.number(time_to_first_token, 2)))
    if tokens_per_second is not None:
        parts.append(texts("reply.speed", rate=texts.number(tokens_per_second, 1)))
    parts.append(texts("reply.tokens", n=completion_tokens or 0))
    if drafts is not None:
        accepted, drafted = drafts
        parts.append(texts("reply.drafts", percent=texts.number(100 * accepted / drafted, 0),
                           n=drafted))
    if finish_reason == "cancelled":
        parts.append(texts("reply.stopped"))
    elif finish_reason == "length":
        parts.append(texts("reply.cut"))
    if empty and finish_reason != "cancelled":
        parts.append(texts("reply.empty"))
    return " · ".join(parts)
