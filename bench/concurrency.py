"""Part 3: several clients streaming at once through the API, on the default model."""
from __future__ import annotations

import threading
import time

import httpx

from bench.common import PROMPTS, AppProcess, api_stream


def clients(app: AppProcess, count: int, max_tokens: int) -> dict:
    timings = [None] * count
    spans = [None] * count

    def client(index: int) -> None:
        with httpx.Client() as http:
            started = time.perf_counter()
            timings[index] = api_stream(http, app.url, PROMPTS[(index + 3) % len(PROMPTS)],
                                        max_tokens)
            spans[index] = (started, time.perf_counter())

    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    tokens = sum(t.tokens for t in timings)
    per_client = [t.tokens / (end - start) for t, (start, end) in zip(timings, spans)]
    return {"clients": count, "aggregate_tokens_per_second": tokens / wall,
            "per_client_tokens_per_second": per_client,
            "per_client_decode_tokens_per_second": [t.tokens_per_second for t in timings],
            "time_to_first_token_s": [t.time_to_first_token for t in timings],
            "tokens": [t.tokens for t in timings], "wall_s": wall}


def run(app: AppProcess, max_tokens: int) -> dict:
    with httpx.Client() as http:  # warm-up: the model is loaded and resident
        api_stream(http, app.url, PROMPTS[0], 8)
    results = [clients(app, count, max_tokens) for count in (1, 2, 4)]
    single = results[0]["aggregate_tokens_per_second"]
    four = results[-1]
    return {"levels": results,
            "aggregate_at_4_vs_1": four["aggregate_tokens_per_second"] / single,
            "every_client_answered": all(t == max_tokens for r in results for t in r["tokens"]),
            "max_time_to_first_token_at_4_s": max(four["time_to_first_token_s"])}
