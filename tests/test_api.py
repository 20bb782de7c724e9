"""This app's OpenAI-compatible API, driven with httpx over loopback against the real app."""
from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from tests.conftest import (
    CAPITAL_PROMPT,
    SAFETY_S,
    SHIPPED_MODELS,
    free_port,
    generation_threads,
    start_app,
    until,
)

STORY = "Write a long story about a dragon who learns to cook."
MODEL = "smollm2-135m"


def chat(url: str, **body) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": CAPITAL_PROMPT}], **body}
    return httpx.post(f"{url}v1/chat/completions", json=body, timeout=120)


def stream_events(url: str, **body) -> list[dict]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": STORY}], "stream": True,
            **body}
    events = []
    with httpx.stream("POST", f"{url}v1/chat/completions", json=body, timeout=120) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if line.startswith("data: "):
                payload = line[len("data: "):]
                events.append({"done": True} if payload == "[DONE]" else json.loads(payload))
    return events


@pytest.mark.slow
def test_models_lists_the_usable_models(running_app):
    listing = httpx.get(f"{running_app.url}v1/models", timeout=10).json()
    assert listing["object"] == "list"
    ids = [m["id"] for m in listing["data"]]
    assert MODEL in ids and "llama-3.1-8b-instruct-q4" not in ids  # not downloaded
    assert all(m["object"] == "model" for m in listing["data"])


@pytest.mark.slow
def test_non_streamed_reply_has_the_answer_and_usage(running_app):
    reply = chat(running_app.url, temperature=0, max_tokens=30)
    assert reply.status_code == 200
    document = reply.json()
    assert document["object"] == "chat.completion"
    choice = document["choices"][0]
    assert "Paris" in choice["message"]["content"]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "stop"
    usage = document["usage"]
    assert usage["prompt_tokens"] > 10 and 0 < usage["completion_tokens"] <= 30
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.slow
def test_stream_concatenation_equals_the_non_streamed_greedy_reply(running_app):
    settings = dict(temperature=0, max_tokens=48)
    events = stream_events(running_app.url, stream_options={"include_usage": True},
                           **settings)
    assert events[-1] == {"done": True}
    chunks = [e for e in events[:-1] if e["choices"]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert len([c for c in chunks if c["choices"][0]["delta"].get("content")]) >= 10
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert events[-2]["usage"]["completion_tokens"] == 48
    whole = chat(running_app.url, messages=[{"role": "user", "content": STORY}], **settings)
    assert streamed == whole.json()["choices"][0]["message"]["content"]


@pytest.mark.slow
def test_a_streamed_reply_is_not_held_back_by_compression(running_app):
    """The server gzips what it sends (the page is large), but never an event stream: the
    first tokens reach a client that accepts gzip while the model is still writing."""
    body = {"model": MODEL, "stream": True, "max_tokens": 400, "temperature": 0,
            "messages": [{"role": "user", "content": STORY}]}
    with httpx.stream("POST", f"{running_app.url}v1/chat/completions", json=body, timeout=60,
                      headers={"Accept-Encoding": "gzip"}) as reply:
        assert "content-encoding" not in reply.headers
        lines = reply.iter_lines()  # kept: dropping it part-way closes the connection
        events = [line for line in itertools.islice(lines, 10) if line.startswith("data: ")]
        assert len(events) >= 4
        assert model_state(running_app.url) == "generating"


@pytest.mark.slow
def test_stop_strings_seed_and_text_parts_are_honoured(running_app):
    parts = [{"type": "text", "text": "Name the capital "}, {"type": "text", "text": "of France."}]
    reply = chat(running_app.url, messages=[{"role": "user", "content": parts}], temperature=0,
                 stop=["Paris"]).json()
    text = reply["choices"][0]["message"]["content"]
    assert "Paris" not in text and text.startswith("The capital of France is")
    seeded = [chat(running_app.url, messages=[{"role": "user", "content": STORY}],
                   temperature=1.0, seed=7, max_tokens=20).json() for _ in range(2)]
    assert seeded[0]["choices"][0]["message"] == seeded[1]["choices"][0]["message"]


BAD_BODIES = [
    ("not JSON", b"{model: x", "not valid JSON"),
    ("not an object", b"[1, 2]", "must be a JSON object"),
    ("no messages", json.dumps({"model": MODEL}).encode(), "messages"),
    ("empty messages", json.dumps({"model": MODEL, "messages": []}).encode(), "messages"),
    ("bad role", json.dumps({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]})
     .encode(), "messages.0.role"),
    ("temperature a string", json.dumps({"model": MODEL, "temperature": "hot", "messages": [
        {"role": "user", "content": "x"}]}).encode(), "temperature"),
    ("max_tokens zero", json.dumps({"model": MODEL, "max_tokens": 0, "messages": [
        {"role": "user", "content": "x"}]}).encode(), "max_tokens"),
    ("unknown field", json.dumps({"model": MODEL, "temprature": 1, "messages": [
        {"role": "user", "content": "x"}]}).encode(), "temprature: unrecognized request argument"),
    ("several choices", json.dumps({"model": MODEL, "n": 2, "messages": [
        {"role": "user", "content": "x"}]}).encode(), "n"),
    ("image part", json.dumps({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]}).encode(), "messages.0.content"),
    ("five stop strings", json.dumps({"model": MODEL, "stop": list("abcde"), "messages": [
        {"role": "user", "content": "x"}]}).encode(), "stop"),
]


@pytest.mark.parametrize("case,body,expected", BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
@pytest.mark.slow
def test_bad_bodies_get_400_in_openai_shape(running_app, case, body, expected):
    reply = httpx.post(f"{running_app.url}v1/chat/completions", content=body, timeout=30,
                       headers={"content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert expected in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.slow
def test_unknown_model_is_404_and_a_model_that_cannot_load_is_503(running_app):
    missing = chat(running_app.url, model="no-such-model")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    unavailable = chat(running_app.url, model="llama-3.1-8b-instruct-q4")  # not downloaded
    assert unavailable.status_code == 503
    error = unavailable.json()["error"]
    assert error["code"] == "model_unavailable" and "not downloaded" in error["message"]
    too_long = chat(running_app.url, messages=[{"role": "user", "content": "word " * 5000}])
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "context_length_exceeded"
    assert chat(running_app.url, temperature=0).status_code == 200  # still serving


def model_state(url: str) -> str:
    listing = httpx.get(f"{url}v1/models", timeout=10).json()
    return next(m["state"] for m in listing["data"] if m["id"] == MODEL)


class CancelWatch:
    """Wraps every backend a manager makes and keeps, per reply, the text chunks the engine
    computed, how many of them it computed after the reply's cancel event was set, and how
    the reply ended: Stop is proved by what the engine did, not by a clock."""

    def __init__(self) -> None:
        self.replies: list[SimpleNamespace] = []

    def wrap(self, backend):
        original = backend.stream_chat

        def stream_chat(messages, params, cancel):
            reply = SimpleNamespace(chunks=0, after_cancel=0, finish=None, tokens=None)
            self.replies.append(reply)
            for chunk in original(messages, params, cancel):
                if chunk.finish_reason is not None:  # the closing chunk computes no token
                    reply.finish = chunk.finish_reason
                    reply.tokens = chunk.usage.completion_tokens if chunk.usage else None
                elif chunk.text:
                    reply.chunks += 1
                    reply.after_cancel += cancel.is_set()
                yield chunk
        backend.stream_chat = stream_chat
        return backend


@contextmanager
def served_in_process(data_dir: Path) -> Iterator[SimpleNamespace]:
    """The page and the API of chat_app.py over the shipped models, served by uvicorn from
    this process, so a test can see its generation threads and watch its backends."""
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import uvicorn

    from chatcore.generation.registry import load_registry
    from chatcore.generation.factory import make_backend
    from chatcore.generation.manager import ModelManager
    from chatcore.api.request_guard import Access
    from chatcore.conversations.store import Store
    from chatui.app import build_server
    from chatui.exports import ExportFiles

    watch = CancelWatch()
    manager = ModelManager(load_registry(SHIPPED_MODELS),
                           lambda entry: watch.wrap(make_backend(entry)))
    store = Store(data_dir)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        build_server(manager, store, MODEL, ExportFiles(data_dir / "exports"), Access()),
        host="127.0.0.1",
        port=port, log_level="warning", timeout_graceful_shutdown=2))
    runner = threading.Thread(target=server.run, name="test-http-server", daemon=True)
    runner.start()
    try:
        assert until(lambda: server.started or not runner.is_alive()) and server.started, \
            "the in-process server did not start"
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}/", watch=watch, manager=manager)
    finally:
        server.should_exit = True
        runner.join(SAFETY_S)
        manager.unload_all()
        store.close()


def assert_stopped_at_once(watch: CancelWatch) -> None:
    """No generation thread is left, and the one reply's engine saw the cancel before it
    computed more than the token it was computing when the cancel came."""
    assert until(lambda: generation_threads() == []), \
        f"generation threads left: {generation_threads()}"
    assert len(watch.replies) == 1, watch.replies
    reply = watch.replies[0]
    assert reply.finish == "cancelled", f"the engine never saw the cancel: {reply}"
    assert reply.after_cancel <= 1, f"the engine went on computing after the cancel: {reply}"


@pytest.fixture()
def served(tmp_path) -> Iterator[SimpleNamespace]:
    with served_in_process(tmp_path) as app:
        yield app


@pytest.mark.slow
def test_a_client_that_disconnects_mid_stream_ends_the_generation(served):
    body = {"model": MODEL, "stream": True, "max_tokens": 2000, "temperature": 0,
            "messages": [{"role": "user", "content": STORY}]}
    with httpx.stream("POST", f"{served.url}v1/chat/completions", json=body,
                      timeout=60) as reply:
        # Keep the iterator: dropping it part-way closes the connection at once.
        lines = reply.iter_lines()
        events = [line for line in itertools.islice(lines, 10) if line.startswith("data: ")]
        assert len(events) >= 4
        assert model_state(served.url) == "generating"
    # Leaving the block closed the connection.
    assert_stopped_at_once(served.watch)
    assert served.watch.replies[0].tokens < 2000
    assert model_state(served.url) == "resident"


@pytest.mark.slow
def test_with_an_api_key_a_request_needs_it(tmp_path):
    app = start_app(["--data-dir", str(tmp_path), "--api-key", "s3cret"])
    try:
        anonymous = chat(app.url)
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "invalid_api_key"
        wrong = httpx.post(
            f"{app.url}v1/chat/completions", headers={"Authorization": "Bearer nope"},
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
        assert wrong.status_code == 401
        assert httpx.get(f"{app.url}v1/models", timeout=10).status_code == 401
        keyed = httpx.post(f"{app.url}v1/chat/completions",
                           headers={"Authorization": "Bearer s3cret"}, timeout=120,
                           json={"model": MODEL, "temperature": 0,
                                 "messages": [{"role": "user", "content": CAPITAL_PROMPT}]})
        assert keyed.status_code == 200 and "Paris" in keyed.text
    finally:
        app.process.terminate()
        app.process.wait(timeout=20)


@pytest.mark.slow
def test_the_openai_client_streams_and_reads_errors(running_app):
    from openai import NotFoundError, OpenAI

    client = OpenAI(base_url=f"{running_app.url}v1", api_key="unused", max_retries=0)
    assert MODEL in [m.id for m in client.models.list()]
    stream = client.chat.completions.create(
        model=MODEL, temperature=0, stream=True,
        messages=[{"role": "user", "content": CAPITAL_PROMPT}])
    assert "Paris" in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    with pytest.raises(NotFoundError, match="does not exist"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
