"""The anchor: llama.cpp's own C++ server on the same model and the same concurrency workload.

The app's batching is worth something only next to what llama.cpp itself does with slots,
so when $LLAMA_SERVER names a llama-server binary it serves SmolLM2 with 4 slots of the
app's context each, plain weight buffers (`--no-repack`) and the app's thread count, and the
client levels of bench/concurrency.py run against it in the same bench run. Without the
variable the report says the anchor was not run, and how to get it.
"""
from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from backends.cores import physical_cores
from bench import concurrency
from bench.common import free_port, smollm2_gguf, stop_process

log = logging.getLogger(__name__)

ENV = "LLAMA_SERVER"
HOW_TO = ("build llama.cpp's server (cmake -B build && cmake --build build --target "
          "llama-server) and set LLAMA_SERVER=path/to/build/bin/llama-server")
SLOTS = 4
CONTEXT = 2048  # per slot, as the app's shipped entry


class LlamaServer:
    """llama-server on a free loopback port, until the block ends; its log goes to a file."""

    def __init__(self, binary: str, model: Path, timeout: float = 120) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        self.command = [binary, "-m", str(model), "-np", str(SLOTS), "-t",
                        str(physical_cores()), "-c", str(SLOTS * CONTEXT), "--no-repack",
                        "--host", "127.0.0.1", "--port", str(port)]
        self._log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(self.command, stdout=self._log,
                                        stderr=subprocess.STDOUT, text=True)
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.close()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client() as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"llama-server exited with {self.process.returncode}: "
                                       f"{self.log_tail()}")
                try:
                    if http.get(f"{self.url}health", timeout=2).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.25)
        raise RuntimeError(f"llama-server was not healthy within {timeout:g} s: "
                           f"{self.log_tail()}")

    def log_tail(self, lines: int = 3) -> str:
        self._log.seek(0)
        return " | ".join(self._log.read().strip().splitlines()[-lines:]) or "no output"

    def close(self) -> None:
        stop_process(self.process)
        self._log.close()

    def __enter__(self) -> LlamaServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def version(binary: str) -> str:
    """What `llama-server --version` says (it writes to stderr), for the report."""
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (done.stdout + done.stderr).strip().splitlines()
    found = next((line for line in lines if line.startswith("version")), None)
    return found.removeprefix("version:").strip() if found else "unknown version"


def run(counts: Sequence[int], max_tokens: int) -> dict:
    """The client levels on llama-server, or why it was not run."""
    binary = os.environ.get(ENV, "").strip()
    if not binary:
        return {"run": False, "why": f"{ENV} is not set ({HOW_TO})"}
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        return {"run": False, "why": f"{ENV}={binary} is not an executable file ({HOW_TO})"}
    try:
        with LlamaServer(binary, smollm2_gguf()) as server:
            log.info("llama-server: %s", " ".join(server.command))
            levels = concurrency.levels(server.url, counts, max_tokens, model="smollm2")
            command = server.command
    except (RuntimeError, OSError, httpx.HTTPError) as exc:
        return {"run": False, "why": f"llama-server at {binary} failed: {exc}"}
    return {"run": True, "binary": binary, "version": f"llama-server {version(binary)}",
            "command": " ".join(Path(part).name if i in (0, 2) else part  # binary, model
                                for i, part in enumerate(command)),
            "slots": SLOTS, "levels": levels}
