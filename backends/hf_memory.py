"""transformers' memory formula, and the shape of a checkpoint from config.json and the
safetensors headers (never from loading weights)."""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from backends.footprint import (
    RUNTIME_BYTES,
    MemoryEstimate,
    ModelShape,
    PlannerError,
    kv_cache_bytes,
)

QUANTIZED_OVERHEAD = 1.06  # bitsandbytes' scales and quantization state


def checkpoint_shape(directory: Path) -> ModelShape:
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise PlannerError(f"cannot read {directory / 'config.json'}: {exc}") from exc
    config = config.get("text_config", config)
    heads = config.get("num_attention_heads") or config.get("n_head") or 1
    hidden = config.get("hidden_size") or config.get("n_embd") or 0
    kv_heads = (config.get("num_key_value_heads") or config.get("num_kv_heads")
                or config.get("n_head_kv") or (1 if config.get("multi_query") else heads))
    params = embedding_params = 0
    for shard in directory.glob("*.safetensors"):
        for name, info in safetensors_header(shard).items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in info.get("shape", []):
                count *= dim
            params += count
            if re.search(r"(embed|wte|lm_head|word_embeddings)", name):
                embedding_params += count
    return ModelShape(
        n_layers=config.get("num_hidden_layers") or config.get("n_layer") or 0,
        n_kv_heads=kv_heads, head_dim=config.get("head_dim") or hidden // heads,
        vocab_size=config.get("vocab_size", 0), n_params=params,
        n_embedding_params=embedding_params)


def safetensors_header(path: Path) -> dict:
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length))


def transformers_estimate(shape: ModelShape, context_length: int, dtype_bytes: int,
                          quant_bits: int | None, source_bytes: int) -> MemoryEstimate:
    """Embeddings stay in `dtype`; with bitsandbytes the other weights take bits/8 a value.

    Loading reads the source checkpoint through a memory map whose pages stay resident
    while the model is built, so working memory counts the source file too.
    """
    embeddings = shape.n_embedding_params * dtype_bytes
    others = shape.n_params - shape.n_embedding_params
    if quant_bits:
        weights = int(others * quant_bits / 8 * QUANTIZED_OVERHEAD) + embeddings
    else:
        weights = others * dtype_bytes + embeddings
    return MemoryEstimate(weights=weights,
                          kv_cache=kv_cache_bytes(shape, context_length, dtype_bytes),
                          working=source_bytes + RUNTIME_BYTES)
