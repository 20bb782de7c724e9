"""What one model on disk is, read from its headers only: a GGUF (single or split), or a
checkpoint folder (config.json, safetensors headers, tokenizer config), and the registry
entry that would load it (`suggest_entry`). Any bytes may arrive here; a file that cannot be
read becomes a `FoundModel` with a `problem`, never an error."""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import gguf

from backends.chat_template import COMPLETION_MODE, guess_fallback
from backends.gguf import SPLIT_GGUF, GGUFHeaderError, gguf_missing_bytes, read_gguf_layout
from backends.hf_memory import safetensors_header
from backends.lora import adapter_base_name
from backends.model_tags import ModelTags, tags_from_gguf
from chatcore.generation.memory import format_bytes

DEFAULT_CONTEXT = 4096  # what an added model starts with when it was trained for more
MAX_JSON = 16 * 2**20  # a config.json, tokenizer_config.json or manifest is never larger
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length",
                 "n_ctx", "max_seq_len")
# A word in a model's names that says it was tuned to follow instructions or chat
# ("gemma-3-270m-it", "Qwen2.5-7B-Instruct", "llama-2-7b-chat").
_TUNED = re.compile(r"(?:^|[^a-z0-9])(?:it|instruct|instruction|chat|sft|dpo|rlhf|assistant"
                    r"|conversational)(?:$|[^a-z0-9])", re.IGNORECASE)
# The GGUF metadata keys that name a model or its fine-tune (general.tags is a list).
_NAME_KEYS = ("general.name", "general.finetune", "general.basename")


@dataclass(frozen=True)
class FoundModel:
    scan_id: str
    source: str
    name: str
    path: Path
    format: str  # "gguf" | "checkpoint"
    architecture: str | None
    n_params: int | None
    quantization: str | None
    size_bytes: int
    context_length: int | None
    has_chat_template: bool | None
    problem: str | None
    details: tuple[tuple[str, str], ...] = ()
    suggested_id: str = ""
    # A base (pretrained-only) model: no chat template, and nothing in its names says it
    # was tuned to chat. It continues text; a chat format would only make it ramble.
    base: bool = False
    # Tasks, languages and licence from the GGUF's general.* metadata (empty for others).
    tags: ModelTags = ModelTags()
    # A LoRA adapter, not a model: the base it names (its metadata or adapter_config.json;
    # "unknown" when it names none), and the scanned model found to be that base.
    adapter_for: str = ""
    base_path: Path | None = None


@dataclass(frozen=True)
class EntryNote:
    """What the person should know about an entry made for them: the catalog's message
    `library.note.<kind>` and its values, so each page says it in its own language."""
    kind: str  # "base" | "guessed_template"
    params: Mapping[str, str]


def read_json(path: Path) -> object:
    """The JSON in a regular file of sane size; None if it is anything else."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_JSON:
            return None
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None


# -- reading one model ------------------------------------------------------------------------
def split_key(path: Path) -> tuple[Path, str, int] | None:
    match = SPLIT_GGUF.match(path.name)
    if not match or int(match["count"]) < 2:
        return None
    return path.parent, match["stem"].lower(), int(match["count"])


def gguf_models(source: str, files: Sequence[Path], name_of) -> list[FoundModel]:
    """One model per GGUF file, and one per split GGUF (named by its first part)."""
    splits: dict[tuple, list[Path]] = {}
    models = []
    for path in files:
        key = split_key(path)
        if key is None:
            models.append(_gguf_model(source, name_of(path), path, [path]))
        else:
            splits.setdefault(key, []).append(path)
    for (_, _, count), parts in splits.items():
        numbers = {int(SPLIT_GGUF.match(p.name)["no"]): p for p in parts}
        present = [numbers[n] for n in sorted(numbers) if 1 <= n <= count]
        stem = SPLIT_GGUF.match(parts[0].name)["stem"]
        first = numbers.get(1) or parts[0].with_name(f"{stem}-00001-of-{count:05d}.gguf")
        missing = [f"{stem}-{n:05d}-of-{count:05d}.gguf" for n in range(1, count + 1)
                   if n not in numbers]
        model = _gguf_model(source, name_of(first), first, present, missing)
        models.append(replace(model, details=model.details + (("parts", str(count)),)))
    return models


def _gguf_model(source: str, name: str, first: Path, parts: Sequence[Path],
                missing: Sequence[str] = ()) -> FoundModel:
    size, n_params, metadata, unreadable = 0, None, {}, None
    for part in parts:
        try:
            size += os.stat(part).st_size
            found, tensors = _read_gguf(part)
        except Exception as exc:  # noqa: BLE001 - any bytes may arrive; each gets one reason
            unreadable = unreadable or f"unreadable: {part}: {_gguf_reason(exc)}"
            continue
        n_params = (n_params or 0) + sum(n for _, n in tensors)
        if part == first:
            metadata = found
    problem = unreadable
    if missing:
        problem = (f"split GGUF incomplete: found {len(parts)} of {len(parts) + len(missing)} "
                   f"parts; missing {', '.join(missing)}")
    arch = metadata.get("general.architecture")
    arch = arch if isinstance(arch, str) else None
    context = metadata.get(f"{arch}.context_length")
    quantization = _quantization(metadata.get("general.file_type"))
    return FoundModel(
        scan_id=scan_id_of(first), source=source, name=name, path=first, format="gguf",
        architecture=arch, n_params=n_params, quantization=quantization, size_bytes=size,
        context_length=context if _is_int(context) else None,
        has_chat_template=("tokenizer.chat_template" in metadata) if metadata else None,
        problem=problem, suggested_id=_gguf_slug(first.name, quantization),
        tags=tags_from_gguf(metadata),
        base=bool(metadata) and "tokenizer.chat_template" not in metadata
        and not is_tuned([name, *(metadata.get(key) for key in _NAME_KEYS),
                          *_listed(metadata.get("general.tags"))])
        and metadata.get("general.type") != "adapter",
        adapter_for=adapter_base_name(metadata))


def _read_gguf(path: Path) -> tuple[dict, list[tuple[str, int]]]:
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"a {file_kind(info.st_mode)}, not a file")
    if info.st_size == 0:
        raise ValueError("empty file")
    metadata, tensors, header_end = read_gguf_layout(path)
    missing = gguf_missing_bytes(metadata, tensors, header_end, info.st_size)
    if missing:
        raise ValueError(f"truncated: {format_bytes(missing)} of its tensor data are missing "
                         "(an interrupted download?)")
    return metadata, [(name, count) for name, count, _, _ in tensors]


def _gguf_reason(exc: Exception) -> str:
    if isinstance(exc, struct.error):  # GGUFHeaderEnds too: a count past the file's end
        return "truncated (the header ends early)"
    if isinstance(exc, GGUFHeaderError):  # the field and the limit; the path is named already
        return exc.detail
    if isinstance(exc, OSError):
        return os_reason(exc)
    return str(exc) or type(exc).__name__


def _quantization(file_type: object) -> str | None:
    """general.file_type as llama.cpp names it: 3 -> "Q4_1", 15 -> "Q4_K_M"."""
    if not _is_int(file_type):
        return None
    try:
        name = gguf.LlamaFileType(file_type).name
    except ValueError:
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def checkpoint_model(source: str, name: str, directory: Path) -> FoundModel:
    """config.json, tokenizer_config.json and the safetensors headers: never the weights."""
    names = {p.name for p in files_in(directory)}
    weights = sorted(n for n in names if is_weights(n))
    size = sum(_size(directory / n) for n in weights)
    problem = None
    if "config.json" not in names:
        problem = f"{directory} has no config.json"
    elif not weights:
        problem = f"{directory} holds no weights"
    config = read_json(directory / "config.json")
    if not isinstance(config, dict):
        problem = problem or f"unreadable: {directory / 'config.json'}: not a JSON object"
        config = {}
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    index = read_json(directory / "model.safetensors.index.json")
    if isinstance(index, dict) and isinstance(index.get("weight_map"), dict):
        shards = {str(s) for s in index["weight_map"].values()}
        if not problem and not shards <= names:
            problem = (f"{directory} checkpoint incomplete: found {len(shards & names)} of "
                       f"{len(shards)} shards")
    n_params = None
    for shard in (n for n in weights if n.endswith(".safetensors")):
        try:
            n_params = (n_params or 0) + _safetensors_params(directory / shard)
        except Exception as exc:  # noqa: BLE001 - any bytes may arrive
            problem = problem or f"unreadable: {directory / shard}: {_gguf_reason(exc)}"
    context = _first([config, text], _CONTEXT_KEYS, _is_int)
    quant = config.get("quantization_config")
    quantization = ((quant.get("quant_method") if isinstance(quant, dict) else None)
                    or _first([config, text], ("torch_dtype", "dtype"),
                              lambda v: isinstance(v, str)))
    arch = config.get("model_type")
    has_template = _has_chat_template(directory, names)
    return FoundModel(
        scan_id=scan_id_of(directory), source=source, name=name, path=directory,
        format="checkpoint",
        architecture=arch if isinstance(arch, str) else None, n_params=n_params,
        quantization=str(quantization) if quantization else None, size_bytes=size,
        context_length=context, has_chat_template=has_template,
        problem=problem, suggested_id=slug(name.rsplit("/", 1)[-1].replace(" @ ", "-")),
        base=has_template is False and not is_tuned([name, directory.name]))


def is_tuned(names: Sequence[object]) -> bool:
    """Whether any of a model's names (file, folder, GGUF general.name...) marks an
    instruct or chat fine-tune; names that are not text are passed over."""
    return any(isinstance(n, str) and _TUNED.search(n) for n in names)


def _safetensors_params(path: Path) -> int:
    """Summed element counts from the header; its length is checked before it is read."""
    info = os.stat(path)
    with path.open("rb") as handle:
        head = handle.read(8)
    if len(head) < 8:
        raise ValueError("truncated")
    (length,) = struct.unpack("<Q", head)
    if length > min(info.st_size - 8, 100 * 2**20):
        raise ValueError("not a safetensors file (header length out of range)")
    total = 0
    for key, tensor in safetensors_header(path).items():
        if key != "__metadata__":
            count = 1
            for dim in tensor.get("shape", []):
                count *= int(dim)
            total += count
    return total


def _has_chat_template(directory: Path, names: set[str]) -> bool | None:
    if "chat_template.jinja" in names or "chat_template.json" in names:
        return True
    if "tokenizer_config.json" not in names:
        return False
    config = read_json(directory / "tokenizer_config.json")
    return bool(config.get("chat_template")) if isinstance(config, dict) else None


def unusable(source: str, name: str, path: Path, fmt: str, problem: str) -> FoundModel:
    return FoundModel(scan_id=scan_id_of(path), source=source, name=name, path=path, format=fmt,
                      architecture=None, n_params=None, quantization=None,
                      size_bytes=_size(path), context_length=None, has_chat_template=None,
                      problem=problem,
                      suggested_id=_gguf_slug(name, None) if fmt == "gguf" else slug(name))


# -- small helpers ----------------------------------------------------------------------------
def scan_id_of(path: Path) -> str:
    return hashlib.sha1(os.path.realpath(path).encode("utf-8", "surrogateescape")).hexdigest()[:10]


def _size(path: Path) -> int:
    try:
        info = os.stat(path)
    except OSError:
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def _first(configs: Sequence[dict], keys: Sequence[str], wanted) -> object:
    """The first value under `keys` that is `wanted`, looking in each config in turn."""
    for config in configs:
        for key in keys:
            if wanted(config.get(key)):
                return config[key]
    return None


def _listed(value: object) -> list:
    """A kept GGUF string list, or nothing (an array too long to keep is its length)."""
    return value if isinstance(value, list) else []


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def slug(text: str) -> str:
    """A registry id: lower-case letters, digits, '.', '_', '-'; 64 characters at most."""
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9._-]+", "-", text.lower()))
    slug = re.sub(r"^[^a-z0-9]+", "", slug)[:64].rstrip("-._")
    return slug or "model"


def _gguf_slug(filename: str, quantization: str | None) -> str:
    """"SmolLM2-135M-Instruct.Q4_1.gguf" -> "smollm2-135m-instruct-q4_1"."""
    stem = SPLIT_GGUF.sub(lambda m: m["stem"], filename)
    stem = stem[:-5] if stem.lower().endswith(".gguf") else stem
    if quantization:
        quant = quantization.lower()
        if stem.lower().endswith(quant) and stem[-len(quant) - 1:-len(quant)] in (".", "-", "_"):
            stem = stem[:-len(quant) - 1]
        elif quant in stem.lower():
            return slug(stem)
        stem = f"{stem}-{quant}"
    return slug(stem)


def files_in(directory: Path) -> list[Path]:
    """The regular files directly in `directory` (none if it cannot be read)."""
    try:
        with os.scandir(directory) as entries:
            return sorted(Path(e.path) for e in entries if e.is_file())
    except OSError:
        return []


def is_weights(name: str) -> bool:
    return name.endswith(".safetensors") or (name.startswith("pytorch_model")
                                              and name.endswith(".bin"))


def os_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "broken symlink"
    return (exc.strerror or str(exc)).lower()


def file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "folder"), (stat.S_ISSOCK, "socket"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"


def suggest_entry(found: FoundModel, model_id: str,
                  context_length: int | None = None) -> tuple[dict, list[EntryNote]]:
    """A registry entry for a found model, with notes for the person: a base model is added
    in completion mode, a chat model without a template gets one guessed."""
    if found.adapter_for:
        return _adapter_entry(found, model_id, context_length)
    notes = []
    trained = found.context_length or 2048
    entry: dict = {
        "id": model_id,
        "name": found.name[:200],
        "backend": "llamacpp" if found.format == "gguf" else "transformers",
        "path": str(found.path),
        "context_length": context_length or min(trained, DEFAULT_CONTEXT),
        "description": f"Found in {found.source}: {found.path}"[:2000],
    }
    if not found.tags.empty:
        entry["tags"] = found.tags.model_dump(mode="json", exclude_defaults=True)
    if found.base:
        entry["chat_template"] = COMPLETION_MODE
        notes.append(EntryNote("base", {"name": found.name}))
    elif found.has_chat_template is False:
        guess = guess_fallback(found.architecture)
        entry["chat_template"] = guess
        notes.append(EntryNote("guessed_template", {
            "name": found.name, "template": guess,
            "architecture": found.architecture or "unknown"}))
    return entry, notes


def _adapter_entry(found: FoundModel, model_id: str,
                   context_length: int | None) -> tuple[dict, list[EntryNote]]:
    """An adapter is added as its base with the adapter over it (a new entry; the base's
    own entry, if any, stays as it is)."""
    base = found.base_path or found.path
    entry = {
        "id": model_id, "name": f"{base.name} + {found.path.name}"[:200],
        "backend": "llamacpp" if found.path.suffix.lower() == ".gguf" else "transformers",
        "path": str(base), "context_length": context_length or 2048,
        "adapters": [{"path": str(found.path), "scale": 1.0}],
        "description": f"LoRA adapter {found.path} over {base}"[:2000],
    }
    return entry, [EntryNote("adapter", {"name": found.name, "base": base.name})]
