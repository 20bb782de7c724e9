"""Inputs shaped to cost the server, sent the way an attacker sends them: a /v1 body far
over the 4 MiB cap (declared in Content-Length, or streamed without one), JSON nested
200,000 deep (to /v1 and to both import parsers), and a prompt set saved under a name that
another set already has."""
from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from types import TracebackType
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from chatcore.conversations.store import Store
from chatcore.i18n import english
from chatui.conversations import ConversationHandlers
from chatui.prompt_set_handlers import BUILTIN, MINE
from tests.conftest import SAFETY_S, SHIPPED_MODELS, RunningApp, start_app
from tests.test_chat_handlers import ALICE
from tests.test_evaluate_handlers import CAROL, page

MODEL = "smollm2-135m"
MIB = 2**20
DECLARED = 512 * MIB  # what the attacker's Content-Length says
STREAMED = 64 * MIB  # what the attacker streams without a length
GREW_AT_MOST = 32 * MIB  # well under either body: the server never held it
NESTED = b"[" * 200_000  # 200 KB that the stdlib's recursive JSON reader cannot finish
OPENAI_ERROR_FIELDS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[RunningApp]:
    """An app of this module's own, so its memory is only what these requests did to it."""
    running = start_app(["--models", str(SHIPPED_MODELS), "--data-dir",
                         str(tmp_path_factory.mktemp("hardening-data"))])
    yield running
    running.stop()


class PeakRss:
    """The most resident memory a process reached while the block ran, sampled in a thread:
    a body the server reads whole shows up while it is held, even if it is freed after."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.before = self.peak = self._process.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.before


def assert_openai_error(status: int, body: bytes, expected: int) -> str:
    """The error's message, once status and body are checked: OpenAI's error JSON."""
    assert status == expected, body[:300]
    document = json.loads(body)
    assert set(document) == {"error"} and set(document["error"]) == OPENAI_ERROR_FIELDS
    assert document["error"]["type"] == "invalid_request_error"
    assert "Traceback" not in document["error"]["message"]
    return document["error"]["message"]


def still_answers(app: RunningApp) -> None:
    """The same server still serves a good request, through the model."""
    reply = httpx.post(f"{app.url}v1/chat/completions", timeout=120, json={
        "model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["object"] == "chat.completion"


# -- finding 6: /v1 bodies ------------------------------------------------------------------
@pytest.mark.slow
def test_a_body_declared_at_512_mib_gets_413_before_the_server_reads_it(app):
    """Content-Length says 512 MiB and only 64 KiB follow: a server that reads before it
    checks waits for the rest (the hang guard fails this); this one answers at once."""
    address = urlsplit(app.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=SAFETY_S)
    with PeakRss(app.process.pid) as rss:
        connection.putrequest("POST", "/v1/chat/completions")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(DECLARED))
        connection.endheaders(message_body=b'{"model": "' + b"x" * (64 * 1024))
        reply = connection.getresponse()
        body = reply.read()
    connection.close()
    message = assert_openai_error(reply.status, body, 413)
    assert "larger than 4 MiB" in message
    assert reply.getheader("connection") == "close"  # the rest is never taken in
    assert rss.growth < GREW_AT_MOST, f"the server grew by {rss.growth / MIB:.0f} MiB"
    assert httpx.get(f"{app.url}v1/models", timeout=SAFETY_S).status_code == 200


@pytest.mark.slow
def test_a_streamed_64_mib_body_gets_413_and_is_never_held(app):
    """Chunked, no length: the server reads only until the cap is passed."""
    def chunks() -> Iterator[bytes]:
        piece = b" " * (64 * 1024)
        for _ in range(STREAMED // len(piece)):
            yield piece

    with PeakRss(app.process.pid) as rss:
        reply = httpx.post(f"{app.url}v1/chat/completions", content=chunks(),
                           headers={"content-type": "application/json"}, timeout=SAFETY_S)
    assert reply.request.headers.get("transfer-encoding") == "chunked"
    message = assert_openai_error(reply.status_code, reply.content, 413)
    assert "larger than 4 MiB" in message
    assert rss.growth < GREW_AT_MOST, f"the server grew by {rss.growth / MIB:.0f} MiB"


@pytest.mark.slow
def test_200000_nested_brackets_get_400_in_openai_shape_and_the_server_still_answers(app):
    reply = httpx.post(f"{app.url}v1/chat/completions", content=NESTED, timeout=SAFETY_S,
                       headers={"content-type": "application/json"})
    message = assert_openai_error(reply.status_code, reply.content, 400)
    assert "nest" in message
    still_answers(app)


def test_a_nested_conversation_file_is_refused_naming_the_file(tmp_path):
    """Through the page's import, as the person uploads it; nothing is stored."""
    store = Store(tmp_path / "data")
    handlers = ConversationHandlers(None, store, None, tmp_path / "data" / "exports",
                                    texts=english())
    brackets = tmp_path / "brackets.json"
    brackets.write_bytes(NESTED)
    deep_params = tmp_path / "deep-params.json"  # valid JSON the reader can finish
    deep_params.write_text(json.dumps({
        "format": "local-chat/conversation", "version": 1, "title": "t", "model": "m",
        "params": {"a": json.loads("[" * 500 + "]" * 500)}, "messages": []}))
    for upload in (brackets, deep_params):
        _, status = handlers.import_file(str(upload), "", ALICE)
        assert status.startswith("⚠️ Not imported: ") and upload.name in status, status
        assert "nest" in status
    assert store.list_conversations("alice", "") == []
    store.close()


def test_a_nested_prompt_set_file_is_refused_naming_the_file_and_line(tmp_path):
    handlers = page(tmp_path)
    upload = tmp_path / "deep.jsonl"
    upload.write_bytes(b'{"prompt": "fine"}\n' + NESTED + b"\n")
    picker, status = handlers.sets.import_set(str(upload), CAROL)
    assert status.startswith("⚠️ Nothing imported: deep.jsonl, line 2: "), status
    assert "nest" in status
    assert not [v for _, v in handlers.sets.set_choices("carol") if v.startswith(MINE)]


# -- finding 9: prompt-set names --------------------------------------------------------------
def mine(handlers) -> dict[str, list[str]]:
    """carol's own sets: name -> prompts."""
    return {s.name: [p.text for p in s.prompts] for s in handlers.evals.prompt_sets("carol")}


def test_renaming_a_set_to_a_name_in_use_is_refused_and_both_sets_stay(tmp_path):
    handlers = page(tmp_path)
    handlers.sets.save_set(None, "Scratch", [["scratch idea", "", ""]], CAROL)
    handlers.sets.save_set(None, "Thesis",
                           [["chapter one", "", ""], ["chapter two", "", ""]], CAROL)
    kept = {"Scratch": ["scratch idea"], "Thesis": ["chapter one", "chapter two"]}
    # The person opens Scratch, types Thesis in its name box and saves: also as "thesis ".
    for typed in ("Thesis", "thesis ", " THESIS"):
        picker, status = handlers.sets.save_set(MINE + "Scratch", typed,
                                                [["scratch idea", "", ""]], CAROL)
        assert status == ("⚠️ Not saved: you already have a set called “Thesis”. Pick "
                          "another name, or open that set to change it."), status
        assert picker == {"__type__": "update"}
        assert mine(handlers) == kept
    # A new set may not take the name either.
    _, status = handlers.sets.save_set(None, "Thesis", [["other", "", ""]], CAROL)
    assert "“Thesis”" in status and mine(handlers) == kept


def test_a_set_saved_under_its_own_name_is_updated_and_may_change_case(tmp_path):
    handlers = page(tmp_path)
    handlers.sets.save_set(None, "Thesis", [["chapter one", "", ""]], CAROL)
    handlers.sets.save_set(None, "Scratch", [["scratch idea", "", ""]], CAROL)
    _, status = handlers.sets.save_set(
        MINE + "Thesis", "Thesis", [["chapter one", "", ""], ["chapter two", "", ""]], CAROL)
    assert status == "Saved “Thesis” (2 prompts)."
    picker, status = handlers.sets.save_set(MINE + "Thesis", "thesis",
                                            [["chapter one", "", ""]], CAROL)
    assert picker["value"] == MINE + "thesis"
    assert mine(handlers) == {"Scratch": ["scratch idea"], "thesis": ["chapter one"]}
    picker, _ = handlers.sets.save_set(MINE + "Scratch", "Notes", [["scratch idea", "", ""]],
                                       CAROL)
    assert picker["value"] == MINE + "Notes"
    assert mine(handlers) == {"Notes": ["scratch idea"], "thesis": ["chapter one"]}
    # Another user's sets are theirs: the same name is free for them.
    handlers.evals.save_prompt_set("dave", handlers.find_set("carol", MINE + "thesis"))
    assert [s.name for s in handlers.evals.prompt_sets("dave")] == ["thesis"]


def test_a_built_in_set_name_is_refused_and_imports_and_copies_step_around_it(tmp_path):
    handlers = page(tmp_path)
    _, status = handlers.sets.save_set(BUILTIN + "Coding", "coding", [["mine", "", ""]],
                                       CAROL)
    assert status == "⚠️ Not saved: “Coding” is the name of a built-in set. Pick another name."
    assert mine(handlers) == {}
    picker, _ = handlers.sets.duplicate_set(BUILTIN + "Coding", CAROL)
    assert picker["value"] == MINE + "Coding (copy)"
    upload = tmp_path / "writing.jsonl"
    upload.write_text('{"prompt": "A haiku, please."}\n', encoding="utf-8")
    picker, status = handlers.sets.import_set(str(upload), CAROL)
    assert picker["value"] == MINE + "writing (copy)", status
