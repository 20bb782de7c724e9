"""Load: 8 sessions, 3 turns each, at once on the default model, through the page's endpoint
and through the API. No errors, no crossed conversations, every reply kept."""
from __future__ import annotations

import threading

import httpx
import pytest
from gradio_client import Client

from tests.test_app_client import reply_text, send_args

pytestmark = pytest.mark.slow  # many clients on the running app

SESSIONS, TURNS = 8, 3


def run_all(target) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            target(index)
        except BaseException as exc:  # noqa: BLE001 - collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(SESSIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return errors


def test_eight_page_sessions_three_turns_each(running_app):
    finals: dict[int, tuple] = {}

    def session(index: int) -> None:
        client = Client(running_app.url, verbose=False)
        for turn in range(TURNS):
            output = client.predict(*send_args(f"Session {index} turn {turn}: say hi.",
                                               max_new_tokens=12), api_name="/send")
            assert reply_text(output) and "⚠️" not in reply_text(output), reply_text(output)
        finals[index] = output

    errors = run_all(session)
    assert errors == [], f"{len(errors)} sessions failed: {errors[:3]}"
    for index, (chat, _) in finals.items():  # each page shows its own conversation only
        asked = [m for m in chat if m["role"] == "user"]
        texts = ["".join(p.get("text", "") for p in m["content"])
                 if isinstance(m["content"], list) else m["content"] for m in asked]
        assert texts == [f"Session {index} turn {t}: say hi." for t in range(TURNS)]
        assert len(chat) == 2 * TURNS
    reader = Client(running_app.url, verbose=False)
    listed = {c["title"]: c["id"] for c in reader.predict("", api_name="/conversations")}
    for index in range(SESSIONS):
        conversation_id = listed[f"Session {index} turn 0: say hi."]
        stored = reader.predict(conversation_id, api_name="/conversation")["messages"]
        assert [m["role"] for m in stored] == ["user", "assistant"] * TURNS
        assert [m["content"] for m in stored[::2]] == \
            [f"Session {index} turn {t}: say hi." for t in range(TURNS)]
        assert all(m["content"] for m in stored[1::2])


def test_eight_api_clients_three_turns_each(running_app):
    replies: dict[int, list[str]] = {}

    def session(index: int) -> None:
        history = []
        with httpx.Client(base_url=running_app.url, timeout=300) as http:
            for turn in range(TURNS):
                history.append({"role": "user", "content": f"Client {index}, turn {turn}."})
                reply = http.post("v1/chat/completions", json={
                    "model": "smollm2-135m", "max_tokens": 12, "temperature": 0,
                    "messages": history})
                assert reply.status_code == 200, reply.text
                text = reply.json()["choices"][0]["message"]["content"]
                assert text
                history.append({"role": "assistant", "content": text})
        replies[index] = [m["content"] for m in history if m["role"] == "assistant"]

    errors = run_all(session)
    assert errors == [], f"{len(errors)} clients failed: {errors[:3]}"
    assert sorted(replies) == list(range(SESSIONS))
    assert all(len(r) == TURNS for r in replies.values())
