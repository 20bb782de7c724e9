"""Part 6: the KV cache in f16 against q8_0, with a long prompt in a 2k context.

q8_0 halves the cache's bytes (llama.cpp quantizes K and V in 32-value blocks), which
matters when several slots each hold a full context; the question is what it costs in
speed. Each type gets a fresh single-slot backend: the process's resident set growth across
the load and one reply to a prompt of about 1500 tokens, the decode rate of that reply, and
the planner's figure for the cache.
"""
from __future__ import annotations

import gc
import logging
import os
from collections.abc import MutableMapping, Sequence
from pathlib import Path

from backends.amx_probe import BufferPath
from backends.base import Message
from backends.kv_probe import ENV, KvChoice, choose_kv_cache, remembered, settled
from backends.llamacpp import LlamaCppBackend
from bench.common import metered_reply, rss_mb, smollm2_gguf

log = logging.getLogger(__name__)

CONTEXT = 2048
TYPES = ("f16", "q8_0")
FILLER = ("The old lighthouse keeper wrote down the weather every morning, the wind, "
          "the waves and the colour of the sky. ")


def settle(buffers: BufferPath, cache_file: Path | None = None,
           probe_command: Sequence[str] | None = None,
           environ: MutableMapping[str, str] = os.environ) -> KvChoice:
    """Settle `kv_cache: auto` before anything is timed, waiting for the measurement as
    `choose_buffers` settles the weight buffers: then no load here or in the app processes
    the bench starts measures in the background on the cores being timed. Those read the
    same answer: kv-probe.json is in the user cache directory, which the app's --data-dir
    does not move, and they inherit this environment. An answer that is not remembered (a
    timeout on a busy machine, a child that could not start) is pinned for this run through
    LOCAL_CHAT_KV_CACHE instead."""
    choice = choose_kv_cache(probe_model=smollm2_gguf(), extra_buffers=buffers.extra_buffers,
                             cache_file=cache_file, setting=environ.get(ENV),
                             probe_command=probe_command)
    if settled("auto", True, environ.get(ENV)) is None and remembered(cache_file) is None:
        log.warning("KV cache %s for this run (%s): not remembered", choice.kv_cache,
                    choice.reason)
        environ[ENV] = choice.kv_cache
    return choice


def long_prompt(backend: LlamaCppBackend, target_tokens: int) -> tuple[str, int]:
    """Notes repeated to about `target_tokens` prompt tokens (chat template included),
    then a request for a story; the prompt and its real token count."""
    ask = "\n\nNow write a long story from these notes."

    def count(repeats: int) -> int:
        return backend.count_tokens([Message("user", FILLER * repeats + ask)])

    per = (count(20) - count(10)) / 10
    repeats = max(1, int((target_tokens - count(0)) / per))
    while repeats > 1 and count(repeats) > target_tokens:
        repeats -= 1
    return FILLER * repeats + ask, count(repeats)


def measure(kv_cache: str, prompt_tokens: int, max_tokens: int) -> dict:
    gc.collect()
    before = rss_mb()
    backend = LlamaCppBackend(smollm2_gguf(), context_length=CONTEXT, parallel=1,
                              kv_cache=kv_cache)
    backend.load()
    try:
        prompt, tokens = long_prompt(backend, prompt_tokens)
        meter = metered_reply(backend, prompt, max_tokens)
        growth = rss_mb() - before
        breakdown = backend.memory_breakdown()
        notes = list(backend.runtime_notes)
    finally:
        backend.unload()
    return {"kv_cache": kv_cache, "prompt_tokens": tokens, "rss_growth_mb": growth,
            "planned_kv_cache_mb": breakdown.kv_cache / 1e6,
            "planned_saved_states_mb": breakdown.saved_states / 1e6,
            "time_to_first_token_s": meter.time_to_first_token,
            "tokens_per_second": meter.tokens_per_second,
            "tokens": meter.completion_tokens, "runtime_notes": notes}


def run(prompt_tokens: int, max_tokens: int) -> dict:
    # A first load costs once what later loads reuse (llama.cpp's backend, the file's pages):
    # paid here, so the first type measured is not charged for it.
    warm_up = LlamaCppBackend(smollm2_gguf(), context_length=CONTEXT, parallel=1)
    warm_up.load()
    warm_up.unload()
    rows = [measure(kv_cache, prompt_tokens, max_tokens) for kv_cache in TYPES]
    f16, q8 = rows
    return {"context": CONTEXT, "max_tokens": max_tokens, "rows": rows,
            "q8_0_vs_f16_tokens_per_second": (q8["tokens_per_second"] / f16["tokens_per_second"]
                                              if q8["tokens_per_second"]
                                              and f16["tokens_per_second"] else None),
            "q8_0_vs_f16_planned_kv": q8["planned_kv_cache_mb"] / f16["planned_kv_cache_mb"]}
