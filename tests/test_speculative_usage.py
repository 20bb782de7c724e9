"""Speculative decoding's counts where people and programs read them: the line under a
reply (both languages) and the /v1 usage (OpenAI's completion_tokens_details)."""
from __future__ import annotations

from backends.base import Chunk, Usage
from chatcore.api.v1 import _usage
from chatcore.generation.reply_timing import ReplyMeter
from chatcore.i18n import english, load_texts

DRAFTED = Usage(prompt_tokens=30, completion_tokens=40, accepted_prediction_tokens=30,
                rejected_prediction_tokens=10)


def finished(usage: Usage) -> ReplyMeter:
    meter = ReplyMeter()
    meter.observe(Chunk("Hello"))
    meter.observe(Chunk("", finish_reason="stop", usage=usage))
    return meter


def test_the_reply_line_shows_the_share_of_drafted_tokens_accepted():
    assert "75% of 40 drafted tokens accepted" in finished(DRAFTED).summary("m", english())
    assert "75% ng 40 hinulaang token ang tinanggap" in \
        finished(DRAFTED).summary("m", load_texts("fil"))
    plain = finished(Usage(prompt_tokens=30, completion_tokens=40)).summary("m", english())
    assert "draft" not in plain  # nothing drafted: nothing said


def test_v1_usage_carries_accepted_and_rejected_prediction_tokens():
    assert _usage(DRAFTED)["completion_tokens_details"] == {
        "accepted_prediction_tokens": 30, "rejected_prediction_tokens": 10}
    assert "completion_tokens_details" not in _usage(Usage(prompt_tokens=3, completion_tokens=4))
