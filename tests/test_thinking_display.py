"""How a thought is shown and kept: folded above its reply, hidden in blind Compare until
the vote, left out of exports unless asked, taken back in by an import."""
from __future__ import annotations

import json

from chatcore.i18n import english
from chatcore.conversations.store import Conversation, StoredMessage
from chatcore.conversations.export import imported_messages, parse_import, to_json, to_markdown
from chatui.transcript import Turn, chatbot_messages, turns_from

REPLY = StoredMessage("assistant", "Paris.", model="m", thought="France's capital... Paris.",
                      thought_seconds=1.25, thought_tokens=7)
CONVERSATION = Conversation(1, "Capital", "m", "", {}, 0.0, 0.0,
                            [StoredMessage("user", "Capital of France?"), REPLY])


def test_a_thought_is_folded_above_its_reply_with_its_time_and_length():
    shown = chatbot_messages(turns_from(CONVERSATION.messages, lambda m: m, texts=english()),
                             texts=english())
    assert [m["role"] for m in shown] == ["user", "assistant", "assistant"]
    assert shown[1]["content"] == "France's capital... Paris."
    assert shown[1]["metadata"] == {"title": "Thought for 1.2 s, 7 tokens", "status": "done"}
    assert shown[2]["content"].startswith("Paris.")
    thinking = Turn("assistant", "", thought="Hmm", thought_title="Thinking…", thinking=True)
    assert chatbot_messages([thinking], streaming=True,
                            texts=english())[0]["metadata"]["status"] == "pending"


def test_blind_compare_shows_the_thoughts_length_but_not_the_thought():
    shown = chatbot_messages(turns_from([REPLY], lambda m: m, texts=english()),
                             hide_thoughts=True, texts=english())
    assert shown[0]["content"] == "(hidden until you vote)"
    assert shown[0]["metadata"]["title"] == "Thought for 1.2 s, 7 tokens"


def test_exports_leave_thoughts_out_unless_asked_and_imports_take_them_back():
    plain = json.loads(to_json(CONVERSATION))
    assert "thought" not in plain["messages"][1] and "Paris." in to_markdown(CONVERSATION)
    assert "capital..." not in to_markdown(CONVERSATION)
    full = to_json(CONVERSATION, thoughts=True)
    assert json.loads(full)["messages"][1]["thought"] == REPLY.thought
    assert "<details><summary>Thought for 1.2 s, 7 tokens</summary>" in \
        to_markdown(CONVERSATION, thoughts=True)
    back = imported_messages(parse_import(full.encode(), "full.json"))
    assert back[1].thought == REPLY.thought and back[1].thought_tokens == 7
