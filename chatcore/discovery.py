"""Find the models this machine already holds: offline, reading only headers.

Looks where the common tools keep their downloads (the Hugging Face cache, LM Studio, Ollama,
llama.cpp's cache, GPT4All) and in the person's own folders. Every GGUF is read through its
header and every checkpoint through config.json and its safetensors headers, never its
weights, so a few hundred files take well under a second. Bad files become models with a
`problem`; things that cannot be walked become `skipped` lines: a scan never raises for
what it finds on disk.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import gguf

from backends.gguf import SPLIT_GGUF, gguf_missing_bytes, read_gguf_layout
from backends.hf_memory import safetensors_header
from chatcore.memory import format_bytes

log = logging.getLogger(__name__)

MAX_DEPTH = 12  # a walk goes no deeper: a huge or hostile tree cannot run forever
SIDE_READ = 4096  # bytes read of an Ollama template or params layer
MAX_JSON = 16 * 2**20  # a config.json, tokenizer_config.json or manifest is never larger
_DIGEST = re.compile(r"sha256[:-]([0-9a-f]{64})")
_OLLAMA_MODEL = "application/vnd.ollama.image.model"
_OLLAMA_SIDE = {"application/vnd.ollama.image.template": "template",
                "application/vnd.ollama.image.params": "params",
                "application/vnd.ollama.image.system": "system"}
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length",
                 "n_ctx", "max_seq_len")


@dataclass(frozen=True)
class ScanRoot:
    source: str  # "huggingface" | "lmstudio" | "ollama" | "llama.cpp" | "gpt4all" | "folder"
    path: Path


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


@dataclass(frozen=True)
class ScanResult:
    models: tuple[FoundModel, ...]  # sorted by source then name; usable and unusable alike
    skipped: tuple[str, ...]  # "path: reason"


# -- where to look ----------------------------------------------------------------------------
def default_roots(env: Mapping[str, str] | None = None, home: Path | None = None) -> list[ScanRoot]:
    """Every place the common tools keep models, computed from `env` and `home` alone.

    Folders that do not exist are listed too (scan passes over them), so a page can say
    where it looked.
    """
    env = os.environ if env is None else env
    home = Path.home() if home is None else Path(home)
    cache = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else home / ".cache"
    data = Path(env["XDG_DATA_HOME"]) if env.get("XDG_DATA_HOME") else home / ".local" / "share"
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        hf = Path(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"])
    else:
        hf = (Path(env["HF_HOME"]) if env.get("HF_HOME") else cache / "huggingface") / "hub"
    roots = [ScanRoot("huggingface", hf),
             ScanRoot("lmstudio", home / ".lmstudio" / "models"),
             ScanRoot("lmstudio", cache / "lm-studio" / "models")]
    if env.get("OLLAMA_MODELS"):
        roots.append(ScanRoot("ollama", Path(env["OLLAMA_MODELS"])))
    roots += [ScanRoot("ollama", home / ".ollama" / "models"),
              ScanRoot("ollama", Path("/usr/share/ollama/.ollama/models")),
              ScanRoot("llama.cpp", Path(env["LLAMA_CACHE"]) if env.get("LLAMA_CACHE")
                       else cache / "llama.cpp"),
              ScanRoot("gpt4all", data / "nomic.ai" / "GPT4All")]
    return list(dict.fromkeys(roots))


def scan(roots: Sequence[ScanRoot] | None = None, extra_dirs: Sequence[Path] = (),
         env: Mapping[str, str] | None = None, home: Path | None = None) -> ScanResult:
    """Every model under `roots` (default: default_roots) and the person's `extra_dirs`.

    The same file reached twice (two roots, two revisions, a link) is listed once: the
    first root wins.
    """
    if roots is None:
        roots = default_roots(env, home)
    roots = [*roots, *(ScanRoot("folder", Path(d)) for d in extra_dirs)]
    skipped: list[str] = []
    models: dict[str, FoundModel] = {}
    for root in roots:
        if not root.path.exists():
            log.debug("no %s models at %s", root.source, root.path)
            continue
        if not root.path.is_dir():
            skipped.append(f"{root.path}: not a folder")
            continue
        try:
            found = _scan_root(root, skipped)
        except Exception as exc:  # noqa: BLE001 - a scan reports what it could not read
            log.exception("scanning %s failed", root.path)
            skipped.append(f"{root.path}: {exc}")
            continue
        for model in found:
            models.setdefault(model.scan_id, model)
    ordered = sorted(models.values(), key=lambda m: (m.source, m.name.lower(), m.name, str(m.path)))
    for line in skipped:
        log.debug("skipped %s", line)
    return ScanResult(tuple(ordered), tuple(skipped))


def inspect_path(path: Path, source: str = "folder") -> FoundModel:
    """One GGUF file (any part of a split one) or checkpoint folder a person typed."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        missing = isinstance(exc, FileNotFoundError)
        problem = f"{path} does not exist" if missing else f"unreadable: {path}: {_reason(exc)}"
        fmt = "gguf" if path.suffix.lower() == ".gguf" else "checkpoint"
        return _unusable(source, path.name, path, fmt, problem)
    if stat.S_ISDIR(mode):
        return _checkpoint_model(source, path.name, path)
    if not stat.S_ISREG(mode):
        return _unusable(source, path.name, path, "gguf",
                         f"unreadable: {path}: a {_kind(mode)}, not a file")
    if SPLIT_GGUF.match(path.name):
        siblings = [p for p in _files_in(path.parent) if _split_key(p) == _split_key(path)]
        return _gguf_models(source, siblings or [path], lambda p: p.name)[0]
    return _gguf_models(source, [path], lambda p: p.name)[0]


# -- walking ----------------------------------------------------------------------------------
def _walk(root: Path, skipped: list[str],
          checkpoints: bool = False) -> tuple[list[Path], list[Path]]:
    """Regular files under `root`, and with `checkpoints` the checkpoint folders (not entered).

    Follows directory symlinks, but a directory already seen by (device, inode) is a loop and
    is recorded; anything not a regular file or directory is recorded and never opened.
    """
    files: list[Path] = []
    folders: list[Path] = []
    seen: set[tuple[int, int]] = set()
    stack = [(root, 0)]
    while stack:
        directory, depth = stack.pop()
        try:
            info = os.stat(directory)
            if (info.st_dev, info.st_ino) in seen:
                skipped.append(f"{directory}: folder already visited (symlink loop)")
                continue
            seen.add((info.st_dev, info.st_ino))
            with os.scandir(directory) as entries:
                entries = sorted(entries, key=lambda e: e.name)
        except OSError as exc:
            skipped.append(f"{directory}: {_reason(exc)}")
            continue
        subdirs, here = [], []
        for entry in entries:
            try:
                if entry.is_dir():
                    subdirs.append(Path(entry.path))
                elif entry.is_file():
                    here.append(Path(entry.path))
                else:
                    skipped.append(f"{entry.path}: {_kind(entry.stat().st_mode)}")
            except OSError as exc:
                skipped.append(f"{entry.path}: {_reason(exc)}")
        files += here
        if checkpoints and _is_checkpoint_dir(directory, {p.name for p in here}):
            folders.append(directory)
            continue
        if subdirs and depth >= MAX_DEPTH:
            skipped.append(f"{directory}: deeper than {MAX_DEPTH} levels, not searched")
            continue
        stack += [(d, depth + 1) for d in reversed(subdirs)]
    return files, folders


def _files_in(directory: Path) -> list[Path]:
    """The regular files directly in `directory` (none if it cannot be read)."""
    try:
        with os.scandir(directory) as entries:
            return sorted(Path(e.path) for e in entries if e.is_file())
    except OSError:
        return []


def _is_weights(name: str) -> bool:
    return name.endswith(".safetensors") or (name.startswith("pytorch_model")
                                              and name.endswith(".bin"))


def _is_checkpoint_dir(directory: Path, names: set[str]) -> bool:
    """config.json with weights; or a model's config.json beside no weights and no GGUF,
    which is listed as a checkpoint that holds no weights."""
    if "config.json" not in names:
        return False
    if any(_is_weights(n) for n in names):
        return True
    if any(n.lower().endswith(".gguf") for n in names):
        return False
    config = _read_json(directory / "config.json")
    return isinstance(config, dict) and ("model_type" in config or "architectures" in config)


def _reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "broken symlink"
    return (exc.strerror or str(exc)).lower()


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "folder"), (stat.S_ISSOCK, "socket"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"


# -- the sources ------------------------------------------------------------------------------
def _scan_root(root: ScanRoot, skipped: list[str]) -> list[FoundModel]:
    if root.source == "huggingface":
        return _scan_hf(root.path, skipped)
    if root.source == "ollama":
        return _scan_ollama(root.path, skipped)
    if root.source not in ("lmstudio", "llama.cpp", "gpt4all", "folder"):
        skipped.append(f"{root.path}: unknown source {root.source!r}")
        return []

    def name(p: Path) -> str:  # LM Studio: <publisher>/<repo>/<file> is "publisher/repo · file"
        parts = p.relative_to(root.path).parts
        if root.source == "lmstudio" and len(parts) > 2:
            return f"{'/'.join(parts[:2])} · {'/'.join(parts[2:])}"
        return p.name

    files, folders = _walk(root.path, skipped, checkpoints=root.source == "folder")
    models = _gguf_models(root.source, [f for f in files if f.name.lower().endswith(".gguf")], name)
    return models + [_checkpoint_model(root.source, d.name, d) for d in folders]


def _scan_hf(cache_dir: Path, skipped: list[str]) -> list[FoundModel]:
    """Model repos of the cache: each GGUF (once per blob), each revision with config.json
    and weights as a checkpoint."""
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(cache_dir)
    except Exception as exc:  # noqa: BLE001 - CorruptedCacheException, OSError, ...
        skipped.append(f"{cache_dir}: {exc}")
        return []
    skipped.extend(f"{cache_dir}: {warning}" for warning in info.warnings)
    models = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        revisions = sorted(repo.revisions, key=lambda r: ("main" not in r.refs, -r.last_modified))
        for revision in revisions:
            snapshot = revision.snapshot_path
            files = sorted(f.file_path for f in revision.files)
            ggufs = [f for f in files if f.name.lower().endswith(".gguf")]
            models += _gguf_models(
                "huggingface", ggufs,
                lambda p: f"{repo.repo_id} · {p.relative_to(snapshot).as_posix()}")
            top = {f.name for f in files if f.parent == snapshot}
            if "config.json" in top and any(_is_weights(n) for n in top):
                name = repo.repo_id
                if len(revisions) > 1 and "main" not in revision.refs:
                    name += f" @ {revision.commit_hash[:7]}"
                models.append(_checkpoint_model("huggingface", name, snapshot))
    return models


def _scan_ollama(root: Path, skipped: list[str]) -> list[FoundModel]:
    """manifests/<registry>/<namespace>/<name>/<tag> name a GGUF blob and its side layers."""
    manifests = root / "manifests"
    if not manifests.is_dir():
        return []
    files, _ = _walk(manifests, skipped)
    models = []
    for manifest in files:
        parts = manifest.relative_to(manifests).parts
        if len(parts) == 4 and not parts[-1].startswith("."):
            models.append(_ollama_model(root, manifest, parts))
    return models


def _ollama_model(root: Path, manifest: Path, parts: tuple[str, ...]) -> FoundModel:
    registry, namespace, model, tag = parts
    name = f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"
    if registry != "registry.ollama.ai":
        name = f"{registry}/{namespace}/{model}:{tag}"
    scan_id = _scan_id(manifest)
    document = _read_json(manifest)
    layers = document.get("layers") if isinstance(document, dict) else None
    if not isinstance(layers, list):
        return replace(_unusable("ollama", name, manifest, "gguf",
                                 f"unreadable: {manifest}: not an Ollama manifest"),
                       scan_id=scan_id)
    blobs: dict[str, Path] = {}
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        media_type, digest = layer.get("mediaType"), layer.get("digest")
        match = _DIGEST.fullmatch(digest) if isinstance(digest, str) else None
        if match and isinstance(media_type, str) and media_type not in blobs:
            blobs[media_type] = root / "blobs" / f"sha256-{match.group(1)}"
    blob = blobs.get(_OLLAMA_MODEL)
    if blob is None:
        problem = f"{manifest} names no model layer"
    elif not blob.exists():
        problem = f"{manifest} names a missing blob {blob.name}"
    else:
        problem = None
    if problem:
        return replace(_unusable("ollama", name, blob or manifest, "gguf", problem),
                       scan_id=scan_id)
    details = []
    for media_type, label in _OLLAMA_SIDE.items():
        if media_type in blobs and (text := _read_start(blobs[media_type])) is not None:
            details.append((label, text[:200] if label == "template" else text.strip()))
    found = _gguf_models("ollama", [blob], lambda p: name)[0]
    return replace(found, scan_id=scan_id, details=found.details + tuple(details),
                   suggested_id=_slug(name))


def _read_start(path: Path) -> str | None:
    """The first SIDE_READ bytes of a regular file as text, or None."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with path.open("rb") as handle:
            return handle.read(SIDE_READ).decode("utf-8", errors="replace")
    except OSError:
        return None


def _read_json(path: Path) -> object:
    """The JSON in a regular file of sane size; None if it is anything else."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_JSON:
            return None
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None


# -- reading one model ------------------------------------------------------------------------
def _split_key(path: Path) -> tuple[Path, str, int] | None:
    match = SPLIT_GGUF.match(path.name)
    if not match or int(match["count"]) < 2:
        return None
    return path.parent, match["stem"].lower(), int(match["count"])


def _gguf_models(source: str, files: Sequence[Path], name_of) -> list[FoundModel]:
    """One model per GGUF file, and one per split GGUF (named by its first part)."""
    splits: dict[tuple, list[Path]] = {}
    models = []
    for path in files:
        key = _split_key(path)
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
        scan_id=_scan_id(first), source=source, name=name, path=first, format="gguf",
        architecture=arch, n_params=n_params, quantization=quantization, size_bytes=size,
        context_length=context if _is_int(context) else None,
        has_chat_template=("tokenizer.chat_template" in metadata) if metadata else None,
        problem=problem, suggested_id=_gguf_slug(first.name, quantization))


def _read_gguf(path: Path) -> tuple[dict, list[tuple[str, int]]]:
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"a {_kind(info.st_mode)}, not a file")
    if info.st_size == 0:
        raise ValueError("empty file")
    metadata, tensors, header_end = read_gguf_layout(path)
    missing = gguf_missing_bytes(metadata, tensors, header_end, info.st_size)
    if missing:
        raise ValueError(f"truncated: {format_bytes(missing)} of its tensor data are missing "
                         "(an interrupted download?)")
    return metadata, [(name, count) for name, count, _, _ in tensors]


def _gguf_reason(exc: Exception) -> str:
    if isinstance(exc, struct.error):
        return "truncated (the header ends early)"
    if isinstance(exc, OSError):
        return _reason(exc)
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


def _checkpoint_model(source: str, name: str, directory: Path) -> FoundModel:
    """config.json, tokenizer_config.json and the safetensors headers: never the weights."""
    names = {p.name for p in _files_in(directory)}
    weights = sorted(n for n in names if _is_weights(n))
    size = sum(_size(directory / n) for n in weights)
    problem = None
    if "config.json" not in names:
        problem = f"{directory} has no config.json"
    elif not weights:
        problem = f"{directory} holds no weights"
    config = _read_json(directory / "config.json")
    if not isinstance(config, dict):
        problem = problem or f"unreadable: {directory / 'config.json'}: not a JSON object"
        config = {}
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    index = _read_json(directory / "model.safetensors.index.json")
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
    return FoundModel(
        scan_id=_scan_id(directory), source=source, name=name, path=directory, format="checkpoint",
        architecture=arch if isinstance(arch, str) else None, n_params=n_params,
        quantization=str(quantization) if quantization else None, size_bytes=size,
        context_length=context, has_chat_template=_has_chat_template(directory, names),
        problem=problem, suggested_id=_slug(name.rsplit("/", 1)[-1].replace(" @ ", "-")))


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
    config = _read_json(directory / "tokenizer_config.json")
    return bool(config.get("chat_template")) if isinstance(config, dict) else None


def _unusable(source: str, name: str, path: Path, fmt: str, problem: str) -> FoundModel:
    return FoundModel(scan_id=_scan_id(path), source=source, name=name, path=path, format=fmt,
                      architecture=None, n_params=None, quantization=None,
                      size_bytes=_size(path), context_length=None, has_chat_template=None,
                      problem=problem,
                      suggested_id=_gguf_slug(name, None) if fmt == "gguf" else _slug(name))


# -- small helpers ----------------------------------------------------------------------------
def _scan_id(path: Path) -> str:
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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _slug(text: str) -> str:
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
            return _slug(stem)
        stem = f"{stem}-{quant}"
    return _slug(stem)
