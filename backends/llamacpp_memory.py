"""llama.cpp's memory formula: the file as mapped, the KV cache, the compute buffer."""
from __future__ import annotations

from pathlib import Path

from backends.footprint import RUNTIME_BYTES, MemoryEstimate, ModelShape, kv_cache_bytes
from backends.gguf import gguf_shape

LLAMACPP_BATCH = 512  # llama.cpp's default n_batch: the compute buffer holds its logits
LLAMACPP_KV_BYTES = 2  # f16 K and V


def llamacpp_estimate(path: Path, context_length: int) -> MemoryEstimate:
    """Weights are the file (mapped as stored); working memory is the compute buffer."""
    return llamacpp_estimate_of(gguf_shape(path), path.stat().st_size, context_length)


def llamacpp_estimate_of(shape: ModelShape, file_bytes: int,
                         context_length: int) -> MemoryEstimate:
    """The same estimate from a shape and a size, for a file not downloaded yet."""
    working = shape.vocab_size * min(LLAMACPP_BATCH, context_length) * 4 + RUNTIME_BYTES
    kv_cache = kv_cache_bytes(shape, context_length, LLAMACPP_KV_BYTES)
    # Saved conversation states may take as much as one full context between them.
    return MemoryEstimate(weights=file_bytes, kv_cache=kv_cache, working=working,
                          saved_states=kv_cache)
