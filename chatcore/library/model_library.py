"""The person's model library: their own registry file laid over the shipped models.yaml,
what a scan of this machine found, and the fit of each model in the memory budget.

Every entry point (the Models tab, the command line, a reload on SIGHUP) adds, edits and
removes models here, so the checks are the same everywhere: the same schema and messages
as the start-up check, admins only when there is sign-in, and nothing written unless the
whole result validates. The shipped file is never written; the person's file is replaced
atomically, so a crash mid-write leaves the old one.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from backends.base import BackendError
from backends.chat_template import COMPLETION_MODE, guess_fallback
from backends.footprint import MemoryEstimate, PlannerError
from backends.gguf import gguf_shape
from backends.model_tags import ModelTags, merged
from backends.notes import Note
from chatcore.generation.registry import (
    LLAMACPP_ONLY,
    MAX_ID,
    TRANSFORMERS_ONLY,
    ConfigError,
    ModelEntry,
    ModelRegistry,
    load_layered_registry,
)
from chatcore.library.discovery import ScanResult, inspect_path, scan
from chatcore.library.download_queue import DownloadQueue
from chatcore.generation.factory import make_backend
from chatcore.library.fit import Fit, judge_fit, layers_on_gpu
from chatcore.library.hub import Hub
from chatcore.library.hub_errors import HubError
from chatcore.library.errors import LibraryError, NotAllowed
from chatcore.library.library_hub import LibraryHub
from chatcore.generation.manager import ModelManager
from chatcore.generation.memory import gpu_devices
from chatcore.library.model_files import EntryNote, FoundModel, suggest_entry
from chatcore.generation.weights import ModelNotAvailable, resolve_weights

log = logging.getLogger(__name__)

PERSONAL_FILE = "models.yaml"
# What a person may change from the Models tab; everything else is edited in the file.
EDITABLE = ("name", "context_length", "defaults", "chat_template", "description", "backend",
            "quantization")
FILES_REFUSED = ("only the users named with --admins may look at files and folders on this "
                 "server: leave the folder empty and Scan to list the model folders, then pick "
                 "a model from that list")


class FilesRefused(NotAllowed):
    """A signed-in user who is not an admin named a path or folder on the server. One
    message whether or not it exists, so the refusal says nothing about the server's files."""

    def __init__(self) -> None:
        super().__init__(FILES_REFUSED)


class ModelLibrary(LibraryHub):
    """Adds, edits and removes models in the person's registry file, and keeps the
    manager's registry in step with it."""

    def __init__(self, manager: ModelManager, shipped: Path, personal: Path,
                 admins: Sequence[str] | None = None, scan_dirs: Sequence[Path] = (),
                 env: Mapping[str, str] | None = None, home: Path | None = None,
                 hub: Hub | None = None, offline: bool = False) -> None:
        """`hub` is given only when the person allowed downloads; without it nothing here
        touches the network (`offline` says the person asked for that outright)."""
        self.manager = manager
        self.offline = offline
        self.hub = hub
        self.downloads = DownloadQueue(hub, on_done=self.register_download) if hub else None
        self.shipped = Path(shipped)
        self.personal = Path(personal)
        self.admins = None if admins is None else frozenset(admins)
        self.scan_dirs = [Path(d).expanduser() for d in scan_dirs]
        self._env, self._home = env, home
        self._lock = threading.Lock()  # one change of the file at a time
        self._last_scans: dict[str | None, ScanResult] = {}  # per user: one's scan, one's ids
        self._scans_lock = threading.Lock()
        self._remote: dict[tuple, str] = {}  # (repo, file, context) -> "4.9 GB · fits"
        self._remote_lock = threading.Lock()
        self._estimates: dict[str, tuple[MemoryEstimate, str]] = {}  # by the entry's JSON

    # -- who may change it -----------------------------------------------------------
    def editable_by(self, user: str | None) -> bool:
        """Without sign-in the one local person is the admin; with it, the --admins."""
        return self.admins is None or (user is not None and user in self.admins)

    def _require_admin(self, user: str | None) -> None:
        if not self.editable_by(user):
            raise NotAllowed(f"{user or 'this user'} may not change the model library: "
                             "only the users named with --admins may")

    def may_look_at_files(self, user: str | None) -> bool:
        """Whether `user` may name any path or folder on the server (the admins, like the
        one local person without sign-in); others see only the configured model folders
        (--models-dir and the known caches), through a scan."""
        return self.editable_by(user)

    def _require_file_access(self, user: str | None) -> None:
        if not self.may_look_at_files(user):
            log.info("refused %s a path on the server: not an admin", user)
            raise FilesRefused()

    # -- finding models --------------------------------------------------------------
    def scan(self, extra_dirs: Sequence[Path] = (), user: str | None = None) -> ScanResult:
        """The configured model folders, and `extra_dirs` for those who may look at any
        folder; the result is `user`'s own, so one person's scan never changes the ids
        another person picks from."""
        if extra_dirs:
            self._require_file_access(user)
        result = scan(extra_dirs=[*self.scan_dirs, *extra_dirs], env=self._env,
                      home=self._home)
        with self._scans_lock:
            self._last_scans[user] = result
        return result

    def find(self, text: str, user: str | None = None) -> FoundModel:
        """A scan id from `user`'s last scan, or (admins only) a path to a GGUF file or
        checkpoint folder; any other text from anyone else gets the one FilesRefused."""
        text = text.strip()
        if not text:
            raise LibraryError("give a path to a GGUF file or checkpoint folder, or a scan id")
        found = self._scanned(text, user)
        if found is not None:
            return found
        self._require_file_access(user)  # before the path is touched: no existence oracle
        path = Path(text).expanduser()
        if not path.exists():
            raise LibraryError(f"{text}: no such file or folder, and no scanned model has "
                               "that id (python chat_app.py --scan lists them)")
        return inspect_path(path.resolve())

    def _scanned(self, text: str, user: str | None) -> FoundModel | None:
        """The model of `user`'s last scan with scan id `text`; without a scan yet, the
        configured folders are scanned first unless an admin typed an existing path."""
        with self._scans_lock:
            last = self._last_scans.get(user)
        if last is None and not (self.may_look_at_files(user)
                                 and Path(text).expanduser().exists()):
            last = self.scan(user=user)
        return next((f for f in last.models if f.scan_id == text), None) if last else None

    # -- changing the person's file ------------------------------------------------------
    def add(self, text: str, model_id: str | None = None, user: str | None = None,
            context_length: int | None = None) -> tuple[ModelEntry, list[EntryNote]]:
        """Add a found model (scan id or path); returns the entry and notes to show."""
        self._require_admin(user)
        found = self.find(text, user)
        if found.problem:
            raise LibraryError(f"{found.path} cannot be added: {found.problem}")
        with self._lock:
            wanted = model_id or found.suggested_id or "model"
            if model_id is not None:
                if self.manager.registry.get(model_id) or \
                        self.manager.registry.broken_entry(model_id):
                    raise LibraryError(f"the id {model_id!r} is taken: choose another")
            else:
                wanted = self._free_id(wanted)
            raw, notes = suggest_entry(found, wanted, context_length)
            self._write([*self._personal_raw(), raw], wanted)
        return self.manager.entry(wanted), notes

    def edit(self, model_id: str, changes: Mapping[str, object],
             user: str | None = None) -> ModelEntry:
        """Change fields of an entry; a shipped entry is copied into the person's file
        with the change (their file wins), so the shipped file stays as it was."""
        self._require_admin(user)
        unknown = sorted(set(changes) - set(EDITABLE))
        if unknown:
            raise LibraryError(f"{unknown[0]!r} cannot be edited here (editable: "
                               f"{', '.join(EDITABLE)}); edit {self.personal} by hand")
        with self._lock:
            entry = self.manager.entry(model_id)
            raws = self._personal_raw()
            index = next((i for i, r in enumerate(raws) if r.get("id") == model_id), None)
            raw = dict(raws[index]) if index is not None else \
                entry.model_dump(mode="json", exclude_defaults=True)
            raw["id"] = model_id
            for name, value in changes.items():
                if value is None or value == "":
                    raw.pop(name, None)
                else:
                    raw[name] = value
            # A change of engine drops the settings only the other engine understands.
            other = {"llamacpp": TRANSFORMERS_ONLY, "transformers": LLAMACPP_ONLY}
            for name in other.get(str(raw.get("backend")), {}):
                if name not in changes:
                    raw.pop(name, None)
            if index is None:
                raws.append(raw)
            else:
                raws[index] = raw
            self._write(raws, model_id)
        return self.manager.entry(model_id)

    def switch_mode(self, model_id: str, user: str | None = None) -> ModelEntry:
        """Completion mode <-> chat mode in one step (a base model guessed wrong): chat
        mode takes the model's own template, or the fallback guessed from its
        architecture when its file has none."""
        self._require_admin(user)  # before its file is read
        entry = self.manager.entry(model_id)
        if entry.chat_template != COMPLETION_MODE:
            return self.edit(model_id, {"chat_template": COMPLETION_MODE}, user)
        try:
            found = inspect_path(resolve_weights(entry))
        except ModelNotAvailable as exc:
            raise LibraryError(f"{model_id}: {exc}") from None
        if found.problem:
            raise LibraryError(f"{model_id}: {found.problem}")
        chat = None if found.has_chat_template else guess_fallback(found.architecture)
        return self.edit(model_id, {"chat_template": chat}, user)

    def remove(self, model_id: str, user: str | None = None) -> str:
        """Remove one of the person's entries (a shipped one it overrode comes back)."""
        self._require_admin(user)
        with self._lock:
            raws = self._personal_raw()
            kept = [r for r in raws if r.get("id") != model_id]
            if len(kept) == len(raws):
                raise LibraryError(f"{model_id!r} is not in your registry ({self.personal}); "
                                   "the shipped models.yaml is never changed")
            self._write(kept, None)
        return model_id

    def reload(self) -> list[str]:
        """Read both files again (after a hand edit); a bad edit keeps the last good
        registry and raises ConfigError with the same message the start-up check gives."""
        with self._lock:
            registry = load_layered_registry(self.shipped, self.personal)
            known = {b.reason for b in self.manager.registry.broken}
            new = [b for b in registry.broken if b.reason not in known]
            if new:
                raise ConfigError(f"{new[0].reason}; the last good registry stays")
            return self.manager.replace_registry(registry)

    def register_download(self, repo_id: str, filename: str, path: Path) -> None:
        """A finished download: an entry that expects it is now available; anything else
        is added to the person's registry, by repo and file, like the shipped entries."""
        if any(e.repo == repo_id and e.file == filename for e in self.manager.registry.entries):
            return
        found = inspect_path(path)
        tags = merged(found.tags, self._hub_tags(repo_id))
        with self._lock:
            raw, _ = suggest_entry(found, self._free_id(found.suggested_id or "model"))
            del raw["path"]
            if not tags.empty:
                raw["tags"] = tags.model_dump(mode="json", exclude_defaults=True)
            raw.update(repo=repo_id, file=filename, name=f"{repo_id} · {filename}"[:200],
                       description=f"Downloaded from the Hugging Face Hub: {repo_id}"[:2000])
            self._write([*self._personal_raw(), raw], raw["id"])
        log.info("added %s to %s after its download", raw["id"], self.personal)

    def _hub_tags(self, repo_id: str) -> ModelTags:
        """The repo's tags on the Hub, for what the file's metadata does not say; none when
        the Hub cannot be asked (the download itself succeeded)."""
        try:
            return self.hub.repo_tags(repo_id) if self.hub else ModelTags()
        except HubError as exc:
            log.warning("no Hub tags for %s: %s", repo_id, exc)
            return ModelTags()

    # -- fit -------------------------------------------------------------------------
    def fit_of_entry(self, model_id: str, context_length: int | None = None) -> Fit | None:
        """The badge of a registry entry whose weights are on disk; None for remote ones
        and for entries whose weights are not here."""
        entry = self.manager.entry(model_id)
        if entry.is_remote:
            return None
        if context_length:
            entry = entry.model_copy(update={"context_length": context_length})
        planned = self._planned(entry)
        return None if planned is None else judge_fit(planned[0], self.manager.room(planned[1]))

    def fit_of_found(self, found: FoundModel, context_length: int | None = None) -> Fit | None:
        if found.problem:
            return None
        raw, _ = suggest_entry(found, "candidate", context_length)
        planned = self._planned(ModelEntry.model_validate(raw))
        if planned is None:
            return None
        estimate, device = planned
        fit = judge_fit(estimate, self.manager.room(device))
        if found.format != "gguf":
            return fit
        return self._with_gpu_layers(fit, estimate,
                                     gguf_shape(found.base_path or found.path).n_layers)

    def _planned(self, entry: ModelEntry) -> tuple[MemoryEstimate, str] | None:
        """The planner's estimate, read once per entry (a header read each time the table
        refreshes would cost tens of milliseconds a row)."""
        key = entry.model_dump_json()
        with self._remote_lock:
            if key in self._estimates:
                return self._estimates[key]
        planned = _planned(entry)
        if planned is not None:  # none yet (not downloaded) is asked again next time
            with self._remote_lock:
                self._estimates[key] = planned
        return planned

    def _with_gpu_layers(self, fit: Fit, estimate: MemoryEstimate, n_layers: int) -> Fit:
        """With a GPU, a GGUF's badge says how many layers fit there (n_gpu_layers)."""
        gpus = sorted({d for d in self.manager.budget.limits if d.startswith("cuda")}
                      | set(gpu_devices()))
        if not gpus:
            return fit
        layers = layers_on_gpu(estimate, n_layers, self.manager.room(gpus[0]))
        detail = Note(f"{fit.detail}; {layers} of {n_layers} layers fit on {gpus[0]} "
                      f"(n_gpu_layers: {layers})", "library.need.gpu_layers", detail=fit.detail,
                      layers=str(layers), total=str(n_layers), device=gpus[0])
        return Fit(fit.verdict, fit.needs, detail, layers)

    # -- the file --------------------------------------------------------------------
    def _free_id(self, wanted: str) -> str:
        registry = self.manager.registry
        candidate, number = wanted, 1
        while registry.get(candidate) or registry.broken_entry(candidate):
            number += 1
            suffix = f"-{number}"
            candidate = wanted[:MAX_ID - len(suffix)] + suffix
        return candidate

    def _personal_raw(self) -> list[dict]:
        if not self.personal.exists():
            return []
        try:
            document = yaml.safe_load(self.personal.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            raise LibraryError(f"{self.personal} cannot be read ({exc}); fix it by hand "
                               "first, nothing was changed") from None
        models = document.get("models") if isinstance(document, dict) else None
        if not isinstance(models, list):
            raise LibraryError(f"{self.personal} has no 'models:' list; fix it by hand "
                               "first, nothing was changed")
        return [dict(m) if isinstance(m, dict) else m for m in models]

    def _write(self, raws: list, checked_id: str | None) -> None:
        """Validate the whole layered result from a temporary file, then move it into
        place; the manager's registry follows only when it is valid."""
        self.personal.parent.mkdir(parents=True, exist_ok=True)
        text = ("# Your models: laid over the shipped models.yaml (yours win on the same id).\n"
                "# The app rewrites this file when you add, edit or remove models.\n"
                + yaml.safe_dump({"models": raws}, sort_keys=False, allow_unicode=True))
        handle, temp = tempfile.mkstemp(prefix=".models-", suffix=".yaml",
                                        dir=self.personal.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
            try:
                registry = load_layered_registry(self.shipped, Path(temp))
            except ConfigError as exc:
                raise LibraryError(str(exc).replace(temp, str(self.personal))) from None
            broken = registry.broken_entry(checked_id) if checked_id else None
            if broken is not None:
                raise LibraryError(broken.reason.replace(temp, str(self.personal)))
            os.replace(temp, self.personal)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
        self.manager.replace_registry(
            ModelRegistry(registry.path, registry.entries, registry.broken, self.personal,
                          registry.personal))


def _planned(entry: ModelEntry) -> tuple[MemoryEstimate, str] | None:
    """What the planner would reserve for this entry, and on which device; None when its
    weights are not here or cannot be read (the reason is shown elsewhere). Never downloads."""
    try:
        backend = make_backend(entry, allow_download=False)
        breakdown = backend.memory_breakdown()
        return None if breakdown is None else (breakdown, backend.memory_device())
    except (ModelNotAvailable, BackendError, PlannerError, OSError):
        return None
    except Exception:  # noqa: BLE001 - a config.json of any shape may arrive: no badge
        log.debug("no estimate for %s", entry.id, exc_info=True)
        return None


def personal_registry(data_dir: Path) -> Path:
    return Path(data_dir) / PERSONAL_FILE
