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
GGML_MAX_DIMS = 4  # ggml.h: a tensor has at most 4 dimensions
MAX_ELEMENTS = 2**63 - 1  # llama.cpp keeps element counts in int64_t
MAX_ARRAY_DEPTH = 4  # arrays of arrays: the format allows them, no model nests them deeper
# Short string lists kept as lists (every other array is read as its length): a model's
# tags say whether it was tuned to chat, which a base model's do not, and with its
# languages what it is for (backends/model_tags.py).
KEPT_LISTS = frozenset({"general.tags", "general.languages"})
MAX_KEPT_ITEMS = 64
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q",
                 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
# The fewest bytes each item can take, so a count is checked against the bytes left before
# anything loops over it: a string is its 8-byte length, an array its type and count.
_MIN_BYTES = {_GGUF_STRING: 8, _GGUF_ARRAY: 12,
              **{kind: struct.calcsize("<" + fmt) for kind, fmt in _GGUF_SCALARS.items()}}
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, the smallest value
_MIN_TENSOR_BYTES = 8 + 4 + 4 + 8  # name length, dimension count, type, data offset
# A GGUF split by llama.cpp's gguf-split: "name-00001-of-00003.gguf" and its siblings.
SPLIT_GGUF = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


class GGUFHeaderError(ValueError):
    """A GGUF header the format's own rules refuse, in a sentence naming the file and the
    field; `detail` is the sentence without the file, for callers that name it already."""

    def __init__(self, file: str, detail: str) -> None:
        super().__init__(f"{file}: {detail}")
        self.file = file
        self.detail = detail


class GGUFHeaderEnds(GGUFHeaderError, struct.error):
    """A count or length reaches past the bytes there are: the file is cut short, or (a
    range read from the Hub) the rest of the header has not been read yet. A struct.error
    too, which is how callers have always recognised a header that goes on."""


def read_gguf_header(path: Path) -> tuple[dict, list[tuple[str, int]]]:
    """The metadata (arrays as their lengths, but KEPT_LISTS) and (tensor name, element
    count) pairs.

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
    the header ends; GGUFHeaderError when the header breaks the format's limits."""
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return parse_gguf_layout(data, path.name)


def parse_gguf_layout(data: bytes | mmap.mmap, file: str
                      ) -> tuple[dict, list[tuple[str, int, int, int]], int]:
    """`read_gguf_layout` over bytes already in hand (a file mapped, a range read).

    Any bytes may arrive here (an upload, a Hub file), so every count and length is checked
    against the bytes left before anything loops over it or multiplies it: the work stays
    linear in the size of `data`, whatever the header claims.
    """
    if data[:4] != GGUF_MAGIC:
        raise GGUFHeaderError(file, "not a GGUF file")
    reader = _HeaderReader(data, file, offset=4)
    version = reader.take("I", "the version")
    if version not in (2, 3):
        raise GGUFHeaderError(file, f"GGUF version {version} is not supported")
    tensor_count = reader.count(reader.take("Q", "the tensor count"), _MIN_TENSOR_BYTES,
                                "tensors", "the header")
    kv_count = reader.count(reader.take("Q", "the metadata count"), _MIN_KV_BYTES,
                            "metadata keys", "the header")
    metadata = {}
    for index in range(kv_count):
        key = reader.string(f"metadata key {index}'s name")
        field = f"metadata {_short(key)}"
        metadata[key] = reader.value(reader.take("I", f"{field}'s type"), field,
                                     keep=key in KEPT_LISTS)
    tensors = [reader.tensor(index) for index in range(tensor_count)]
    return metadata, tensors, reader.offset


class _HeaderReader:
    """One pass over a GGUF header's bytes; each read names the field it reads, so a
    refusal says which field of which file broke which limit."""

    def __init__(self, data: bytes | mmap.mmap, file: str, offset: int = 0) -> None:
        self.data, self.file, self.offset = data, file, offset
        self.size = len(data)

    @property
    def left(self) -> int:
        return self.size - self.offset

    def take(self, fmt: str, field: str):
        """One little-endian scalar."""
        width = struct.calcsize("<" + fmt)
        if width > self.left:
            raise GGUFHeaderEnds(self.file, f"the file ends inside {field}")
        (value,) = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += width
        return value

    def count(self, count: int, each: int, what: str, field: str) -> int:
        """`count` items of at least `each` bytes, checked to fit in the bytes left."""
        if count * each > self.left:
            raise GGUFHeaderEnds(self.file, f"{field} declares {count:,} {what}, but only "
                                 f"{self.left:,} bytes are left in the file (each takes at "
                                 f"least {each})")
        return count

    def string(self, field: str) -> str:
        length = self.take("Q", f"{field}'s length")
        if length > self.left:
            raise GGUFHeaderEnds(self.file, f"{field} is {length:,} bytes long, but only "
                                 f"{self.left:,} bytes are left in the file")
        text = self.data[self.offset:self.offset + length].decode("utf-8", errors="replace")
        self.offset += length
        return text

    def value(self, kind: int, field: str, depth: int = 0, keep: bool = False):
        """A metadata value; arrays (the vocabulary) as their lengths, skipped over, but
        with `keep` a list of at most MAX_KEPT_ITEMS strings as the list."""
        if kind == _GGUF_STRING:
            return self.string(field)
        if kind == _GGUF_ARRAY:
            return self.array(field, depth + 1, keep)
        if kind not in _GGUF_SCALARS:
            raise GGUFHeaderError(self.file, f"{field} has unknown value type {kind}")
        return self.take(_GGUF_SCALARS[kind], field)

    def array(self, field: str, depth: int, keep: bool = False) -> int | list[str]:
        if depth > MAX_ARRAY_DEPTH:
            raise GGUFHeaderError(self.file, f"{field} nests arrays {depth} deep; at most "
                                  f"{MAX_ARRAY_DEPTH}")
        kind = self.take("I", f"{field}'s item type")
        if kind not in _MIN_BYTES:
            raise GGUFHeaderError(self.file, f"{field} has items of unknown value type {kind}")
        count = self.count(self.take("Q", f"{field}'s length"), _MIN_BYTES[kind], "items",
                           field)
        if kind == _GGUF_STRING and keep and count <= MAX_KEPT_ITEMS:
            return [self.string(f"{field} item {index}") for index in range(count)]
        if kind == _GGUF_STRING:
            self._skip_strings(count, field)
        elif kind == _GGUF_ARRAY:
            for index in range(count):
                self.array(f"{field} item {index}", depth + 1)
        else:
            self.offset += count * _MIN_BYTES[kind]
        return count

    def _skip_strings(self, count: int, field: str) -> None:
        """Step over `count` strings (a vocabulary: ~10^5 of them) without decoding them."""
        data, offset, end = self.data, self.offset, self.size
        for index in range(count):
            if offset + 8 > end:
                raise GGUFHeaderEnds(self.file, f"the file ends inside {field} item {index}")
            offset += 8 + struct.unpack_from("<Q", data, offset)[0]
            if offset > end:
                raise GGUFHeaderEnds(self.file, f"{field} item {index} is longer than the "
                                     "bytes left in the file")
        self.offset = offset

    def tensor(self, index: int) -> tuple[str, int, int, int]:
        """(name, element count, ggml type, data offset), with at most GGML_MAX_DIMS
        dimensions, so the element count is a product of four numbers at most."""
        field = f"tensor {index}"
        name = self.string(f"{field}'s name")
        n_dims = self.take("I", f"{field}'s dimension count")
        if n_dims > GGML_MAX_DIMS:
            raise GGUFHeaderError(self.file, f"{field} has {n_dims} dimensions; GGUF allows "
                                  f"at most {GGML_MAX_DIMS}")
        dims = [self.take("Q", f"{field}'s shape") for _ in range(n_dims)]
        for axis, dim in enumerate(dims):
            if dim > MAX_ELEMENTS:  # a negative int64 to llama.cpp
                raise GGUFHeaderError(self.file, f"{field}'s dimension {axis} is {dim:,}; "
                                      "llama.cpp allows at most 2^63 - 1")
        count = 1
        for dim in dims:
            count *= dim
        if count > MAX_ELEMENTS:
            raise GGUFHeaderError(self.file, f"{field} has {count:,} elements "
                                  f"(shape {dims}); llama.cpp allows at most 2^63 - 1")
        kind = self.take("I", f"{field}'s type")
        return name, count, kind, self.take("Q", f"{field}'s data offset")


def _short(key: str, limit: int = 60) -> str:
    """A metadata key as a message shows it: quoted, and cut when a file made it huge."""
    return repr(key if len(key) <= limit else key[:limit] + "…")


def gguf_shape(path: Path) -> ModelShape:
    try:
        return shape_from_header(*read_gguf_header(path))
    except Exception as exc:  # noqa: BLE001 - any bytes may arrive here; all get one reason
        reason = exc.detail if isinstance(exc, GGUFHeaderError) else exc
        raise PlannerError(f"cannot read the GGUF header of {path}: {reason}") from exc


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
