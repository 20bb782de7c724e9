"""The memory planner: what a model will take before it is loaded, and the budget it must fit.

An estimate is weights in their resident format, plus the KV cache for the whole context,
plus the engine's working memory. Shapes come from the file's own metadata (GGUF header,
config.json, safetensors headers), never from loading weights.
"""
from __future__ import annotations

import ctypes
import json
import logging
import mmap
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

GB = 1e9
LLAMACPP_BATCH = 512  # llama.cpp's default n_batch: the compute buffer holds its logits
LLAMACPP_KV_BYTES = 2  # f16 K and V
QUANTIZED_OVERHEAD = 1.06  # bitsandbytes' scales and quantization state
RUNTIME_BYTES = 16 * 2**20


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


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    working: int
    saved_states: int = 0  # llama.cpp: recent conversations' KV caches, kept for reuse

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.working + self.saved_states


def format_bytes(n: float) -> str:
    """"4.7 GB", "412 MB", "38 kB" (nothing at all reads "0 MB", beside budgets in MB)."""
    if abs(n) >= GB:
        return f"{n / GB:.1f} GB"
    return f"{n / 1e6:.0f} MB" if abs(n) >= 1e6 or n == 0 else f"{n / 1e3:.0f} kB"


# -- shapes ---------------------------------------------------------------------------------
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q",
                 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
# A GGUF split by llama.cpp's gguf-split: "name-00001-of-00003.gguf" and its siblings.
SPLIT_GGUF = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


def read_gguf_header(path: Path) -> tuple[dict, list[tuple[str, int]]]:
    """The metadata (arrays as their lengths) and (tensor name, element count) pairs.

    Reads only the header, skipping over arrays such as the vocabulary: milliseconds, where
    building the whole gguf.GGUFReader takes seconds.
    """
    metadata, tensors, _ = read_gguf_layout(path)
    return metadata, [(name, count) for name, count, _, _ in tensors]


def gguf_missing_bytes(metadata: dict, tensors: list[tuple[str, int, int, int]],
                       header_end: int, file_size: int) -> int:
    """How many bytes a file lacks for the tensor data its header (`read_gguf_layout`)
    describes: a download cut after the header reads fine but cannot load."""
    alignment = int(metadata.get("general.alignment", 32) or 32)
    data_start = -(-header_end // alignment) * alignment
    end = data_start
    for _, count, kind, offset in tensors:
        block, size = _ggml_block(kind)
        end = max(end, data_start + offset + count // block * size)
    return max(0, end - file_size)


def _ggml_block(kind: int) -> tuple[int, int]:
    """(values per block, bytes per block) of a ggml tensor type."""
    import gguf

    try:
        return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
    except (ValueError, KeyError):
        raise ValueError(f"unknown tensor type {kind}") from None


def read_gguf_layout(path: Path) -> tuple[dict, list[tuple[str, int, int, int]], int]:
    """The metadata, (name, element count, ggml type, data offset) per tensor, and where
    the header ends."""
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        offset = 0

        def take(fmt: str):
            nonlocal offset
            values = struct.unpack_from("<" + fmt, data, offset)
            offset += struct.calcsize("<" + fmt)
            return values[0] if len(values) == 1 else values

        def string() -> str:
            nonlocal offset
            length = take("Q")
            text = data[offset:offset + length].decode("utf-8", errors="replace")
            offset += length
            return text

        def value(kind: int):
            nonlocal offset
            if kind == _GGUF_STRING:
                return string()
            if kind == _GGUF_ARRAY:
                item_kind, count = take("I"), take("Q")
                if item_kind == _GGUF_STRING:
                    for _ in range(count):
                        offset += 8 + struct.unpack_from("<Q", data, offset)[0]
                elif item_kind in _GGUF_SCALARS:
                    offset += count * struct.calcsize(_GGUF_SCALARS[item_kind])
                else:
                    for _ in range(count):
                        value(item_kind)
                return count
            if kind not in _GGUF_SCALARS:
                raise ValueError(f"unknown metadata value type {kind}")
            return take(_GGUF_SCALARS[kind])

        if data[:4] != b"GGUF":
            raise ValueError("not a GGUF file")
        offset = 4
        version, tensor_count, kv_count = take("I"), take("Q"), take("Q")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not supported")
        metadata = {}
        for _ in range(kv_count):
            key = string()
            metadata[key] = value(take("I"))
        tensors = []
        for _ in range(tensor_count):
            name = string()
            dims = [take("Q") for _ in range(take("I"))]
            kind = take("I")
            tensor_offset = take("Q")
            count = 1
            for dim in dims:
                count *= dim
            tensors.append((name, count, kind, tensor_offset))
        return metadata, tensors, offset


def gguf_shape(path: Path) -> ModelShape:
    try:
        return shape_from_header(*read_gguf_header(path))
    except Exception as exc:  # noqa: BLE001 - any bytes may arrive here; all get one reason
        raise PlannerError(f"cannot read the GGUF header of {path}: {exc}") from exc


def shape_from_header(metadata: dict, tensors: list[tuple[str, int]]) -> ModelShape:
    """The shape from a GGUF header, wherever its bytes came from (a file, a range read)."""
    arch = metadata["general.architecture"]

    def number(key: str, default: int | None = None) -> int:
        found = metadata.get(f"{arch}.{key}", default)
        if found is None:
            raise KeyError(f"{arch}.{key}")
        return int(found)

    heads = number("attention.head_count")
    embedding = number("embedding_length")
    vocab = number("vocab_size", metadata.get("tokenizer.ggml.tokens", 0))
    return ModelShape(
        n_layers=number("block_count"), n_kv_heads=number("attention.head_count_kv", heads),
        head_dim=number("attention.key_length", embedding // heads), vocab_size=vocab,
        n_params=sum(count for _, count in tensors),
        n_embedding_params=sum(count for name, count in tensors
                               if name in ("token_embd.weight", "output.weight")))


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
        for name, info in _safetensors_header(shard).items():
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


def _safetensors_header(path: Path) -> dict:
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length))


# -- estimates --------------------------------------------------------------------------------
def kv_cache_bytes(shape: ModelShape, context_length: int, bytes_per_value: int) -> int:
    return 2 * shape.n_layers * shape.n_kv_heads * shape.head_dim * context_length * bytes_per_value


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


# -- the budget and the process --------------------------------------------------------------
@dataclass(frozen=True)
class MemoryBudget:
    """Bytes the models may take, per device ("cpu", "cuda:0", ...)."""

    limits: dict[str, int]
    gpu_free: Callable[[str], int] | None = None  # free bytes on a GPU now; tests pass a fake

    def limit(self, device: str, held: int = 0) -> int:
        """A set limit, or for a GPU without one 90% of what is free there now plus what
        this app's resident models already `held` there: they are not in the free figure,
        and the planner subtracts them itself, so they must not be missing twice."""
        if device not in self.limits:
            if not device.startswith("cuda"):
                return 0
            return ((self.gpu_free or gpu_free_bytes)(device) + held) * 9 // 10
        return self.limits[device]

    @classmethod
    def parse(cls, text: str | None) -> MemoryBudget:
        """`12GB`, or `cpu=12GB,cuda:0=20GB`; without it, 75% of the RAM free now."""
        limits = {"cpu": available_ram_bytes() * 3 // 4}
        if not text:
            return cls(limits)
        for part in text.split(","):
            device, _, size = part.strip().rpartition("=")
            device = device.strip() or "cpu"
            if device != "cpu" and not re.fullmatch(r"cuda:\d+", device):
                raise ValueError(f"--max-memory: unknown device {device!r} (use cpu or cuda:N)")
            limits[device] = parse_size(size)
        return cls(limits)


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*", text, re.I)
    if not match:
        raise ValueError(f"--max-memory: {text!r} is not a size like 12GB or 512MiB")
    units = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    return int(float(match.group(1)) * units[(match.group(2) or "gb").lower()])


def available_ram_bytes() -> int:
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def gpu_free_bytes(device: str) -> int:
    try:
        import torch

        if torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info(int(device.partition(":")[2] or 0))
            return int(free)
    except (ImportError, RuntimeError, ValueError):
        pass
    return 0


def gpu_devices() -> list[str]:
    """The CUDA devices torch sees ("cuda:0", ...); none with the CPU wheel."""
    try:
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except (ImportError, RuntimeError):
        return []


def process_rss_bytes() -> int:
    with open("/proc/self/statm", encoding="utf-8") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_freed_memory() -> None:
    """Hand memory the allocator kept after frees back to the system (glibc only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
