"""Find the models this machine already holds: offline, reading only headers.

Looks where the common tools keep their downloads (the Hugging Face cache, LM Studio, Ollama,
llama.cpp's cache, GPT4All) and in the person's own folders. Every GGUF is read through its
header and every checkpoint through config.json and its safetensors headers, never its
weights, so a few hundred files take well under a second. Bad files become models with a
`problem`; things that cannot be walked become `skipped` lines: a scan never raises for
what it finds on disk.
"""
from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from backends.gguf import SPLIT_GGUF
from chatcore.library.found_adapters import PEFT_FILES, peft_adapter_model, with_bases
from chatcore.library.model_files import (
    FoundModel,
    checkpoint_model,
    file_kind,
    files_in,
    gguf_models,
    is_weights,
    os_reason,
    read_json,
    scan_id_of,
    slug,
    split_key,
    unusable,
)

log = logging.getLogger(__name__)

MAX_DEPTH = 12  # a walk goes no deeper: a huge or hostile tree cannot run forever
SIDE_READ = 4096  # bytes read of an Ollama template or params layer
_DIGEST = re.compile(r"sha256[:-]([0-9a-f]{64})")
_OLLAMA_MODEL = "application/vnd.ollama.image.model"
_OLLAMA_SIDE = {"application/vnd.ollama.image.template": "template",
                "application/vnd.ollama.image.params": "params",
                "application/vnd.ollama.image.system": "system"}


@dataclass(frozen=True)
class ScanRoot:
    source: str  # "huggingface" | "lmstudio" | "ollama" | "llama.cpp" | "gpt4all" | "folder"
    path: Path


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
    ordered = sorted(with_bases(list(models.values())),
                     key=lambda m: (m.source, m.name.lower(), m.name, str(m.path)))
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
        problem = f"{path} does not exist" if missing else f"unreadable: {path}: {os_reason(exc)}"
        fmt = "gguf" if path.suffix.lower() == ".gguf" else "checkpoint"
        return unusable(source, path.name, path, fmt, problem)
    if stat.S_ISDIR(mode):
        return _folder_model(source, path.name, path)
    if not stat.S_ISREG(mode):
        return unusable(source, path.name, path, "gguf",
                         f"unreadable: {path}: a {file_kind(mode)}, not a file")
    if SPLIT_GGUF.match(path.name):
        siblings = [p for p in files_in(path.parent) if split_key(p) == split_key(path)]
        return gguf_models(source, siblings or [path], lambda p: p.name)[0]
    return gguf_models(source, [path], lambda p: p.name)[0]


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
            skipped.append(f"{directory}: {os_reason(exc)}")
            continue
        subdirs, here = [], []
        for entry in entries:
            try:
                if entry.is_dir():
                    subdirs.append(Path(entry.path))
                elif entry.is_file():
                    here.append(Path(entry.path))
                else:
                    skipped.append(f"{entry.path}: {file_kind(entry.stat().st_mode)}")
            except OSError as exc:
                skipped.append(f"{entry.path}: {os_reason(exc)}")
        files += here
        if checkpoints and _is_checkpoint_dir(directory, {p.name for p in here}):
            folders.append(directory)
            continue
        if subdirs and depth >= MAX_DEPTH:
            skipped.append(f"{directory}: deeper than {MAX_DEPTH} levels, not searched")
            continue
        stack += [(d, depth + 1) for d in reversed(subdirs)]
    return files, folders


def _folder_model(source: str, name: str, directory: Path):
    """A checkpoint folder, or a PEFT adapter folder (adapter_config.json)."""
    if (directory / PEFT_FILES[0]).is_file():
        return peft_adapter_model(source, name, directory)
    return checkpoint_model(source, name, directory)


def _is_checkpoint_dir(directory: Path, names: set[str]) -> bool:
    """config.json with weights; or a model's config.json beside no weights and no GGUF,
    which is listed as a checkpoint that holds no weights; or a PEFT adapter folder."""
    if PEFT_FILES[0] in names:
        return True
    if "config.json" not in names:
        return False
    if any(is_weights(n) for n in names):
        return True
    if any(n.lower().endswith(".gguf") for n in names):
        return False
    config = read_json(directory / "config.json")
    return isinstance(config, dict) and ("model_type" in config or "architectures" in config)


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
    models = gguf_models(root.source, [f for f in files if f.name.lower().endswith(".gguf")], name)
    return models + [_folder_model(root.source, d.name, d) for d in folders]


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
            models += gguf_models(
                "huggingface", ggufs,
                lambda p: f"{repo.repo_id} · {p.relative_to(snapshot).as_posix()}")
            top = {f.name for f in files if f.parent == snapshot}
            if PEFT_FILES[0] in top:
                models.append(peft_adapter_model("huggingface", repo.repo_id, snapshot))
            elif "config.json" in top and any(is_weights(n) for n in top):
                name = repo.repo_id
                if len(revisions) > 1 and "main" not in revision.refs:
                    name += f" @ {revision.commit_hash[:7]}"
                models.append(checkpoint_model("huggingface", name, snapshot))
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
    scan_id = scan_id_of(manifest)
    document = read_json(manifest)
    layers = document.get("layers") if isinstance(document, dict) else None
    if not isinstance(layers, list):
        return replace(unusable("ollama", name, manifest, "gguf",
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
        return replace(unusable("ollama", name, blob or manifest, "gguf", problem),
                       scan_id=scan_id)
    details = []
    for media_type, label in _OLLAMA_SIDE.items():
        if media_type in blobs and (text := _read_start(blobs[media_type])) is not None:
            details.append((label, text[:200] if label == "template" else text.strip()))
    found = gguf_models("ollama", [blob], lambda p: name)[0]
    # A template layer is Ollama's chat template: the model chats even if its GGUF has none.
    base = found.base and not any(label == "template" for label, _ in details)
    return replace(found, scan_id=scan_id, details=found.details + tuple(details),
                   suggested_id=slug(name), base=base)


def _read_start(path: Path) -> str | None:
    """The first SIDE_READ bytes of a regular file as text, or None."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with path.open("rb") as handle:
            return handle.read(SIDE_READ).decode("utf-8", errors="replace")
    except OSError:
        return None
