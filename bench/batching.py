"""Part 4: Compare-style, two panes on one entry: batched (parallel 4) against taking turns
(parallel 1).

Compare sends one prompt to two panes; when both panes hold the same entry, the replies
either share one llama.cpp batch or the second waits for the first. This runs that round
in-process through the model manager (the path Compare takes), with two different prompts
so neither pane reuses the other's cached prompt, and reports the round's wall time and
each pane's first token.
"""
from __future__ import annotations

import logging
import tempfile
import threading
import time
from pathlib import Path

from backends.base import GenParams, Message
from backends.sampling import SamplingSettings
from bench.common import MODEL, PROMPTS, models_yaml
from chatcore.generation.registry import load_registry
from chatcore.generation.factory import make_backend
from chatcore.generation.manager import ModelManager

log = logging.getLogger(__name__)

PARALLEL = (4, 1)  # batched, then taking turns
PANE_PROMPTS = (PROMPTS[5], PROMPTS[6])


def round_of_two(parallel: int, max_tokens: int) -> dict:
    """One Compare round (two panes, same entry) on a fresh manager with `parallel` slots."""
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as directory:
        models = ModelManager(load_registry(models_yaml(Path(directory), parallel)),
                              lambda entry: make_backend(entry, cache_dir=Path(directory)))
        try:
            backend = models.load(MODEL)
            _reply(models, [(MODEL, [Message("user", PROMPTS[0])], _greedy(4))])  # warm-up
            decoder = getattr(backend, "_decoder", None)
            steps_before = decoder.steps if decoder else None
            started = time.perf_counter()
            live = _reply(models, [(MODEL, [Message("user", p)], _greedy(max_tokens))
                                   for p in PANE_PROMPTS])
            wall = time.perf_counter() - started
            notes = list(backend.runtime_notes)
            widest = decoder.widest if decoder else None
            steps = decoder.steps - steps_before if decoder else None
        finally:
            models.unload_all()
    return {"parallel": parallel, "wall_s": wall, "runtime_notes": notes,
            "widest_step": widest, "decode_steps": steps,
            "panes": [{"time_to_first_token_s": reply.meter.time_to_first_token,
                       "tokens_per_second": reply.meter.tokens_per_second,
                       "tokens": reply.meter.completion_tokens} for reply in live]}


def run(max_tokens: int) -> dict:
    rounds = [round_of_two(parallel, max_tokens) for parallel in PARALLEL]
    batched, turns = rounds
    return {"max_tokens": max_tokens, "rounds": rounds,
            "turns_vs_batched_wall": turns["wall_s"] / batched["wall_s"]}


def _greedy(max_tokens: int) -> GenParams:
    return GenParams(SamplingSettings(temperature=0.0, max_new_tokens=max_tokens))


def _reply(models: ModelManager, requests: list) -> list:
    """Run the requests at once, as Compare does; the live replies when all are done."""
    with models.start(requests, threading.Event()) as replies:
        for _, event in replies:
            if isinstance(event, Exception):
                raise event
    return replies.live
