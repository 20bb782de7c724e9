"""The chat use case: what a conversation stores, when, and what supersedes what."""
from __future__ import annotations

from chatcore.conversations.store import StoredMessage
from chatcore.generation.replies import LiveReply


def stored_reply(live: LiveReply) -> StoredMessage:
    """The assistant message the store keeps of a finished reply, with its figures."""
    meter = live.meter
    return StoredMessage(
        "assistant", live.text, model=live.model_id, params=live.params.settings(),
        time_to_first_token=meter.time_to_first_token,
        tokens_per_second=meter.tokens_per_second,
        prompt_tokens=meter.usage.prompt_tokens if meter.usage else None,
        completion_tokens=meter.completion_tokens, finish_reason=meter.finish_reason,
        stopped=live.stopped, thought=live.thought, thought_seconds=live.thought_seconds,
        thought_tokens=live.thought_tokens, sources=live.sources)
