"""The model library's side that talks to the Hub: search, listings, the fit of a file
before it is downloaded, and queueing downloads (only with --allow-download)."""
from __future__ import annotations

import threading

from backends.gguf import shape_from_header
from backends.kv_probe import planned_kv_cache
from backends.llamacpp_memory import llamacpp_estimate_of
from backends.model_tags import LANGUAGE_CODE, TASKS
from backends.notes import Note
from chatcore.generation.registry import CPU_PARALLEL
from chatcore.library.fit import Fit, judge_fit
from chatcore.library.hub import Hub, HubRepo, RepoListing
from chatcore.library.hub_errors import HubError
from chatcore.library.errors import LibraryError
from chatcore.generation.manager import ModelUnavailable, UnknownModel
from chatcore.generation.memory import format_bytes
from chatcore.library.model_files import DEFAULT_CONTEXT
from chatcore.generation.weights import ModelNotAvailable, resolve_weights

MAX_QUERY = 200


class LibraryHub:
    """Part of `ModelLibrary` (chatcore/library/model_library.py), which supplies `hub`, `manager`,
    `downloads`, `_remote`, `_remote_lock`, `_require_admin` and `_with_gpu_layers`."""

    def _require_hub(self) -> Hub:
        if self.hub is None:
            raise LibraryError("downloads are off: start the app with --allow-download to "
                               "search the Hugging Face Hub and fetch models")
        return self.hub

    def search(self, text: str, kind: str = "gguf", task: str = "",
               language: str = "") -> list[HubRepo]:
        """The Hub's repos by name, narrowed by task and language tags where given."""
        text = text.strip()[:MAX_QUERY]
        if not text and not (task or language):
            raise LibraryError("type a few letters of a model's name, or pick a task or a "
                               "language, to search for")
        if task and task not in TASKS:
            raise LibraryError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
        if language and not LANGUAGE_CODE.match(language):
            raise LibraryError(f"{language[:20]!r} is not a language code (ISO 639, e.g. "
                               "en, tl, fil)")
        return self._require_hub().search(text, kind, task=task, language=language)

    def listing(self, repo_id: str) -> RepoListing:
        return self._require_hub().listing(repo_id)

    def hub_fit(self, repo_id: str, filename: str, context_length: int | None = None) -> Fit:
        """The badge of a GGUF on the Hub before downloading it, from a range read of its
        header; the numbers are the same planner's as for a file on disk."""
        metadata, tensors, size = self._require_hub().gguf_header(repo_id, filename)
        try:
            shape = shape_from_header(metadata, tensors)
        except Exception as exc:  # noqa: BLE001 - the header came from elsewhere
            raise LibraryError(f"{repo_id}/{filename}: cannot read its header ({exc})") from exc
        arch = metadata.get("general.architecture")
        trained = metadata.get(f"{arch}.context_length") or 2048
        context = context_length or min(int(trained), DEFAULT_CONTEXT)
        # A new entry's settings: kv_cache auto, charged as this machine settled it (f16
        # until it has).
        estimate = llamacpp_estimate_of(shape, size, context, CPU_PARALLEL, planned_kv_cache())
        return self._with_gpu_layers(judge_fit(estimate, self.manager.room("cpu")), estimate,
                                     shape.n_layers)

    def download(self, repo_id: str, filename: str, user: str | None = None) -> str:
        """Queue a GGUF download; it joins the person's registry when it is complete."""
        self._require_admin(user)
        self._require_hub()
        return self.downloads.submit(repo_id, filename)

    def download_entry(self, model_id: str, user: str | None = None) -> str:
        """Queue the file a registry entry expects (the shipped Llama, Mistral, Falcon)."""
        entry = self.manager.entry(model_id)
        if not entry.repo or not entry.file:
            raise LibraryError(f"{model_id} is a whole checkpoint ({entry.repo or 'no repo'}): "
                               "fetch it with huggingface-cli download; this app downloads "
                               "GGUF files")
        return self.download(entry.repo, entry.file, user)

    def can_download(self, model_id: str) -> bool:
        """Whether the entry's GGUF is missing here and the Hub may fetch it."""
        try:
            entry = self.manager.entry(model_id)
        except (UnknownModel, ModelUnavailable):
            return False
        if self.hub is None or not (entry.repo and entry.file):
            return False
        try:
            resolve_weights(entry, allow_download=False)
        except ModelNotAvailable as exc:
            return exc.not_downloaded
        return False

    def remote_summary(self, model_id: str) -> str | None:
        """Download size and fit of a missing entry's file, read from the Hub once in the
        background ("…" until then), so a list can show it without waiting on the network."""
        if not self.can_download(model_id):
            return None
        entry = self.manager.entry(model_id)
        key = (entry.repo, entry.file, entry.context_length)
        with self._remote_lock:
            if key in self._remote:
                return self._remote[key]
            self._remote[key] = "…"
        threading.Thread(target=self._fetch_remote, args=(key,), name="hub-summary",
                         daemon=True).start()
        return "…"

    def _fetch_remote(self, key: tuple) -> None:
        repo, filename, context = key
        try:
            size = next(f.size for f in self._require_hub().listing(repo).gguf_files
                        if f.filename == filename)
            summary = f"{format_bytes(size)} · {self.hub_fit(repo, filename, context).verdict}"
        except StopIteration:
            summary = Note(f"⚠️ {repo} has no file {filename}", "library.hub.no_such_file",
                           repo=repo, file=filename)
        except (HubError, LibraryError) as exc:
            summary = f"⚠️ {exc}"
        with self._remote_lock:
            self._remote[key] = summary
