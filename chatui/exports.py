"""Files the page hands out for download (exports, reports, plots), each under a name no one
else can guess, and gone soon after.

Gradio serves a file under its cache folder to whoever asks for its path, signed in as
anyone. A predictable name (`exports/1-Summarise-the-attached-text.md`) would let one
user read another's transcript, so every file here lives in a folder of its own named by
128 random bits, which only the person it was made for is told. Files are removed when
what they were made from is deleted (`discard`), an hour after they were written, and
when the server stops: a download link is for now, not an archive.
"""
from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

EXPORT_TTL_S = 3600  # how long a download link works


@dataclass(frozen=True)
class _Written:
    folder: Path
    about: str | None
    at: float


class ExportFiles:
    """Makes the folders exports are written in, under `root` (Gradio's cache folder when
    serving, so files are served from where they are, never from an allowed folder)."""

    def __init__(self, root: Path, ttl_s: float = EXPORT_TTL_S) -> None:
        self.root = root
        self.ttl_s = ttl_s
        self._written: list[_Written] = []
        self._lock = threading.Lock()

    def folder(self, about: str | None = None) -> Path:
        """A new, empty folder with a random name. `about` names what its files show
        (`conversation_key(...)`), so that deleting that thing removes them too."""
        self.expire()
        folder = self.root / f"export-{secrets.token_hex(16)}"
        folder.mkdir(parents=True, mode=0o700)
        with self._lock:
            self._written.append(_Written(folder, about, time.monotonic()))
        return folder

    def path(self, name: str, about: str | None = None) -> Path:
        """Where to write one file called `name` (its folder is new and random)."""
        return self.folder(about) / Path(name).name

    def discard(self, about: str) -> int:
        """Remove every file made about `about`; how many folders went."""
        return self._remove(lambda w: w.about == about)

    def expire(self) -> int:
        """Remove the files older than the time a link works."""
        oldest = time.monotonic() - self.ttl_s
        return self._remove(lambda w: w.at < oldest)

    def close(self) -> None:
        """Remove every file this server wrote (it stops; its links die with it)."""
        self._remove(lambda w: True)

    def _remove(self, matches) -> int:
        with self._lock:
            gone = [w for w in self._written if matches(w)]
            self._written = [w for w in self._written if not matches(w)]
        for written in gone:
            shutil.rmtree(written.folder, ignore_errors=True)
        if gone:
            log.debug("removed %d export folder(s)", len(gone))
        return len(gone)


def conversation_key(user: str, conversation_id: int) -> str:
    """What a conversation's exports are filed under, for `ExportFiles.discard`."""
    return f"conversation:{user}:{conversation_id}"
