"""`backend: openai`: a real OpenAI-compatible server (python -m llama_cpp.server with SmolLM2)
streams through the backend, the page and the API; failures read as sentences."""
from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
from gradio_client import Client

from backends.base import BackendError, GenParams, Message
from backends.sampling import SamplingSettings
from backends.openai import OpenAIBackend
from chatui.sampling_controls import SettingsControls
from tests.conftest import CAPITAL_PROMPT, free_port, start_app, start_llama_server
from tests.helpers import greedy

GREEDY = greedy(40)
STORY = "Write a long story about a dragon who learns to cook."


def remote(base_url: str, **kwargs) -> OpenAIBackend:
    backend = OpenAIBackend(base_url, kwargs.pop("remote_model", "smollm2"), **kwargs)
    backend.load()
    return backend


@pytest.mark.slow
def test_streams_from_a_real_server_and_matches_its_own_reply(llama_server):
    backend = remote(llama_server.base_url)
    chunks = list(backend.stream_chat([Message("user", CAPITAL_PROMPT)], GREEDY,
                                      threading.Event()))
    text = "".join(c.text for c in chunks)
    assert "Paris" in text and len([c for c in chunks if c.text]) >= 3
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage.completion_tokens > 0
    direct = httpx.post(f"{llama_server.base_url}/chat/completions", timeout=60, json={
        "model": "smollm2", "temperature": 0, "max_tokens": 40,
        "messages": [{"role": "user", "content": CAPITAL_PROMPT}]}).json()
    assert text == direct["choices"][0]["message"]["content"]
    assert backend.served_models() == ["smollm2"]
    backend.unload()


@pytest.mark.slow
def test_stop_closes_the_stream(llama_server):
    backend = remote(llama_server.base_url)
    cancel = threading.Event()
    received = []
    for chunk in backend.stream_chat([Message("user", STORY)],
                                     greedy(500), cancel):
        received.append(chunk)
        if len(received) == 3:
            cancel.set()
    assert received[-1].finish_reason == "cancelled"
    assert len(received) <= 5
    assert not [t for t in threading.enumerate() if t.name == "remote-stop"]
    backend.unload()


@pytest.mark.slow
def test_a_model_the_server_does_not_serve_is_named(llama_server):
    with pytest.raises(BackendError, match=r"does not serve 'gpt-9'; it serves: smollm2"):
        remote(llama_server.base_url, remote_model="gpt-9")


def test_connection_refused_reads_as_a_sentence():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BackendError) as raised:
        remote(url)
    assert str(raised.value) == (f"cannot connect to {url}: connection refused "
                                 "(is the server running?)")


@pytest.mark.slow
def test_a_server_that_never_answers_times_out(tmp_path):
    with socket.socket() as silent:  # accepts connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        started = time.monotonic()
        with pytest.raises(BackendError, match=r"sent nothing for 1 s \(timeout\)"):
            remote(url, timeout=1.0)
        assert time.monotonic() - started < 5


@pytest.mark.slow
def test_a_missing_key_variable_is_named(monkeypatch, llama_server):
    monkeypatch.delenv("NO_SUCH_KEY_VARIABLE", raising=False)
    with pytest.raises(BackendError, match="the environment variable NO_SUCH_KEY_VARIABLE"):
        remote(llama_server.base_url, api_key_env="NO_SUCH_KEY_VARIABLE")


def remote_models_yaml(tmp_path, base_url: str, smollm2_path) -> str:
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n"
        f"  - {{id: local, name: Local SmolLM2, backend: llamacpp, path: '{smollm2_path}'}}\n"
        f"  - {{id: remote, name: Remote SmolLM2, backend: openai, base_url: '{base_url}',"
        " remote_model: smollm2, timeout: 30}\n")
    return str(path)


def page_reply(client: Client, model: str, text: str, max_tokens: int = 40):
    settings = SamplingSettings(temperature=0.0, max_new_tokens=max_tokens)
    return client.submit(text, model, "", *SettingsControls.shown(settings), api_name="/send")


def last_bot_text(result) -> str:
    chatbot = result[0]
    content = chatbot[-1]["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "")
                                                            for p in content)


@pytest.mark.slow
def test_through_the_page_and_the_api_and_a_server_killed_mid_stream(
        tmp_path, smollm2_path):
    server = start_llama_server(smollm2_path)
    app = start_app(["--models", remote_models_yaml(tmp_path, server.base_url, smollm2_path),
                     "--data-dir", str(tmp_path / "data"), "--model", "remote"])
    try:
        client = Client(app.url, verbose=False)
        answer = last_bot_text(page_reply(client, "remote", CAPITAL_PROMPT).result())
        assert "Paris" in answer and "Remote SmolLM2" in answer  # the footer names it

        api = httpx.post(f"{app.url}v1/chat/completions", timeout=60, json={
            "model": "remote", "temperature": 0, "stream": True,
            "messages": [{"role": "user", "content": CAPITAL_PROMPT}]})
        assert api.status_code == 200 and "Paris" in api.text and "[DONE]" in api.text

        job = page_reply(client, "remote", STORY, max_tokens=1500)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                len(last_bot_text(update)) > 40 for update in job.outputs()):
            time.sleep(0.05)
        server.stop()  # killed mid-stream
        failed = last_bot_text(job.result(timeout=60))
        assert "⚠️" in failed and "closed the connection in the middle of the reply" in failed

        local = last_bot_text(page_reply(client, "local", CAPITAL_PROMPT).result(timeout=120))
        assert "Paris" in local  # the app keeps serving other models
        after = httpx.post(f"{app.url}v1/chat/completions", timeout=60, json={
            "model": "remote", "messages": [{"role": "user", "content": "hi"}]})
        assert after.status_code >= 500
        assert "cannot connect" in after.json()["error"]["message"]
    finally:
        server.stop()
        app.process.terminate()
        app.process.wait(timeout=20)


def test_capabilities_and_placement():
    backend = OpenAIBackend("http://127.0.0.1:8000/v1/", "smollm2")
    assert not OpenAIBackend.can_continue
    assert not OpenAIBackend.shows_prompt  # the server applies its own template
    assert not OpenAIBackend.exact_token_counts  # the server's counts, or an estimate
    assert backend.placement == "remote: http://127.0.0.1:8000/v1"


def test_unhonoured_names_the_settings_a_plain_openai_request_cannot_carry():
    backend = OpenAIBackend("http://127.0.0.1:8000/v1", "smollm2")
    assert backend.unhonoured(GenParams(SamplingSettings(top_k=0, repetition_penalty=1.0, seed=7), stop=("a", "b"))) == []
    assert backend.unhonoured(GenParams(SamplingSettings(top_k=40, repetition_penalty=1.3))) == [
        "top_k 40", "repetition penalty 1.3"]
    assert backend.unhonoured(GenParams(SamplingSettings(top_k=0), stop=("1", "2", "3", "4", "5"))) == [
        "stop strings past the first 4: '5'"]


@pytest.mark.slow
def test_continuing_a_cut_reply_is_refused_not_answered_afresh(llama_server):
    backend = remote(llama_server.base_url)
    cut = [Message("user", CAPITAL_PROMPT), Message("assistant", "The capital of France is")]
    with pytest.raises(BackendError, match=r"^smollm2 on a remote server cannot continue a "
                                           r"cut reply$"):
        list(backend.stream_chat(cut, GenParams(SamplingSettings(temperature=0.0, max_new_tokens=8), continue_final=True), threading.Event()))
    chunks = list(backend.stream_chat(cut[:1], GREEDY, threading.Event()))
    assert "Paris" in "".join(c.text for c in chunks)  # the connection is still good
    backend.unload()
