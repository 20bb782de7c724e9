"""A SIGKILL while SmolLM2 generates a sibling (a regenerated reply) on the running app:
the reopened store's tree is consistent, no orphan, no half message, the shown branch valid."""
from __future__ import annotations

import os
import signal
import sqlite3
import time

import pytest
from gradio_client import Client

from chatcore.conversations.store import MAX_MESSAGES, Store
from chatcore.conversations.tree import Node, check_tree
from tests.conftest import start_app
from tests.test_app_client import STORY_PROMPT, reply_text, send_args

pytestmark = pytest.mark.slow  # starts and kills the app


def test_sigkill_while_a_sibling_is_generated_leaves_the_tree_consistent(tmp_path):
    data = tmp_path / "data"
    app = start_app(["--data-dir", str(data)])
    try:
        client = Client(app.url, verbose=False)
        client.predict(*send_args(STORY_PROMPT, max_new_tokens=8), api_name="/send")
        short = send_args(STORY_PROMPT, max_new_tokens=8, temperature=0.7)[1:]
        client.predict(*short, api_name="/regenerate")  # a second version, kept whole
        long = send_args(STORY_PROMPT, max_new_tokens=1500, temperature=0.7)[1:]
        job = client.submit(*long, api_name="/regenerate")  # the third, killed mid-way
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                len(reply_text(o).split("\n\n<sub>")[0]) > 60 for o in job.outputs()):
            time.sleep(0.02)
        assert any(len(reply_text(o)) > 60 for o in job.outputs()), "no reply streamed"
        os.kill(app.process.pid, signal.SIGKILL)
        app.process.wait(timeout=10)
    finally:
        if app.process.poll() is None:
            app.process.kill()

    store = Store(data)
    try:
        assert store.integrity_check() == "ok"
        [listed] = store.list_conversations("")
        db = sqlite3.connect(store.path)
        nodes = [Node(*row) for row in db.execute(
            "SELECT id, parent_id, shown_child FROM messages ORDER BY id")]
        check_tree(nodes, MAX_MESSAGES)  # no orphan, no cycle
        everything = store.get_conversation("", listed.id, include_superseded=True).messages
        assert [m.role for m in everything] == ["user", "assistant", "assistant"]
        question = everything[0]
        assert all(m.parent_id == question.id for m in everything[1:])  # siblings
        assert all(m.finish_reason in ("length", "stop") for m in everything[1:])  # whole
        conversation = store.get_conversation("", listed.id)
        shown = [m.id for m in conversation.messages]
        assert shown == [question.id, everything[2].id]  # the last version saved, shown
        place = conversation.positions[everything[2].id]
        assert (place.index, place.count) == (2, 2)
        root = db.execute("SELECT shown_root FROM conversations").fetchone()[0]
        assert root == question.id
        db.close()
    finally:
        store.close()
