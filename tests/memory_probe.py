"""Load one shipped model in a fresh process and print its estimate and real RSS growth.

    python tests/memory_probe.py MODEL_ID CACHE_DIR ['{"kv_cache": "q8_0"}']

The optional JSON changes fields of the shipped entry (validated as models.yaml would be).

The growth is measured after a reply to a prompt that fills most of the context, so the
KV cache and working buffers count, as they will in use. Libraries are imported before
the first reading: they are the app's memory, not the model's.
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import llama_cpp  # noqa: E402,F401
import torch  # noqa: E402,F401
import transformers  # noqa: E402,F401

from backends.base import Message  # noqa: E402
from chatcore.generation.registry import ModelEntry, load_registry  # noqa: E402
from chatcore.generation.factory import make_backend  # noqa: E402
from chatcore.generation.manager import ModelManager  # noqa: E402
from chatcore.generation.memory import process_rss_bytes, release_freed_memory  # noqa: E402
from tests.fakes import reply_chunks  # noqa: E402
from tests.helpers import greedy  # noqa: E402

FILLER = "The cat sat on the mat and looked at the garden. "


def main(model_id: str, cache_dir: str, changes: str = "{}") -> None:
    registry = load_registry(Path(__file__).resolve().parent.parent / "models.yaml")
    changed = ModelEntry(**{**registry.get(model_id).model_dump(), **json.loads(changes)})
    registry = replace(registry, entries=tuple(changed if e.id == model_id else e
                                               for e in registry.entries))
    manager = ModelManager(registry, lambda e: make_backend(e, cache_dir=Path(cache_dir)))
    entry = manager.entry(model_id)
    backend = make_backend(entry, cache_dir=Path(cache_dir))
    estimate = backend.memory_estimate()
    # Build the conversion cache first: making it is a one-time cost, not the model's size.
    if hasattr(backend, "_dequantized_copy") and backend.settings.quant_bits:
        backend._dequantized_copy(lambda f, s: None)
    del backend
    release_freed_memory()
    before = process_rss_bytes()
    loaded = manager.load(model_id)
    room = entry.context_length - 64
    words = FILLER * (room // 12)
    while loaded.count_tokens([Message("user", words)]) > room:
        words = words[: int(len(words) * 0.95)]
    prompt = [Message("user", words)]
    list(reply_chunks(manager, model_id, prompt, greedy(16)))
    release_freed_memory()
    growth = process_rss_bytes() - before
    print(json.dumps({"model": model_id, "estimate": estimate, "growth": growth,
                      "prompt_tokens": loaded.count_tokens(prompt)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
