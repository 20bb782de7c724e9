"""Part 5: llama.cpp's AMX weight buffers against plain buffers, where the probe allows.

The app loads models into AMX-repacked buffers only when the probe (backends/amx_probe.py)
found that they work on this machine; on some machines they crash the process. So the
comparison runs only when the probe passed, and otherwise records the probe's reason:
loading AMX buffers here would kill the bench.
"""
from __future__ import annotations

import logging
import statistics

from backends.amx_probe import NO_AMX, BufferPath, choose_buffers
from backends.llamacpp import LlamaCppBackend
from bench.common import PROMPTS, metered_reply, smollm2_gguf

log = logging.getLogger(__name__)


def decode_rate(buffers: BufferPath, max_tokens: int, runs: int) -> dict:
    """Median decode tokens/s of `runs` greedy one-client replies, after a warm-up."""
    backend = LlamaCppBackend(smollm2_gguf(), parallel=1, buffers=buffers)
    backend.load()
    try:
        metered_reply(backend, PROMPTS[0], 4)
        rates = [metered_reply(backend, PROMPTS[1 + i], max_tokens).tokens_per_second
                 for i in range(runs)]
        notes = list(backend.runtime_notes)
    finally:
        backend.unload()
    rates = [r for r in rates if r]
    return {"buffers": buffers.describe(), "runtime_notes": notes,
            "tokens_per_second": statistics.median(rates) if rates else None}


def run(max_tokens: int, runs: int) -> dict:
    path = choose_buffers(probe_model=smollm2_gguf())
    if not path.extra_buffers:
        return {"run": False, "path": path.describe(), "why": path.describe()}
    if path.reason == NO_AMX:
        return {"run": False, "path": path.describe(),
                "why": f"{path.describe()}: there is no AMX path to compare"}
    amx = decode_rate(path, max_tokens, runs)
    plain = decode_rate(BufferPath(False, "forced for the comparison"), max_tokens, runs)
    ratio = (amx["tokens_per_second"] / plain["tokens_per_second"]
             if amx["tokens_per_second"] and plain["tokens_per_second"] else None)
    return {"run": True, "path": path.describe(), "max_tokens": max_tokens, "runs": runs,
            "amx": amx, "plain": plain, "amx_vs_plain": ratio}
