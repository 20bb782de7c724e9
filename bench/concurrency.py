"""Part 3: several clients streaming at once through the API, with 1 and with 4 parallel slots.

The same workload for every server (the app with `parallel: 1`, the app with `parallel: 4`,
and llama.cpp's own server as the anchor, bench/llama_server.py): N clients at once, each
with its own greedy story prompt and the same token limit. Client i always gets the same
prompt, so every server answers the same requests.
"""
from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from bench.common import MODEL, PROMPTS, AppProcess, Timing, api_stream, models_yaml

log = logging.getLogger(__name__)

LEVELS = (1, 2, 4, 8)
QUICK_LEVELS = (1, 4)
PARALLEL = (1, 4)  # the app's slot counts compared: taking turns, and batched


def clients(url: str, count: int, max_tokens: int, model: str = MODEL,
            auth: tuple[str, str] | None = None) -> dict:
    """`count` clients start at once, one connection and one reply each (signed in with
    HTTP Basic `auth` where the server asks for it)."""
    timings: list[Timing | None] = [None] * count
    spans: list[tuple[float, float] | None] = [None] * count
    errors: list[Exception] = []
    start = threading.Barrier(count)

    def client(index: int) -> None:
        try:
            with httpx.Client(auth=auth) as http:
                start.wait()
                started = time.perf_counter()
                timings[index] = api_stream(http, url, prompt_for(index), max_tokens, model)
                spans[index] = (started, time.perf_counter())
        except Exception as exc:  # noqa: BLE001 - raised again in the caller's thread
            errors.append(exc)
            start.abort()  # no client waits for one that will never come

    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)),
                   errors[0])
    wall = max(end for _, end in spans) - min(begin for begin, _ in spans)
    tokens = sum(t.tokens for t in timings)
    return {"clients": count, "aggregate_tokens_per_second": tokens / wall,
            "per_client_tokens_per_second": [t.tokens / (end - begin)
                                             for t, (begin, end) in zip(timings, spans)],
            "per_client_decode_tokens_per_second": [t.tokens_per_second for t in timings],
            "time_to_first_token_s": [t.time_to_first_token for t in timings],
            "tokens": [t.tokens for t in timings], "wall_s": wall}


def prompt_for(index: int) -> str:
    return PROMPTS[(index + 3) % len(PROMPTS)]


def levels(url: str, counts: Sequence[int], max_tokens: int, model: str = MODEL) -> list[dict]:
    """Each level in turn on one server, after a warm-up that loads the model."""
    with httpx.Client() as http:
        api_stream(http, url, PROMPTS[0], 8, model)
    return [clients(url, count, max_tokens, model) for count in counts]


def run(quick: bool, max_tokens: int) -> dict:
    """The app twice, one after the other: `parallel: 1`, then `parallel: 4`."""
    counts = QUICK_LEVELS if quick else LEVELS
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-models-") as directory:
        for parallel in PARALLEL:
            with AppProcess(["--models", str(models_yaml(Path(directory), parallel))]) as app:
                log.info("concurrency with parallel %d at %s", parallel, app.url)
                runs.append({"parallel": parallel,
                             "levels": levels(app.url, counts, max_tokens)})
    return {"max_tokens": max_tokens, "clients": list(counts), "runs": runs,
            "every_client_answered": all(t == max_tokens for r in runs for level in r["levels"]
                                         for t in level["tokens"])}


def level(results: dict, parallel: int | None, count: int) -> dict | None:
    """One level of one run, e.g. 4 clients with parallel 4 (parallel None: a result with
    one list of levels, as llama-server's); None when it was not run."""
    if parallel is None:
        found = results.get("levels", [])
    else:
        found = next((r["levels"] for r in results["runs"] if r["parallel"] == parallel), [])
    return next((lv for lv in found if lv["clients"] == count), None)
