"""Load SmolLM2 and SmolLM2 with a LoRA adapter (two entries, one shared base) in a fresh
process, reply with both at once as Compare does, and print the planner's reservation
beside the real RSS growth.

    python tests/lora_probe.py SMOLLM2_GGUF ADAPTER_GGUF WORK_DIR
"""
from __future__ import annotations

import json
import threading
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import llama_cpp  # noqa: E402,F401

from backends.base import Chunk, Message  # noqa: E402
from backends.shared_weights import SharedWeights  # noqa: E402
from chatcore.generation.factory import make_backend  # noqa: E402
from chatcore.generation.manager import ModelManager  # noqa: E402
from chatcore.generation.memory import process_rss_bytes, release_freed_memory  # noqa: E402
from chatcore.generation.registry import load_registry  # noqa: E402
from tests.helpers import greedy  # noqa: E402

FILLER = "The cat sat on the mat and looked at the garden. "
CONTEXT = 512


def main(base: str, adapter: str, work: str) -> None:
    models = Path(work) / "models.yaml"
    models.write_text(
        "models:\n"
        f"  - {{id: smol, backend: llamacpp, path: {base}, context_length: {CONTEXT},"
        " parallel: 1, kv_cache: f16}\n"
        f"  - {{id: smol-lora, backend: llamacpp, path: {base}, context_length: {CONTEXT},"
        f" parallel: 1, kv_cache: f16, adapters: [{{path: {adapter}, scale: 1.0}}]}}\n")
    shared = SharedWeights()
    manager = ModelManager(load_registry(models), lambda e: make_backend(e, shared=shared))
    estimates = {m: make_backend(manager.entry(m)).memory_estimate() for m in ("smol", "smol-lora")}
    release_freed_memory()
    before = process_rss_bytes()
    backend = manager.load("smol")
    manager.load("smol-lora")
    words = FILLER * (CONTEXT // 12)
    while backend.count_tokens([Message("user", words)]) > CONTEXT - 64:
        words = words[: int(len(words) * 0.95)]
    prompt = [Message("user", words)]
    with manager.start([("smol", prompt, greedy(8)), ("smol-lora", prompt, greedy(8))],
                       threading.Event()) as replies:
        chunks = [event for _, event in replies if isinstance(event, Chunk)]
    release_freed_memory()
    growth = process_rss_bytes() - before
    room = manager.room("cpu")
    print(json.dumps({"growth": growth, "planned": room.limit - room.free,
                      "estimates": estimates, "chunks": len(chunks)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
