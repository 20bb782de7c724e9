"""Part 0: a newcomer's first wait, from launching `python chat_app.py` to "Chat page:"
printed, and the server's resident memory at that moment, before any model is loaded
(the first page imports no engine: torch, transformers and llama.cpp wait for a model)."""
from __future__ import annotations

from bench.common import AppProcess, median

TARGET_S = 4.0  # launch to serving, on the 2-core machine of the committed report


def run(runs: int) -> dict:
    """Start the app `runs` times, one after another; medians and each start."""
    each = []
    for _ in range(runs):
        with AppProcess() as app:
            each.append({"serving_s": app.serving_s, "rss_mb": app.rss_mb})
    return {"runs": runs, "target_s": TARGET_S,
            "serving_s": median([start["serving_s"] for start in each]),
            "rss_before_model_mb": median([start["rss_mb"] for start in each]),
            "each": each}
