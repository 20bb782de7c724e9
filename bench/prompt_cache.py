"""First-token time for a ~1,700-token document asked again in a new request after six other
conversations (128-token stories), on LlamaCppBackend directly (SmolLM2, 4 slots of 2048
tokens): what the prompt cache in host RAM is for (issue 30). Not a test: timings move with
the machine's load, so compare the cold and the cached ask of one run.

    python -m bench.prompt_cache [LOAN_BYTES]   # e.g. 4e9: what the planner would lend
"""
from __future__ import annotations

import sys
import threading
import time

from backends.base import GenParams, Message
from backends.llamacpp import LlamaCppBackend
from backends.sampling import SamplingSettings
from bench.common import smollm2_gguf

FIRST, SECOND = "What does district 3 store?", "How many crates of salt are there?"


def document(backend: LlamaCppBackend, tokens: int = 1700) -> str:
    sentences = [f"Item {i}: the warehouse in district {i % 17} stores {i * 37 % 1000} crates "
                 f"of {['apples', 'copper', 'linen', 'salt', 'timber'][i % 5]}."
                 for i in range(120)]
    doc = " ".join(sentences)
    while backend.count_tokens([Message("user", f"{doc}\n\n{FIRST}")]) > tokens:
        doc = doc[: int(len(doc) * 0.98)]
    return doc


def ask(backend: LlamaCppBackend, text: str, max_new: int = 16) -> tuple[float, int]:
    """Seconds to the first token, and the prompt tokens taken from the cache."""
    params = GenParams(SamplingSettings(temperature=0, max_new_tokens=max_new))
    started, first, cached = time.perf_counter(), float("nan"), 0
    for chunk in backend.stream_chat([Message("user", text)], params, threading.Event()):
        if first != first and chunk.text:  # still nan: this is the first
            first = time.perf_counter() - started
        if chunk.usage:
            cached = chunk.usage.cached_tokens
    return first, cached


def main(loan: int) -> None:
    backend = LlamaCppBackend(smollm2_gguf(), context_length=2048, parallel=4)
    backend.grant_prompt_cache(loan)
    backend.load()
    try:
        doc = document(backend)
        print("prompt tokens", backend.count_tokens([Message("user", f"{doc}\n\n{FIRST}")]))
        print("first ask: first token %.2f s, cached %d" % ask(backend, f"{doc}\n\n{FIRST}"))
        for topic in ("dragons", "the sea", "bread", "rivers", "mountains", "stars"):
            ask(backend, f"Write a story about {topic}.", max_new=128)
        print("again, new question, after 6 other conversations: first token %.2f s, "
              "cached %d" % ask(backend, f"{doc}\n\n{SECOND}"))
        print("runtime notes:", backend.runtime_notes)
    finally:
        backend.unload()


if __name__ == "__main__":
    main(int(float(sys.argv[1])) if len(sys.argv) > 1 else 0)
