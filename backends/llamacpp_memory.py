"""llama.cpp's memory formula: the file as mapped, the KV cache of every slot, the part of
the compute buffer a step touches."""
from __future__ import annotations

from pathlib import Path

from backends.footprint import RUNTIME_BYTES, MemoryEstimate, ModelShape, kv_cache_bytes
from backends.gguf import gguf_shape
from backends.notes import Note

LLAMACPP_BATCH = 512  # llama.cpp's default n_batch: the compute buffer holds its logits
# Bytes per cached K or V value: f16, and ggml's 32-value blocks with an f16 scale.
KV_TYPES: dict[str, float] = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


def llamacpp_estimate(path: Path, context_length: int, parallel: int = 1,
                      kv_cache: str = "f16") -> MemoryEstimate:
    """Weights are the file (mapped as stored); working memory is the compute buffer."""
    return llamacpp_estimate_of(gguf_shape(path), path.stat().st_size, context_length,
                                parallel, kv_cache)


def llamacpp_estimate_of(shape: ModelShape, file_bytes: int, context_length: int,
                         parallel: int = 1, kv_cache: str = "f16") -> MemoryEstimate:
    """The same estimate from a shape and a size, for a file not downloaded yet.

    Each of the `parallel` slots holds a full context, so the KV cache is charged for all
    of them; the prompt cache of saved states is charged one slot's cache here (the planner
    may lend it more once the model is loaded: chatcore/generation/prompt_cache.py).
    llama.cpp reserves a compute buffer with room for a whole batch of logits, but the
    backend asks logits of at most one token per slot, so those pages are never touched
    (RAM counts only what is): what a step uses is a batch of activations (hidden and
    feed-forward) and one row of logits per slot.
    """
    batch = min(LLAMACPP_BATCH, context_length)
    if shape.n_embd:
        activations = batch * (6 * shape.n_embd + 3 * (shape.n_ff or 4 * shape.n_embd)) * 4
        working = activations + shape.vocab_size * parallel * 4 + RUNTIME_BYTES
    else:  # a shape without sizes: the whole reserved buffer
        working = shape.vocab_size * batch * 4 + RUNTIME_BYTES
    one_slot = kv_cache_bytes(shape, context_length, KV_TYPES[kv_cache])
    if parallel > 1:
        kv_note = Note(f"{parallel} slots × {context_length} tokens, {kv_cache}",
                       "library.need.kv_slots", slots=str(parallel),
                       tokens=str(context_length), kv=kv_cache)
    else:
        kv_note = Note(f"{context_length} tokens, {kv_cache}", "library.need.kv_one",
                       tokens=str(context_length), kv=kv_cache)
    return MemoryEstimate(weights=file_bytes, kv_cache=one_slot * parallel, working=working,
                          saved_states=one_slot, kv_note=kv_note)
