"""Downloads from the Hub that resume, verified by sha256, into the Hugging Face cache.

huggingface_hub 2.4.0's `hf_hub_download` does not resume across calls: it writes a
process-unique `<etag>.<random>.incomplete` file and deletes it on any failure
(huggingface_hub PR #4228), and a killed process leaves one that no later call reads. So the
bytes travel here, through huggingface_hub's own HTTP session and headers, into
`blobs/<etag>.incomplete` under the cache's own lock, and a later call asks for the rest with
`Range`; the finished, verified blob is then handed to `hf_hub_download`, which finds it and
writes the snapshot link and `refs/main` as it always does.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub import hf_hub_download, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import WeakFileLock, get_session, hf_raise_for_status

from backends.gguf import SPLIT_GGUF
from chatcore.library.hub_errors import DownloadCancelled, HubError, cause
from chatcore.generation.memory import format_bytes

log = logging.getLogger(__name__)

RESUME_TRIES = 5  # reconnections within one call, each only after bytes arrived
ProgressFn = Callable[[int, int], None]
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class RemoteFile:
    """What a HEAD on a file told: where its bytes are pinned and what they must hash to."""

    filename: str
    commit: str
    etag: str
    size: int | None

    @property
    def sha256(self) -> str | None:
        return self.etag if _SHA256.fullmatch(self.etag) else None  # LFS files: the sha256


def split_parts(filename: str) -> tuple[str, ...]:
    """Every part's name of a split GGUF ("x-00002-of-00003.gguf"), or () for a single file."""
    head, _, name = filename.rpartition("/")
    match = SPLIT_GGUF.match(name)
    if not match:
        return ()
    prefix = f"{head}/" if head else ""
    count = int(match["count"])
    return tuple(f"{prefix}{match['stem']}-{i:05d}-of-{count:05d}.gguf"
                 for i in range(1, count + 1))


class HubDownloads:
    """The download half of `Hub` (chatcore/library/hub.py), which supplies `_head`, `_headers`,
    `_explained`, `_siblings`, `endpoint`, `timeout` and `cache_dir`."""

    def download(self, repo_id: str, filename: str, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None, revision: str = "main") -> Path:
        """The file's snapshot path in the cache, downloading what is missing.

        Resumes what an earlier cancelled, dropped or killed call left; checks the sha256
        the Hub gives for LFS files (a mismatch deletes the bytes); for a split GGUF
        downloads every part and returns the first part's path.
        """
        names = split_parts(filename) or (filename,)
        remotes = [self._head(repo_id, name, revision) for name in names]
        total = sum(r.size or 0 for r in remotes)
        finished = 0
        first: Path | None = None
        for remote in remotes:
            def report(done: int, base: int = finished) -> None:
                if progress is not None:
                    progress(base + done, total)

            path = self._download_one(repo_id, remote, revision, report, cancel)
            first = first or path
            finished += remote.size or path.stat().st_size
        if progress is not None:
            progress(finished, max(total, finished))
        assert first is not None
        return first

    def _download_one(self, repo_id: str, remote: RemoteFile, revision: str,
                      report: Callable[[int], None], cancel: threading.Event | None) -> Path:
        filename = remote.filename
        storage = self.cache_dir / repo_folder_name(repo_id=repo_id, repo_type="model")
        blob = storage / "blobs" / remote.etag
        pointer = storage / "snapshots" / remote.commit / filename
        if pointer.exists():
            report(remote.size or pointer.stat().st_size)
            return pointer
        lock = self.cache_dir / ".locks" / storage.name / f"{remote.etag}.lock"
        with self._explained(f"Downloading {filename} from {repo_id} failed", repo_id, filename):
            if not blob.exists():
                lock.parent.mkdir(parents=True, exist_ok=True)
                blob.parent.mkdir(parents=True, exist_ok=True)
                # The lock hf_hub_download takes for this blob: one writer per partial file.
                with WeakFileLock(lock):
                    if not blob.exists():
                        self._fetch_blob(repo_id, remote, blob, report, cancel)
            report(remote.size or blob.stat().st_size)
            # The blob is in place: hf_hub_download only links the snapshot and writes the ref.
            linked = Path(hf_hub_download(repo_id, filename, revision=revision,
                                          cache_dir=self.cache_dir, endpoint=self.endpoint,
                                          token=self.token, etag_timeout=self.timeout))
        if linked.resolve() != blob.resolve():
            self._verify_cached(linked, repo_id, filename)  # the repo moved between the calls
        return linked

    def _fetch_blob(self, repo_id: str, remote: RemoteFile, blob: Path,
                    report: Callable[[int], None], cancel: threading.Event | None) -> None:
        """Fill `<blob>.incomplete`, check its sha256 and give it the blob's name."""
        partial = _PartialFile(blob.with_name(blob.name + ".incomplete"))
        url = hf_hub_url(repo_id, remote.filename, revision=remote.commit, endpoint=self.endpoint)
        digest = self._transfer(url, partial, remote, repo_id, report, cancel)
        if remote.sha256 and digest != remote.sha256:
            partial.path.unlink(missing_ok=True)
            raise HubError(_mismatch(repo_id, remote.filename, digest, remote.sha256),
                           repo_id, remote.filename)
        os.replace(partial.path, blob)
        log.info("downloaded %s from %s (%d bytes, sha256 checked: %s)", remote.filename,
                 repo_id, blob.stat().st_size, bool(remote.sha256))

    def _transfer(self, url: str, partial: _PartialFile, remote: RemoteFile, repo_id: str,
                  report: Callable[[int], None], cancel: threading.Event | None) -> str:
        """Fetch what the partial file lacks and return the whole file's sha256.

        A connection that drops or stalls after bringing bytes is opened again from where
        it stopped (RESUME_TRIES times); one that brings nothing ends the call.
        """
        filename, size = remote.filename, remote.size
        action = f"Downloading {filename} from {repo_id} failed"
        tries = 0
        while True:
            have = partial.resume_point(size)
            report(have)
            if size is not None and have == size:
                return partial.digest.hexdigest()
            self._check_cancel(cancel, repo_id, filename, have, size)
            self._check_space(partial.path.parent, (size or 0) - have, repo_id, filename)
            if have:
                log.info("resuming %s from %s at byte %d", filename, repo_id, have)
            try:
                self._fetch_rest(url, partial, have, remote, repo_id, report, cancel)
            except (httpx2.TimeoutException, httpx2.NetworkError,
                    httpx2.RemoteProtocolError) as exc:
                tries += 1
                if partial.hashed <= have or tries > RESUME_TRIES:
                    raise HubError(f"{action}: {cause(exc, self.endpoint, self.timeout)}; "
                                   f"{partial.hashed} of {size} bytes are kept and the next "
                                   "try resumes there.", repo_id, filename) from exc
                log.warning("%s from %s: %s at byte %d; resuming", filename, repo_id, exc,
                            partial.hashed)
            except OSError as exc:
                if exc.errno != errno.ENOSPC or isinstance(exc, HfHubHTTPError):
                    raise
                raise HubError(f"{action}: disk full, {(size or 0) - partial.size()} more bytes "
                               f"are needed in {partial.path.parent}.", repo_id, filename) from exc
            if size is None:
                return partial.digest.hexdigest()

    def _fetch_rest(self, url: str, partial: _PartialFile, have: int, remote: RemoteFile,
                    repo_id: str, report: Callable[[int], None],
                    cancel: threading.Event | None) -> None:
        """One GET from byte `have` on, written to the partial file as it arrives."""
        filename = remote.filename
        headers = self._headers({"Range": f"bytes={have}-", "Accept-Encoding": "identity"})
        with get_session().stream("GET", url, headers=headers, timeout=self.timeout) as response:
            if response.status_code >= 400:
                response.read()
                hf_raise_for_status(response)
            answered = response.headers.get("Content-Range", "")
            if have and response.status_code != 206:
                have = 0  # the server ignored Range: start over
            elif have and not answered.startswith(f"bytes {have}-"):
                raise HubError(f"Downloading {filename} from {repo_id} failed: the Hub answered "
                               f"a resume from byte {have} with {answered!r}.", repo_id, filename)
            with partial.writer(have) as write:
                for chunk in response.iter_bytes():
                    write(chunk)
                    report(partial.hashed)
                    self._check_cancel(cancel, repo_id, filename, partial.hashed, remote.size)
        if partial.hashed == have:
            raise HubError(f"Downloading {filename} from {repo_id} failed: the Hub sent no bytes "
                           f"from byte {have} on.", repo_id, filename)

    def _verify_cached(self, path: Path, repo_id: str, filename: str) -> None:
        """A blob named by a sha256 must hash to it; if not, delete the blob and its link."""
        blob = path.resolve()
        if not _SHA256.fullmatch(blob.name):
            return
        with blob.open("rb") as handle:
            got = hashlib.file_digest(handle, "sha256").hexdigest()
        if got != blob.name:
            blob.unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            raise HubError(_mismatch(repo_id, filename, got, blob.name), repo_id, filename)

    # -- HTTP pieces ---------------------------------------------------------------------------
    @staticmethod
    def _check_cancel(cancel: threading.Event | None, repo_id: str, filename: str, done: int,
                      size: int | None) -> None:
        if cancel is not None and cancel.is_set():
            raise DownloadCancelled(
                f"Downloading {filename} from {repo_id} was cancelled at {done} of {size} bytes; "
                "they are kept and the next try resumes there.", repo_id, filename)

    @staticmethod
    def _check_space(folder: Path, needed: int, repo_id: str, filename: str) -> None:
        free = shutil.disk_usage(folder).free
        if needed > free:
            raise HubError(f"Downloading {filename} from {repo_id} failed: disk full, it needs "
                           f"{format_bytes(needed)} more in {folder} and {format_bytes(free)} "
                           "is free.", repo_id, filename)


def total_size(response: httpx2.Response) -> int | None:
    """The whole file's size: Content-Range's "/N", or a 200's Content-Length."""
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    if response.status_code == 200 and "Content-Length" in response.headers:
        return int(response.headers["Content-Length"])
    return None


def _mismatch(repo_id: str, filename: str, got: str, expected: str) -> str:
    return (f"Downloading {filename} from {repo_id} failed: sha256 mismatch, the bytes hash to "
            f"{got[:12]}… where the Hub says {expected[:12]}…, so they were deleted.")


class _PartialFile:
    """`blobs/<etag>.incomplete` and the sha256 of the bytes in it, kept in step, so a
    finished download is checked without reading it again (a resumed one reads its start)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.digest = hashlib.sha256()
        self.hashed = 0  # bytes fed to the digest, all of them written to the file

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def resume_point(self, expected_size: int | None) -> int:
        """Where the next request starts: the bytes on disk, hashed."""
        have = self.size()
        if expected_size is not None and have > expected_size:
            self.path.unlink()
            have = 0
        if self.hashed != have:
            self.digest, self.hashed = hashlib.sha256(), 0
            with self.path.open("rb") as handle:
                while self.hashed < have:
                    block = handle.read(min(have - self.hashed, 2**20))
                    if not block:
                        break
                    self.digest.update(block)
                    self.hashed += len(block)
        return have

    @contextmanager
    def writer(self, start: int) -> Iterator[Callable[[bytes], None]]:
        """A function that appends bytes from `start` on (what followed is cut off)."""
        if start == 0:
            self.digest, self.hashed = hashlib.sha256(), 0
        with self.path.open("r+b" if self.path.exists() else "wb") as out:
            out.seek(start)
            out.truncate()

            def write(chunk: bytes) -> None:
                out.write(chunk)
                self.digest.update(chunk)
                self.hashed += len(chunk)

            yield write
