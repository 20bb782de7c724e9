"""The Hugging Face Hub, used only when the person allowed downloads (`--allow-download`).

Search, a repo's files with their sizes and sha256, a model's shape from HTTP range reads
(the GGUF header, safetensors headers) so the memory planner can say whether it fits before a
byte of weights arrives, and downloads into the standard Hugging Face cache, where
`try_to_load_from_cache` and HF_HUB_OFFLINE find them later.

Downloads resume. huggingface_hub 2.4.0's `hf_hub_download` does not resume across calls: it
writes a process-unique `<etag>.<random>.incomplete` file and deletes it on any failure
(huggingface_hub PR #4228), and a killed process leaves one that no later call reads. So the
bytes travel here, through huggingface_hub's own HTTP session and headers, into
`blobs/<etag>.incomplete` under the cache's own lock, and a later call asks for the rest with
`Range`; the finished, verified blob is then handed to `hf_hub_download`, which finds it and
writes the snapshot link and `refs/main` as it always does.

Every failure is a `HubError` whose message is one sentence for a person, naming the repo
and file and the cause.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    HfHubHTTPError,
    NotASafetensorsRepoError,
    OfflineModeIsEnabled,
    SafetensorsParsingError,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.utils import WeakFileLock, build_hf_headers, get_session, hf_raise_for_status

from backends.footprint import ModelShape, PlannerError
from backends.gguf import SPLIT_GGUF, read_gguf_layout
from backends.hf_memory import checkpoint_shape
from chatcore.memory import format_bytes

log = logging.getLogger(__name__)

HEADER_MAX_BYTES = 16 * 2**20  # a GGUF header (vocabulary included) longer than this is refused
LATER_PART_FIRST_BYTES = 256 * 2**10  # split parts after the first carry no vocabulary
RESUME_TRIES = 5  # reconnections within one call, each only after bytes arrived
_SHA256 = re.compile(r"[0-9a-f]{64}")
_QUANT = re.compile(r"(?:^|[-_.])((?:UD-)?(?:I?Q[1-8](?:_[A-Z0-9]+)*|TQ[12]_0|MXFP4(?:_MOE)?|BF16"
                    r"|FP16|F16|FP32|F32|FP8))(?=$|[-_.])", re.IGNORECASE)
_CHECKPOINT_WEIGHTS = re.compile(r"^model(-\d{5}-of-\d{5})?\.safetensors$")

ProgressFn = Callable[[int, int], None]


class HubError(Exception):
    """One sentence for a person: what failed (repo and file) and why."""

    def __init__(self, message: str, repo_id: str | None = None, filename: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.repo_id = repo_id
        self.filename = filename
        self.status = status


class DownloadCancelled(HubError):
    """The person cancelled; the partial file stays so the next try resumes."""


@dataclass(frozen=True)
class HubRepo:
    repo_id: str
    kind: str  # "gguf" | "checkpoint"
    downloads: int | None
    likes: int | None


@dataclass(frozen=True)
class HubFile:
    """One downloadable model file; a split GGUF is one HubFile over all its parts."""

    filename: str  # the single file, or a split file's first part
    size: int  # bytes; a split file's parts summed
    sha256: str | None  # the LFS sha256 of a single file (None for split files: see part_sha256)
    quantization: str | None  # Q4_K_M, Q8_0, F16, IQ4_XS, ... from the file name
    parts: tuple[str, ...]  # every part's filename, in order (one for a single file)
    part_sha256: tuple[str | None, ...] = ()  # each part's LFS sha256, in the order of parts


@dataclass(frozen=True)
class RepoListing:
    repo_id: str
    gguf_files: tuple[HubFile, ...]  # one per quantization file, smallest first
    checkpoint_bytes: int | None  # the weights' *.safetensors summed, for a transformers checkpoint


@dataclass(frozen=True)
class _Remote:
    """What a HEAD on a file told: where its bytes are pinned and what they must hash to."""

    filename: str
    commit: str
    etag: str
    size: int | None

    @property
    def sha256(self) -> str | None:
        return self.etag if _SHA256.fullmatch(self.etag) else None  # LFS files: the sha256


class _Truncated(Exception):
    """The bytes read so far end inside the GGUF header."""


def quantization_of(filename: str) -> str | None:
    """The quantization named in a GGUF file name ("model.Q4_K_M.gguf" -> "Q4_K_M")."""
    name = filename.rsplit("/", 1)[-1]
    split = SPLIT_GGUF.match(name)
    stem = split["stem"] if split else name.removesuffix(".gguf")
    found = _QUANT.findall(stem)
    if not found:
        return None
    quant = found[-1].upper()
    return {"FP16": "F16", "FP32": "F32"}.get(quant, quant)


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


class Hub:
    """The Hub's HTTP, bounded by `timeout` everywhere and explained in HubError sentences."""

    def __init__(self, endpoint: str | None = None, token: str | bool | None = None,
                 timeout: float = 15.0, cache_dir: Path | None = None) -> None:
        # None: huggingface_hub's defaults, which honour HF_ENDPOINT, HF_TOKEN and HF_HUB_CACHE.
        self.endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
        self.token = token
        self.timeout = timeout
        self.cache_dir = Path(cache_dir) if cache_dir else Path(constants.HF_HUB_CACHE)
        self._api = HfApi(endpoint=self.endpoint, token=token)

    # -- search and listing ----------------------------------------------------------------
    def search(self, text: str, kind: str = "gguf", limit: int = 20) -> list[HubRepo]:
        """Repos whose name contains `text`, most downloaded first.

        The same GET /api/models that `HfApi.list_models` sends, made here because
        list_models takes no timeout (the shared client has none: a stalled Hub hangs it)
        and retries 429/5xx five times with backoff before answering.
        """
        if kind not in ("gguf", "checkpoint"):
            raise ValueError(f"kind must be 'gguf' or 'checkpoint', not {kind!r}")
        filters = ["gguf"] if kind == "gguf" else ["transformers", "safetensors"]
        params = {"search": text, "filter": filters, "sort": "downloads", "direction": -1,
                  "limit": limit}
        with self._explained(f"Searching the Hub for {text!r} failed"):
            response = get_session().get(f"{self.endpoint}/api/models", params=params,
                                         headers=self._headers(), timeout=self.timeout)
            hf_raise_for_status(response)
            infos = [ModelInfo(**{"siblings": None, **item}) for item in response.json()]
        return [HubRepo(info.id, kind, info.downloads, info.likes) for info in infos[:limit]]

    def listing(self, repo_id: str) -> RepoListing:
        """The repo's GGUF files by quantization (split parts grouped) and checkpoint size."""
        siblings = self._siblings(repo_id)
        groups: dict[str, list] = {}
        for sibling in siblings:
            name = sibling.rfilename
            if not name.endswith(".gguf") or "mmproj" in name.rsplit("/", 1)[-1].lower():
                continue  # vision projectors are not models of their own
            split = SPLIT_GGUF.match(name.rsplit("/", 1)[-1])
            key = name[: -len(split.group(0))] + split["stem"] + split["count"] if split else name
            groups.setdefault(key, []).append(sibling)
        files = []
        for members in groups.values():
            members.sort(key=lambda s: s.rfilename)
            shas = tuple(s.lfs.sha256 if s.lfs else None for s in members)
            files.append(HubFile(
                filename=members[0].rfilename, size=sum(s.size or 0 for s in members),
                sha256=shas[0] if len(members) == 1 else None,
                quantization=quantization_of(members[0].rfilename),
                parts=tuple(s.rfilename for s in members), part_sha256=shas))
        files.sort(key=lambda f: (f.size, f.filename))
        weights = _weight_files(siblings)
        names = {s.rfilename for s in siblings}
        checkpoint = (sum(s.size or 0 for s in siblings if s.rfilename in weights)
                      if weights and "config.json" in names else None)
        return RepoListing(repo_id, tuple(files), checkpoint)

    # -- shapes without the weights -----------------------------------------------------------
    def gguf_header(self, repo_id: str, filename: str, first_bytes: int = 2 * 2**20
                    ) -> tuple[dict, list[tuple[str, int]], int]:
        """The metadata, (tensor, element count) pairs and size in bytes, from range reads.

        Reads `first_bytes`, and more (doubling, up to HEADER_MAX_BYTES) only while the header
        goes on. For a split file: the first part's metadata, every part's tensors and the
        parts' sizes summed, since the estimate needs the whole model.
        """
        parts = split_parts(filename) or (filename,)
        metadata, tensors, size, commit = self._remote_header(repo_id, parts[0], first_bytes)
        for part in parts[1:]:
            _, more, part_size, _ = self._remote_header(repo_id, part, LATER_PART_FIRST_BYTES,
                                                        commit)
            tensors += more
            size += part_size
        return metadata, tensors, size

    def checkpoint_shape(self, repo_id: str) -> ModelShape:
        """The shape from config.json and the safetensors headers (range reads, no weights).

        The headers are written as header-only .safetensors files next to config.json, so
        backends.hf_memory.checkpoint_shape reads them exactly as it reads a local checkpoint.
        Per-file `parse_safetensors_file_metadata` rather than `get_safetensors_metadata`:
        the latter's existence check takes no timeout and it downloads the index file.
        """
        weights = sorted(_weight_files(self._siblings(repo_id)))
        action = f"Reading the shape of {repo_id} failed"
        if not weights:
            raise HubError(f"{action}: it has no model*.safetensors weights.", repo_id)
        with self._explained(f"Reading config.json of {repo_id} failed", repo_id, "config.json"):
            config = self._get_bytes(repo_id, "config.json")
            json.loads(config)
        with tempfile.TemporaryDirectory(prefix="hub-shape-") as folder:
            Path(folder, "config.json").write_bytes(config)
            for name in weights:
                action = f"Reading the safetensors header of {name} in {repo_id} failed"
                with self._explained(action, repo_id, name):
                    meta = self._api.parse_safetensors_file_metadata(
                        repo_id, name, timeout=self.timeout, token=self.token)
                header = {tensor: {"dtype": info.dtype, "shape": list(info.shape),
                                   "data_offsets": list(info.data_offsets)}
                          for tensor, info in meta.tensors.items()}
                encoded = json.dumps(header).encode()
                Path(folder, name).write_bytes(struct.pack("<Q", len(encoded)) + encoded)
            try:
                return checkpoint_shape(Path(folder))
            except PlannerError as exc:
                raise HubError(f"{action}: {exc}.", repo_id) from exc

    # -- downloads -----------------------------------------------------------------------------
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

    def _download_one(self, repo_id: str, remote: _Remote, revision: str,
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

    def _fetch_blob(self, repo_id: str, remote: _Remote, blob: Path,
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

    def _transfer(self, url: str, partial: _PartialFile, remote: _Remote, repo_id: str,
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
                    raise HubError(f"{action}: {self._cause(exc)}; {partial.hashed} of {size} "
                                   "bytes are kept and the next try resumes there.",
                                   repo_id, filename) from exc
                log.warning("%s from %s: %s at byte %d; resuming", filename, repo_id, exc,
                            partial.hashed)
            except OSError as exc:
                if exc.errno != errno.ENOSPC or isinstance(exc, HfHubHTTPError):
                    raise
                raise HubError(f"{action}: disk full, {(size or 0) - partial.size()} more bytes "
                               f"are needed in {partial.path.parent}.", repo_id, filename) from exc
            if size is None:
                return partial.digest.hexdigest()

    def _fetch_rest(self, url: str, partial: _PartialFile, have: int, remote: _Remote,
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
    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return build_hf_headers(token=self.token, headers=extra)

    def _siblings(self, repo_id: str) -> list:
        with self._explained(f"Listing the files of {repo_id} failed", repo_id):
            info = self._api.model_info(repo_id, files_metadata=True, timeout=self.timeout,
                                        token=self.token)
        return list(info.siblings or [])

    def _head(self, repo_id: str, filename: str, revision: str) -> _Remote:
        with self._explained(f"Downloading {filename} from {repo_id} failed", repo_id, filename):
            meta = get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision,
                                                   endpoint=self.endpoint),
                                        token=self.token, timeout=self.timeout,
                                        endpoint=self.endpoint)
            if not meta.commit_hash or not meta.etag:
                raise ValueError(f"{self.endpoint} does not answer like the Hugging Face Hub "
                                 "(no X-Repo-Commit or ETag)")
        return _Remote(filename, meta.commit_hash, meta.etag, meta.size)

    def _get_bytes(self, repo_id: str, filename: str) -> bytes:
        url = hf_hub_url(repo_id, filename, endpoint=self.endpoint)
        response = get_session().get(url, headers=self._headers(), timeout=self.timeout)
        hf_raise_for_status(response)
        return response.content

    def _read_range(self, repo_id: str, filename: str, start: int, end: int,
                    revision: str) -> tuple[bytes, int | None, str | None]:
        """Bytes start..end (inclusive), the file's size and the commit they came from."""
        url = hf_hub_url(repo_id, filename, revision=revision, endpoint=self.endpoint)
        headers = self._headers({"Range": f"bytes={start}-{end}", "Accept-Encoding": "identity"})
        with get_session().stream("GET", url, headers=headers, timeout=self.timeout) as response:
            if response.status_code >= 400:
                response.read()
                hf_raise_for_status(response)
            skip = start if response.status_code == 200 else 0  # a server that ignores Range
            want = skip + end - start + 1
            data = bytearray()
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) >= want:
                    break  # leaving the block closes the stream: nothing more is fetched
            commit = response.headers.get(constants.HUGGINGFACE_HEADER_X_REPO_COMMIT)
        return bytes(data[skip:want]), _total_size(response), commit

    def _remote_header(self, repo_id: str, filename: str, first_bytes: int, revision: str = "main"
                       ) -> tuple[dict, list[tuple[str, int]], int, str]:
        action = f"Reading the GGUF header of {filename} in {repo_id} failed"
        with self._explained(action, repo_id, filename):
            data, total, commit = self._read_range(repo_id, filename, 0, first_bytes - 1, revision)
            revision = commit or revision  # later reads come from the same commit
            while True:
                try:
                    metadata, tensors = _parse_gguf(data)
                    break
                except _Truncated:
                    if (total is not None and len(data) >= total) or len(data) >= HEADER_MAX_BYTES:
                        raise HubError(f"{action}: its header does not end within the first "
                                       f"{len(data)} bytes.", repo_id, filename) from None
                    end = min(2 * len(data), HEADER_MAX_BYTES, total or HEADER_MAX_BYTES)
                    more, _, _ = self._read_range(repo_id, filename, len(data), end - 1, revision)
                    if not more:
                        raise HubError(f"{action}: the file ends inside its header.",
                                       repo_id, filename)
                    data += more
                    log.debug("GGUF header of %s is longer than %d bytes", filename, len(data))
        return metadata, tensors, total if total is not None else len(data), revision

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

    @contextmanager
    def _explained(self, action: str, repo_id: str | None = None,
                   filename: str | None = None) -> Iterator[None]:
        """Turn what the network, the Hub and the disk raise into one HubError sentence."""
        try:
            yield
        except HubError:
            raise
        except (httpx2.HTTPError, OSError, ValueError, SafetensorsParsingError,
                NotASafetensorsRepoError) as exc:
            status = exc.response.status_code if isinstance(exc, HfHubHTTPError) else None
            raise HubError(f"{action}: {self._cause(exc)}.", repo_id, filename, status) from exc

    def _cause(self, exc: BaseException) -> str:
        if isinstance(exc, OfflineModeIsEnabled):
            return "offline mode is on (HF_HUB_OFFLINE is set)"
        if isinstance(exc, HfHubHTTPError) and exc.response is not None:
            response = exc.response
            status, code = response.status_code, response.headers.get("X-Error-Code")
            if status in (401, 403):
                return (f"{status}, it needs a token: the repo is gated or private, so set "
                        "HF_TOKEN to a token that may read it (and accept the model's terms on "
                        "the Hub)")
            if status == 404:
                what = {"RepoNotFound": "no such repo", "RevisionNotFound": "no such revision",
                        "EntryNotFound": "no such file in the repo"}.get(code or "", "not found")
                return f"404 not found ({what})"
            if status == 429:
                wait = response.headers.get("Retry-After")
                return "429 rate limited by the Hub, " + (f"try again in {wait} s" if wait
                                                          else "try again in a few minutes")
            if status >= 500:
                return f"{status} server error at the Hub, try again later"
            if status == 416:
                return "416 the Hub refused the byte range asked for"
            return f"HTTP {status} from the Hub"
        if isinstance(exc, httpx2.TimeoutException):
            return f"timed out, {self.endpoint} did not answer within {self.timeout:g} s"
        if isinstance(exc, httpx2.RemoteProtocolError):
            return "the connection dropped in the middle"
        if isinstance(exc, (httpx2.ConnectError, httpx2.ProxyError, httpx2.UnsupportedProtocol)):
            return f"the Hub is unreachable at {self.endpoint} ({exc})"
        if isinstance(exc, httpx2.NetworkError):
            return f"the connection broke ({exc})"
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return "disk full"
        if isinstance(exc, (SafetensorsParsingError, NotASafetensorsRepoError)):
            return "its safetensors header cannot be read"
        if isinstance(exc, ValueError) and "GGUF" in str(exc):
            return f"it is not a readable GGUF file ({exc})"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return first_line.rstrip(".")


def _total_size(response: httpx2.Response) -> int | None:
    """The whole file's size: Content-Range's "/N", or a 200's Content-Length."""
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    if response.status_code == 200 and "Content-Length" in response.headers:
        return int(response.headers["Content-Length"])
    return None


def _weight_files(siblings: list) -> set[str]:
    """The safetensors transformers loads: model.safetensors or its shards, top level only."""
    return {s.rfilename for s in siblings if _CHECKPOINT_WEIGHTS.match(s.rfilename)}


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


def _parse_gguf(data: bytes) -> tuple[dict, list[tuple[str, int]]]:
    """read_gguf_layout over a file's first bytes; _Truncated when the header goes on."""
    with tempfile.TemporaryDirectory(prefix="gguf-head-") as folder:
        path = Path(folder, "head.gguf")
        path.write_bytes(data)
        try:
            metadata, tensors, end = read_gguf_layout(path)
        except struct.error:
            raise _Truncated from None
    if end > len(data):
        raise _Truncated
    return metadata, [(name, count) for name, count, _, _ in tensors]


# -- the download queue ------------------------------------------------------------------------
@dataclass(frozen=True)
class DownloadJob:
    job_id: str
    repo_id: str
    filename: str
    state: str  # "queued" | "downloading" | "done" | "failed" | "cancelled"
    done_bytes: int
    total_bytes: int | None
    bytes_per_s: float | None
    seconds_left: float | None
    error: str | None
    path: Path | None


@dataclass
class _JobRecord:
    job_id: str
    repo_id: str
    filename: str
    state: str = "queued"
    done_bytes: int = 0
    total_bytes: int | None = None
    error: str | None = None
    path: Path | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    samples: deque = field(default_factory=lambda: deque(maxlen=64))  # (monotonic s, bytes)
    latest: tuple[float, int] | None = None

    def rate(self) -> float | None:
        """Bytes per second over the last few seconds of progress."""
        if not self.samples or self.latest is None:
            return None
        (t0, b0), (t1, b1) = self.samples[0], self.latest
        return (b1 - b0) / (t1 - t0) if t1 - t0 >= 0.5 else None

    def snapshot(self) -> DownloadJob:
        rate = self.rate() if self.state == "downloading" else None
        left = ((self.total_bytes - self.done_bytes) / rate
                if rate and self.total_bytes is not None else None)
        return DownloadJob(self.job_id, self.repo_id, self.filename, self.state, self.done_bytes,
                           self.total_bytes, rate, left, self.error, self.path)


class DownloadQueue:
    """Several downloads queue and run one at a time in one worker thread; each has a state
    the UI can poll.

    One at a time because parallel downloads share one link: each would finish later, and a
    half-done file is worth nothing until it is whole.
    """

    RATE_WINDOW_S = 5.0  # speed and time left follow the last few seconds
    RATE_SAMPLE_S = 0.2
    TERMINAL = ("done", "failed", "cancelled")

    def __init__(self, hub: Hub, on_done: Callable[[str, str, Path], None] | None = None) -> None:
        self._hub = hub
        self._on_done = on_done
        self._jobs: dict[str, _JobRecord] = {}
        self._pending: deque[str] = deque()
        self._closed = False
        self._changed = threading.Condition()
        self._worker = threading.Thread(target=self._run, name="hub-downloads", daemon=True)
        self._worker.start()

    def submit(self, repo_id: str, filename: str) -> str:
        """A job id; the same file already queued or downloading gives that job's id."""
        with self._changed:
            if self._closed:
                raise RuntimeError("the download queue is closed")
            for job in self._jobs.values():
                same = (job.repo_id, job.filename) == (repo_id, filename)
                if same and job.state in ("queued", "downloading"):
                    return job.job_id
            job_id = uuid.uuid4().hex[:12]
            self._jobs[job_id] = _JobRecord(job_id, repo_id, filename)
            self._pending.append(job_id)
            self._changed.notify_all()
            return job_id

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job, or stop a running one (its partial file stays for a resume)."""
        with self._changed:
            job = self._jobs.get(job_id)
            if job is None or job.state in self.TERMINAL:
                return False
            job.cancel.set()
            if job.state == "queued":
                self._pending.remove(job_id)
                job.state = "cancelled"
                self._changed.notify_all()
            return True

    def jobs(self) -> list[DownloadJob]:
        with self._changed:
            return [job.snapshot() for job in self._jobs.values()]

    def wait(self, job_id: str, timeout: float | None = None) -> DownloadJob:
        """The job once it is done, failed or cancelled (or as it is when `timeout` passes)."""
        with self._changed:
            self._changed.wait_for(lambda: self._jobs[job_id].state in self.TERMINAL, timeout)
            return self._jobs[job_id].snapshot()

    def close(self, timeout: float | None = None) -> None:
        """Cancel what is queued and running, and wait for the worker to stop."""
        with self._changed:
            self._closed = True
            for job in self._jobs.values():
                if job.state in ("queued", "downloading"):
                    job.cancel.set()
                if job.state == "queued":
                    job.state = "cancelled"
            self._pending.clear()
            self._changed.notify_all()
        self._worker.join(timeout if timeout is not None else self._hub.timeout + 5)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return
                job = self._jobs[self._pending.popleft()]
                job.state = "downloading"
                self._changed.notify_all()
            state, error, path = "failed", None, None
            try:
                path = self._hub.download(
                    job.repo_id, job.filename, cancel=job.cancel,
                    progress=lambda done, total, job=job: self._progress(job, done, total))
                state = "done"
            except DownloadCancelled:
                state = "cancelled"
            except HubError as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one job
                log.exception("download of %s from %s", job.filename, job.repo_id)
                error = f"Downloading {job.filename} from {job.repo_id} failed: {exc}."
            if state == "done" and self._on_done is not None:
                # Before the job reads "done": whoever waits for it finds the model registered.
                try:
                    self._on_done(job.repo_id, job.filename, path)
                except Exception:  # noqa: BLE001 - a callback's failure is not the download's
                    log.exception("on_done for %s from %s", job.filename, job.repo_id)
            with self._changed:
                job.state, job.error, job.path = state, error, path
                self._changed.notify_all()

    def _progress(self, job: _JobRecord, done: int, total: int) -> None:
        now = time.monotonic()
        with self._changed:
            job.done_bytes, job.total_bytes = done, total or None
            job.latest = (now, done)
            if not job.samples or now - job.samples[-1][0] >= self.RATE_SAMPLE_S:
                job.samples.append((now, done))
            while len(job.samples) > 1 and now - job.samples[1][0] >= self.RATE_WINDOW_S:
                job.samples.popleft()


# -- words -----------------------------------------------------------------------------------
def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds} s"


def format_progress(job: DownloadJob) -> str:
    """"412 MB of 4.7 GB · 38 MB/s · 1 min 52 s left", for the terminal and the page."""
    amount = format_bytes(job.done_bytes)
    if job.total_bytes:
        amount += f" of {format_bytes(job.total_bytes)}"
    if job.state == "queued":
        return "queued"
    if job.state == "done":
        return f"done · {format_bytes(job.total_bytes or job.done_bytes)}"
    if job.state == "failed":
        return f"failed: {job.error}"
    if job.state == "cancelled":
        return f"cancelled at {amount}"
    parts = [amount]
    if job.bytes_per_s:
        parts.append(f"{format_bytes(job.bytes_per_s)}/s")
    if job.seconds_left is not None:
        parts.append(f"{_duration(job.seconds_left)} left")
    return " · ".join(parts)
