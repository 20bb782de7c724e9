"""Part 2: what each engine and quantization costs, on the same SmolLM2 weights.

Greedy decoding, the same prompt; tokens/s is the decode rate after the first token, memory
is the process's resident set growth (and transformers' own count of its weights).
"""
from __future__ import annotations

import gc
import tempfile
import threading
import time
from pathlib import Path

from backends.base import GenParams, Message
from backends.sampling import SamplingSettings
from backends.hf import HFSettings, TransformersBackend
from backends.llamacpp import LlamaCppBackend
from bench.common import PROMPTS, rss_mb, smollm2_gguf
from chatcore.generation.reply_timing import ReplyMeter


def measure(label: str, backend, max_tokens: int) -> dict:
    prompt = [Message("user", PROMPTS[0])]
    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    backend.load()
    load_s = time.perf_counter() - started
    list(backend.stream_chat(prompt, GenParams(SamplingSettings(temperature=0.0, max_new_tokens=4)),
                             threading.Event()))  # warm-up
    meter = ReplyMeter()
    for chunk in backend.stream_chat([Message("user", PROMPTS[1])],
                                     GenParams(SamplingSettings(temperature=0.0, max_new_tokens=max_tokens)),
                                     threading.Event()):
        meter.observe(chunk)
    result = {"engine": label, "tokens_per_second": meter.tokens_per_second,
              "time_to_first_token_s": meter.time_to_first_token, "load_s": load_s,
              "rss_growth_mb": rss_mb() - before,
              "weights_mb": backend.memory_footprint() / 1e6
              if hasattr(backend, "memory_footprint") else None}
    backend.unload()
    return result


def run(quick: bool, max_tokens: int) -> list[dict]:
    gguf = smollm2_gguf()
    with tempfile.TemporaryDirectory(prefix="bench-dequantized-") as cache:
        variants = [
            ("llama.cpp, GGUF Q4_1", LlamaCppBackend(gguf)),
            ("transformers, fp32", TransformersBackend(gguf, HFSettings(device="cpu"))),
            ("transformers, 8-bit", TransformersBackend(
                gguf, HFSettings(quant_bits=8, device="cpu"), cache_dir=Path(cache))),
            ("transformers, 4-bit nf4", TransformersBackend(
                gguf, HFSettings(quant_bits=4, device="cpu"), cache_dir=Path(cache))),
        ]
        if quick:
            variants = variants[:2]
        return [measure(label, backend, max_tokens) for label, backend in variants]


def threads(max_tokens: int, runs: int) -> list[dict]:
    """Part 5: llama.cpp decode speed with 1 and 2 threads (the default is physical cores)."""
    results = []
    for count in (1, 2):
        backend = LlamaCppBackend(smollm2_gguf(), n_threads=count)
        backend.load()
        rates = []
        for prompt in PROMPTS[:runs + 1]:
            meter = ReplyMeter()
            for chunk in backend.stream_chat([Message("user", prompt)],
                                             GenParams(SamplingSettings(temperature=0.0, max_new_tokens=max_tokens)),
                                             threading.Event()):
                meter.observe(chunk)
            rates.append(meter.tokens_per_second)
        backend.unload()
        rates = sorted(r for r in rates[1:] if r)
        results.append({"threads": count, "tokens_per_second": rates[len(rates) // 2]})
    return results
