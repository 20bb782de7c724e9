"""The running app driven over loopback by gradio_client, the way scripts use the page."""
from __future__ import annotations

import time

import httpx
import pytest
from gradio_client import Client

from backends.sampling import SamplingSettings
from chatui.sampling_controls import SettingsControls
from tests.conftest import CAPITAL_PROMPT
from tests.conftest import until
from tests.test_api import assert_stopped_at_once, served_in_process

STORY_PROMPT = "Write a long story about a dragon who learns to cook."


@pytest.fixture()
def served(tmp_path):
    """The app served from this process: its threads and backends can be watched."""
    with served_in_process(tmp_path) as app:
        yield app


def send_args(message: str, max_new_tokens: int = 64, temperature: float = 0.0) -> tuple:
    """The page's /send inputs: message, model, system prompt, then every sampling control
    as the page shows it."""
    settings = SamplingSettings(temperature=temperature, max_new_tokens=max_new_tokens)
    return (message, "smollm2-135m", "", *SettingsControls.shown(settings))


def reply_text(output: tuple) -> str:
    chat = output[0]
    if not chat or chat[-1]["role"] != "assistant":
        return ""
    content = chat[-1]["content"]
    return "".join(part.get("text", "") for part in content) if isinstance(content, list) else content


@pytest.mark.slow
def test_page_streams_a_reply_over_loopback(running_app):
    client = Client(running_app.url, verbose=False)
    job = client.submit(*send_args(STORY_PROMPT, max_new_tokens=200), api_name="/send")
    job.result(timeout=120)
    texts = [reply_text(out) for out in job.outputs()]
    bodies = [t.split("\n\n<sub>")[0] for t in texts]  # without the footer
    growing = [b for b in bodies if b and b != "…"]
    assert len(set(growing)) >= 3, f"the reply did not stream: {texts}"
    assert all(b.startswith(a) for a, b in zip(growing, growing[1:]))
    assert "tokens/s" in texts[-1]


@pytest.mark.slow
def test_page_answers_the_capital_question(running_app):
    client = Client(running_app.url, verbose=False)
    result = client.predict(*send_args(CAPITAL_PROMPT), api_name="/send")
    assert "Paris" in reply_text(result)
    assert "SmolLM2 135M Instruct (Q4_1)" in reply_text(result)


@pytest.mark.slow
def test_two_clients_on_one_model_are_answered_together(running_app):
    """The shipped entry batches four replies: a second client's short question is answered
    while the first client's long story still streams, without waiting in line."""
    first, second = Client(running_app.url, verbose=False), Client(running_app.url, verbose=False)
    job_one = first.submit(*send_args(STORY_PROMPT, max_new_tokens=300), api_name="/send")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(len(reply_text(o)) > 5 for o in job_one.outputs()):
        time.sleep(0.02)
    job_two = second.submit(*send_args(CAPITAL_PROMPT), api_name="/send")
    two = reply_text(job_two.result(timeout=120))
    assert not job_one.done(), "the first reply had finished before the second was answered"
    one = reply_text(job_one.result(timeout=120))
    assert "Paris" in two and "tokens/s" in one
    waits = [reply_text(o) for o in job_two.outputs()]
    assert not any("ahead of you" in w for w in waits), waits


@pytest.mark.slow
def test_stop_from_the_same_session_ends_the_reply(served):
    client = Client(served.url, verbose=False)
    job = client.submit(*send_args(STORY_PROMPT, max_new_tokens=1500, temperature=0.7),
                        api_name="/send")
    assert until(lambda: served.watch.replies and served.watch.replies[0].chunks >= 5, 60), \
        "the reply never started"
    assert generation_state(served.url) == "generating"
    client.predict(api_name="/stop")
    final = reply_text(job.result(timeout=60))
    assert "stopped" in final.split("<sub>")[-1]
    assert_stopped_at_once(served.watch)
    assert served.watch.replies[0].tokens < 1500
    assert generation_state(served.url) == "resident"


def generation_state(url: str) -> str:
    listing = httpx.get(f"{url}v1/models", timeout=10).json()
    return next(m["state"] for m in listing["data"] if m["id"] == "smollm2-135m")


@pytest.mark.slow
def test_the_app_listens_on_loopback_only(running_app):
    import psutil

    listening = {c.laddr.ip for c in psutil.Process(running_app.process.pid)
                 .net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    assert listening == {"127.0.0.1"}
    assert running_app.url.startswith("http://127.0.0.1:")
