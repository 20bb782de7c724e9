"""What a model takes in memory, as every engine's estimate states it.

Engines own their formulas and their file readers (backends/gguf.py, llamacpp_memory.py,
hf_memory.py); these shapes are what the planner in chatcore receives from them.
"""
from __future__ import annotations

from dataclasses import dataclass

RUNTIME_BYTES = 16 * 2**20  # an engine's own allocations besides weights and caches


class PlannerError(Exception):
    """The file's shape cannot be read; the message names the file."""


@dataclass(frozen=True)
class ModelShape:
    n_layers: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    n_params: int
    n_embedding_params: int  # input embeddings and output head: never quantized
    n_embd: int = 0  # hidden size (0: not known)
    n_ff: int = 0  # feed-forward size (0: not known)


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    working: int
    saved_states: int = 0  # llama.cpp: recent conversations' KV caches, kept for reuse
    kv_note: str = ""  # what the KV cache holds, for a person: "4 slots × 2048 tokens, f16"

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.working + self.saved_states


def kv_cache_bytes(shape: ModelShape, context_length: int, bytes_per_value: float) -> int:
    return int(2 * shape.n_layers * shape.n_kv_heads * shape.head_dim * context_length
               * bytes_per_value)
