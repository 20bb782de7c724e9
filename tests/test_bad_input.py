"""Bad input, tried on purpose: generated API bodies, odd model files, and what must never
come of them (a 5xx, a traceback, a lost message)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

MODEL = "smollm2-135m"
VALID = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
CASES = 1000


def bad_bodies(count: int, seed: int = 2026) -> list[tuple[str, bytes]]:
    """`count` request bodies, each broken in one way a client could break it."""
    rng = random.Random(seed)
    junk = [None, True, -1, 3.5, 10**30, "", "x" * 50, [], {}, [1, "a"], {"a": 1}, "🙂"]
    fields = {"temperature": ("number from 0 to 2", [-0.1, 2.5, "hot", [], {}]),
              "top_p": ("number in (0, 1]", [0, -1, 1.5, "all"]),
              "max_tokens": ("positive integer", [0, -5, 1.5, "many", [], {}]),
              "seed": ("non-negative integer", [-1, 2**64, "s", 1.5, []]),
              "stream": ("boolean", ["yes", 2, [], {}]),
              "stop": ("<= 4 strings", [["a", "b", "c", "d", "e"], [""], 5, [1], {}]),
              "n": ("1", [0, 2, "1x", []]),
              "model": ("a model id", [None, 5, [], {}, ""]),
              "messages": ("a list of messages", [None, "hi", [], {}, [1], [[]], [{}]])}

    def mutate() -> tuple[str, bytes]:
        body = json.loads(json.dumps(VALID))
        kind = rng.randrange(9)
        if kind == 0:  # not JSON at all, or cut short
            text = json.dumps(body)
            return "broken JSON", text[:rng.randrange(1, len(text))].encode() + \
                rng.choice([b"", b"}", b"\x00", b"\xff\xfe", b",,"])
        if kind == 1:  # JSON, but not an object
            return "not an object", json.dumps(rng.choice([1, "s", [body], None, True])).encode()
        if kind == 2:  # a required field missing
            del body[rng.choice(["model", "messages"])]
            return "missing field", json.dumps(body).encode()
        if kind == 3:  # an unknown field
            body["x_" + "".join(rng.choices("abcdefgh", k=5))] = rng.choice(junk)
            return "unknown field", json.dumps(body).encode()
        if kind == 4:  # a known field with a wrong value
            name = rng.choice(list(fields))
            body[name] = rng.choice(fields[name][1])
            return f"bad {name}", json.dumps(body).encode()
        if kind == 5:  # a message with a bad role or content
            message = body["messages"][0]
            key = rng.choice(["role", "content", "extra"])
            message[key] = rng.choice({
                "role": ["robot", "tool", 5, None, ""],
                "content": [5, None, [{"type": "image_url"}], [{"type": "text"}], {"t": 1}],
                "extra": ["x", 1, None]}[key])
            return f"bad message {key}", json.dumps(body).encode()
        if kind == 6:  # an unknown model
            body["model"] = "no-such-" + "".join(rng.choices("xyz0123", k=6))
            return "unknown model", json.dumps(body).encode()
        if kind == 7:  # wrong encoding or garbage bytes
            return "garbage", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        body["messages"] = [{"role": rng.choice(["user", "system"]),
                             "content": rng.choice(junk[2:7])}] * rng.randrange(0, 2)
        if body["messages"] and isinstance(body["messages"][0]["content"], str):
            body["messages"][0]["content"] = 7  # keep it broken
        return "bad messages list", json.dumps(body).encode()

    return [mutate() for _ in range(count)]


@pytest.mark.slow
def test_a_thousand_bad_bodies_all_get_4xx_in_openai_shape(running_app):
    kinds: dict[str, int] = {}
    with httpx.Client(base_url=running_app.url, timeout=30) as client:
        for kind, body in bad_bodies(CASES):
            reply = client.post("v1/chat/completions", content=body,
                                headers={"content-type": "application/json"})
            assert 400 <= reply.status_code < 500, (kind, body[:200], reply.status_code,
                                                    reply.text[:300])
            error = reply.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}, (kind, error)
            assert error["message"] and "Traceback" not in error["message"], (kind, error)
            kinds[kind] = kinds.get(kind, 0) + 1
        # and the app still answers a good one
        good = client.post("v1/chat/completions", json={**VALID, "max_tokens": 5})
        assert good.status_code == 200
    print(f"\n{CASES} bad bodies, all 4xx: {dict(sorted(kinds.items()))}")
    assert len(kinds) >= 10


@pytest.mark.slow
def test_an_oversized_body_is_413_in_openai_shape(running_app):
    huge = json.dumps({**VALID, "messages": [{"role": "user", "content": "x" * (5 * 2**20)}]})
    reply = httpx.post(f"{running_app.url}v1/chat/completions", content=huge, timeout=60,
                       headers={"content-type": "application/json"})
    assert reply.status_code == 413
    assert "larger than 4 MiB" in reply.json()["error"]["message"]


@pytest.mark.slow
def test_a_checkpoint_directory_without_weights_says_so(tmp_path):
    from backends.base import BackendError
    from backends.hf import HFSettings, TransformersBackend

    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    backend = TransformersBackend(tmp_path, HFSettings(device="cpu"))
    for attempt in (backend.memory_estimate, backend.load):
        try:
            attempt()
        except BackendError as exc:
            assert str(exc) == (f"{tmp_path} holds no weights (looked for *.safetensors, "
                                "pytorch_model*.bin): is the download complete?")
        else:
            raise AssertionError(f"{attempt.__name__} accepted a directory with no weights")


def test_random_bytes_named_gguf_are_refused_and_the_app_keeps_serving(tmp_path):
    from chatcore.generation.registry import load_registry
    from chatcore.generation.factory import make_backend
    from chatcore.generation.manager import ModelManager, ModelState, ModelUnavailable

    noise = tmp_path / "noise.gguf"
    noise.write_bytes(random.Random(7).randbytes(4096))
    models = tmp_path / "models.yaml"
    models.write_text(f"models:\n  - {{id: noise, backend: llamacpp, path: '{noise}'}}\n")
    manager = ModelManager(load_registry(models), make_backend)
    try:
        manager.load("noise")
    except ModelUnavailable as exc:
        assert f"{noise} is not a GGUF file" in str(exc)
    else:
        raise AssertionError("random bytes loaded as a model")
    status = manager.status("noise")
    assert status.state is ModelState.FAILED and "not a GGUF file" in status.reason


def test_exports_stay_in_their_own_random_folder_whatever_the_title(tmp_path):
    from chatcore.conversations.store import Store
    from chatcore.i18n import english
    from chatui.conversations import ConversationHandlers
    from chatui.exports import ExportFiles
    from tests.test_chat_handlers import ALICE

    store = Store(tmp_path / "data")
    conversation = store.create_conversation("alice", "../../../../etc/passwd", "m")
    handlers = ConversationHandlers(None, store, None, ExportFiles(tmp_path / "exports"),
                                    texts=english())
    folders = set()
    for kind in ("md", "json"):
        update, _ = handlers.export(conversation, kind, ALICE)
        written = Path(update["value"]).resolve()
        assert written.parent.parent == (tmp_path / "exports").resolve()
        assert written.name == f"etc-passwd.{kind}"
        folders.add(written.parent.name)
    assert len(folders) == 2  # every export in a folder of its own
    store.close()


def test_trust_remote_code_is_off_unless_an_entry_asks(tmp_path):
    from chatcore.generation.registry import load_registry
    from tests.conftest import SHIPPED_MODELS

    assert not any(e.trust_remote_code for e in load_registry(SHIPPED_MODELS).entries)
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  - {id: t, backend: transformers, path: x}\n"
                      "  - {id: r, backend: transformers, path: x, trust_remote_code: true}\n")
    flags = {e.id: e.trust_remote_code for e in load_registry(models).entries}
    assert flags == {"t": False, "r": True}


@pytest.mark.slow
def test_import_cannot_read_a_file_outside_the_uploads(running_app):
    """The import event, called by hand with a server path instead of an upload."""
    import uuid

    config = httpx.get(f"{running_app.url}config", timeout=30).json()
    button = next(c["id"] for c in config["components"]
                  if c.get("props", {}).get("elem_id") == "import")
    event = next(d["id"] for d in config["dependencies"] if [button, "upload"] in d["targets"])
    before = httpx.get(f"{running_app.url}v1/models", timeout=30)  # the app is up
    assert before.status_code == 200
    session = uuid.uuid4().hex
    with httpx.Client(base_url=running_app.url, timeout=60) as http:
        http.post("gradio_api/queue/join", json={
            "data": [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, ""],
            "fn_index": event, "session_hash": session, "event_data": None,
            "trigger_id": None}).raise_for_status()
        with http.stream("GET", "gradio_api/queue/data",
                         params={"session_hash": session}) as events:
            outcome = next(json.loads(line[6:]) for line in events.iter_lines()
                           if '"process_completed"' in line)
    assert outcome["success"] is False, outcome
    titles = [c["title"] for c in Client(running_app.url, verbose=False)
              .predict("", api_name="/conversations")]
    assert not any("passwd" in t or "root" in t for t in titles)
