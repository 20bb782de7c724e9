"""Conversations on the running app: a SIGKILL mid-reply, and users kept apart by --auth."""
from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
from gradio_client import Client

from chatcore.conversations.store import Store
from tests.conftest import CAPITAL_PROMPT, start_app
from tests.test_app_client import STORY_PROMPT, reply_text, send_args

pytestmark = pytest.mark.slow  # starts and kills the app


def test_sigkill_mid_reply_keeps_every_completed_message(tmp_path):
    data = tmp_path / "data"
    app = start_app(["--data-dir", str(data)])
    try:
        client = Client(app.url, verbose=False)
        assert "Paris" in reply_text(client.predict(*send_args(CAPITAL_PROMPT), api_name="/send"))
        job = client.submit(*send_args(STORY_PROMPT, max_new_tokens=1500, temperature=0.7),
                            api_name="/send")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                len(reply_text(o)) > 60 for o in job.outputs()):
            time.sleep(0.02)
        os.kill(app.process.pid, signal.SIGKILL)
        app.process.wait(timeout=10)
    finally:
        if app.process.poll() is None:
            app.process.kill()

    restarted = start_app(["--data-dir", str(data)])  # the app starts on the same store
    try:
        client = Client(restarted.url, verbose=False)
        [listed] = client.predict("", api_name="/conversations")
        conversation = client.predict(listed["id"], api_name="/conversation")
        messages = [(m["role"], m["content"]) for m in conversation["messages"]]
        assert messages[0] == ("user", CAPITAL_PROMPT)
        assert messages[1][0] == "assistant" and "Paris" in messages[1][1]
        assert messages[2] == ("user", STORY_PROMPT)  # saved when sent
        assert len(messages) == 3  # only the reply being generated was lost
    finally:
        restarted.stop()
    store = Store(data)
    assert store.integrity_check() == "ok"
    store.close()


def test_with_auth_each_user_sees_only_their_own_conversations(tmp_path):
    app = start_app(["--data-dir", str(tmp_path / "data"),
                     "--auth", "alice:wonderland,bob:builder"])
    try:
        alice = Client(app.url, auth=("alice", "wonderland"), verbose=False)
        bob = Client(app.url, auth=("bob", "builder"), verbose=False)
        alice.predict(*send_args(CAPITAL_PROMPT, max_new_tokens=16), api_name="/send")
        bob.predict(*send_args("Say hello to Bob.", max_new_tokens=16), api_name="/send")
        [alices] = alice.predict("", api_name="/conversations")
        [bobs] = bob.predict("", api_name="/conversations")
        assert alices["title"] == CAPITAL_PROMPT and bobs["title"] == "Say hello to Bob."
        assert bob.predict(alices["id"], api_name="/conversation") == {}
        assert alice.predict(bobs["id"], api_name="/conversation") == {}
        assert bob.predict("capital", api_name="/conversations") == []
        assert alice.predict(alices["id"], api_name="/conversation")["title"] == CAPITAL_PROMPT
        with pytest.raises(Exception, match="credentials"):
            Client(app.url, verbose=False)
        # --auth guards the API too: the same users, as HTTP Basic
        body = {"model": "smollm2-135m", "max_tokens": 4,
                "messages": [{"role": "user", "content": "hi"}]}
        url = f"{app.url}v1/chat/completions"
        assert httpx.post(url, json=body, timeout=30).status_code == 401
        assert httpx.post(url, json=body, auth=("alice", "nope"), timeout=30).status_code == 401
        assert httpx.get(f"{app.url}v1/models", timeout=30).status_code == 401
        assert httpx.post(url, json=body, auth=("bob", "builder"), timeout=60).status_code == 200
    finally:
        app.stop()
