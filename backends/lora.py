"""LoRA adapters: what an adapter file says about the base it was made for, read without
loading it, so an adapter for another model is refused before either engine sees it.

Two formats: llama.cpp's adapter GGUF (`general.type = adapter`, tensors
`blk.N.<name>.weight.lora_a`/`.lora_b`) and a PEFT folder (`adapter_config.json` with
`adapter_model.safetensors`). The engines apply them: backends/llamacpp.py and
backends/hf_adapters.py.
"""
from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from backends.base import BackendError
from backends.gguf import GGUFHeaderError, gguf_missing_bytes, read_gguf_layout

MAX_ADAPTERS = 8
SCALE_RANGE = (-4.0, 4.0)
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
# Projections whose input is the hidden state: their A matrix's width is the hidden size.
_GGUF_HIDDEN_INPUTS = ("attn_q", "attn_k", "attn_v", "ffn_up", "ffn_gate", "attn_qkv")
_PEFT_HIDDEN_INPUTS = ("q_proj", "k_proj", "v_proj", "up_proj", "gate_proj",
                       "query_key_value", "c_attn")
_GGUF_LAYER = re.compile(r"^blk\.(\d+)\.")
_PEFT_LAYER = re.compile(r"\.(?:layers|h|blocks)\.(\d+)\.")


class AdapterSetting(BaseModel):
    """A LoRA adapter laid over the entry's base: a GGUF (llamacpp) or a PEFT folder
    (transformers); a relative path is read from the models.yaml folder."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096)
    scale: float = Field(1.0, ge=SCALE_RANGE[0], le=SCALE_RANGE[1])


class AdapterError(BackendError):
    """An adapter that cannot be used with its base; the message names both."""


@dataclass(frozen=True)
class Adapter:
    """One adapter of an entry, as the engines take it: where it is, and how strongly it
    applies (0: not at all, 1: as trained)."""

    path: Path
    scale: float = 1.0

    @property
    def name(self) -> str:
        """A name unique per file and scale: two entries with the same adapter share it."""
        stem = re.sub(r"[^A-Za-z0-9_]", "_", self.path.stem if self.path.is_file()
                      else self.path.name)
        digest = zlib.crc32(f"{self.path}|{self.scale}".encode())
        return f"{stem}_{digest:08x}"


@dataclass(frozen=True)
class AdapterInfo:
    """What an adapter file declares: the base it was trained on and the shape it fits."""

    path: Path
    kind: str  # "gguf" or "peft"
    architecture: str  # llama, mistral ... ("" when the file does not say)
    base_name: str  # the base model's name or repo, as the adapter names it ("" if not)
    n_layers: int  # the highest layer it changes, plus one
    hidden_size: int  # the width of the hidden state it takes (0: not known)
    targets: tuple[str, ...]  # the projections it changes (q_proj, attn_q ...)
    size_bytes: int

    @property
    def describe(self) -> str:
        base = f" for {self.base_name}" if self.base_name else ""
        arch = f"{self.architecture}, " if self.architecture else ""
        layers = f"{self.n_layers} layer" + ("" if self.n_layers == 1 else "s")
        return (f"adapter {self.path.name}{base} ({arch}{layers}, "
                f"hidden size {self.hidden_size or 'unknown'})")


@dataclass(frozen=True)
class BaseShape:
    """The base model's side of the comparison."""

    name: str
    architecture: str
    n_layers: int
    hidden_size: int
    tensor_names: frozenset[str] = frozenset()  # PEFT: the checkpoint's weight names


def is_adapter_gguf(metadata: dict) -> bool:
    return str(metadata.get("general.type", "")) == "adapter"


def adapter_base_name(metadata: dict) -> str:
    """The base an adapter GGUF's metadata names ("" for a model, "unknown" when it
    names none)."""
    if metadata.get("general.type") != "adapter":
        return ""
    for key in ("general.base_model.0.repo_url", "general.base_model.0.name"):
        if isinstance(metadata.get(key), str) and metadata[key]:
            return metadata[key].removeprefix("https://huggingface.co/")[:200]
    return "unknown"


def read_adapter(path: Path) -> AdapterInfo:
    """The adapter's declarations; AdapterError with the reason when it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise AdapterError(f"adapter {path}: not found")
    return read_peft_adapter(path) if path.is_dir() else read_gguf_adapter(path)


def read_gguf_adapter(path: Path) -> AdapterInfo:
    try:
        metadata, tensors, header_end = read_gguf_layout(path)
        missing = gguf_missing_bytes(metadata, tensors, header_end, path.stat().st_size)
    except (GGUFHeaderError, ValueError, OSError) as exc:
        raise AdapterError(f"adapter {path}: {exc}") from None
    if missing:
        raise AdapterError(f"adapter {path}: the file is cut short "
                           f"({missing:,} bytes of tensor data missing)")
    if not is_adapter_gguf(metadata) or metadata.get("adapter.type") != "lora":
        raise AdapterError(f"{path} is not a LoRA adapter GGUF (general.type "
                           f"{metadata.get('general.type')!r}, adapter.type "
                           f"{metadata.get('adapter.type')!r})")
    import gguf

    layers, hidden, targets = 0, 0, set()
    for tensor in gguf.GGUFReader(path).tensors:
        if found := _GGUF_LAYER.match(tensor.name):
            layers = max(layers, int(found.group(1)) + 1)
        if tensor.name.endswith(".lora_a"):
            target = tensor.name.split(".")[-3]
            targets.add(target)
            if target in _GGUF_HIDDEN_INPUTS:
                hidden = int(tensor.shape[0])  # ne[0]: the input width
    base = str(metadata.get("general.base_model.0.repo_url")
               or metadata.get("general.base_model.0.name") or "")
    return AdapterInfo(path, "gguf", str(metadata.get("general.architecture", "")),
                       base.removeprefix("https://huggingface.co/"), layers, hidden,
                       tuple(sorted(targets)), path.stat().st_size)


def read_peft_adapter(folder: Path) -> AdapterInfo:
    try:
        config = json.loads((folder / PEFT_CONFIG).read_text(encoding="utf-8"))
        header = _safetensors_header(folder / PEFT_WEIGHTS)
    except (OSError, ValueError) as exc:
        raise AdapterError(f"adapter {folder}: {exc}") from None
    if not isinstance(config, dict) or str(config.get("peft_type", "")).upper() != "LORA":
        raise AdapterError(f"{folder / PEFT_CONFIG}: peft_type is "
                           f"{config.get('peft_type') if isinstance(config, dict) else None!r}"
                           "; only LORA adapters are supported")
    layers, hidden, targets = 0, 0, set()
    for name, info in header.items():
        if not name.endswith("lora_A.weight"):
            continue
        target = name.split(".")[-3]
        targets.add(target)
        if found := _PEFT_LAYER.search(name):
            layers = max(layers, int(found.group(1)) + 1)
        if target in _PEFT_HIDDEN_INPUTS:
            hidden = int(info["shape"][1])  # A is (rank, input width)
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    return AdapterInfo(folder, "peft", "", str(config.get("base_model_name_or_path") or ""),
                       layers, hidden, tuple(sorted(targets)), size)


def check_fits(adapter: AdapterInfo, base: BaseShape) -> None:
    """Refuse an adapter made for another model: architecture, layers, hidden size and (for
    PEFT) the projections it changes, naming both."""
    problems = []
    if adapter.architecture and base.architecture and adapter.architecture != base.architecture:
        problems.append(f"architecture {adapter.architecture} vs {base.architecture}")
    if base.n_layers and adapter.n_layers > base.n_layers:
        problems.append(f"{adapter.n_layers} layers vs {base.n_layers}")
    if adapter.hidden_size and base.hidden_size and adapter.hidden_size != base.hidden_size:
        problems.append(f"hidden size {adapter.hidden_size} vs {base.hidden_size}")
    if base.tensor_names:
        absent = [t for t in adapter.targets
                  if not any(f".{t}." in n for n in base.tensor_names)]
        if absent:
            problems.append(f"the base has no {', '.join(absent)} projections")
    if problems:
        raise AdapterError(f"{adapter.describe} does not fit base model {base.name}: "
                           + "; ".join(problems))


def gguf_base_shape(path: Path, metadata: dict) -> BaseShape:
    arch = str(metadata.get("general.architecture", ""))
    return BaseShape(path.name, arch, int(metadata.get(f"{arch}.block_count", 0) or 0),
                     int(metadata.get(f"{arch}.embedding_length", 0) or 0))


def checkpoint_base_shape(directory: Path) -> BaseShape:
    """A transformers checkpoint's side: config.json and its safetensors' weight names."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"cannot read {directory / 'config.json'}: {exc}") from None
    config = config.get("text_config", config)
    names: set[str] = set()
    for shard in directory.glob("*.safetensors"):
        try:
            names.update(_safetensors_header(shard))
        except (OSError, ValueError):
            continue
    return BaseShape(directory.name, str(config.get("model_type", "")),
                     int(config.get("num_hidden_layers") or config.get("n_layer") or 0),
                     int(config.get("hidden_size") or config.get("n_embd") or 0),
                     frozenset(names))


def adapter_bytes(adapters: tuple[Adapter, ...]) -> int:
    """What the adapters' weights add to the base's in memory (their files' size)."""
    total = 0
    for adapter in adapters:
        path = adapter.path
        files = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else [path]
        total += sum(p.stat().st_size for p in files if p.exists())
    return total


def _safetensors_header(path: Path) -> dict:
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path.name} is cut short")
        length = int.from_bytes(raw, "little")
        if length > 100 * 2**20:
            raise ValueError(f"{path.name}: header of {length:,} bytes is not believable")
        body = handle.read(length)
        if len(body) < length:
            raise ValueError(f"{path.name} is cut short")
        header = json.loads(body)
        end = 8 + length + max((max(info.get("data_offsets", [0, 0]))
                                for name, info in header.items() if name != "__metadata__"),
                               default=0)
        if path.stat().st_size < end:
            raise ValueError(f"{path.name} is cut short ({end - path.stat().st_size:,} bytes "
                             "of tensor data missing)")
        return header
