"""Reading a GGUF file's header: metadata and tensor layout, without loading weights.

Both engines read GGUF files (llama.cpp natively, transformers dequantized), and the model
library reads headers of files on disk and of Hub downloads in progress.
"""
from __future__ import annotations

import mmap
import re
import struct
from pathlib import Path

from backends.footprint import ModelShape, PlannerError

GGUF_MAGIC = b"GGUF"
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
                               if name in ("token_embd.weight", "output.weight")),
        n_embd=embedding, n_ff=_largest(metadata.get(f"{arch}.feed_forward_length", 0)))


def _largest(value) -> int:
    """A size that some architectures give per layer, as a list."""
    return int(max(value)) if isinstance(value, list) and value else int(value or 0)


def check_gguf(path: Path) -> str | None:
    """What keeps `path` from being a GGUF file, in a sentence; None when it starts like one."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except FileNotFoundError:
        return f"model file not found: {path}"
    except OSError as exc:
        return f"cannot read model file {path}: {exc}"
    if magic != GGUF_MAGIC:
        return f"{path} is not a GGUF file (it starts with {magic!r})"
    return None
