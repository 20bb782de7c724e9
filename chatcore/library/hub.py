"""The Hugging Face Hub, used only when the person allowed downloads (`--allow-download`).

Search, a repo's files with their sizes and sha256, a model's shape from HTTP range reads
(the GGUF header, safetensors headers) so the memory planner can say whether it fits before a
byte of weights arrives, and downloads into the standard Hugging Face cache, where
`try_to_load_from_cache` and HF_HUB_OFFLINE find them later.

Downloads resume (chatcore/library/hub_downloads.py).

Every failure is a `HubError` whose message is one sentence for a person, naming the repo
and file and the cause.
"""
from __future__ import annotations

import json
import logging
import re
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from backends.footprint import ModelShape, PlannerError
from backends.gguf import SPLIT_GGUF, parse_gguf_layout
from backends.hf_memory import checkpoint_shape
from backends.model_tags import HUB_TASK_TAGS, TASKS, ModelTags, tags_from_hub
from chatcore.library.hub_downloads import HubDownloads, RemoteFile, split_parts, total_size
from chatcore.library.hub_errors import HubError, explained

log = logging.getLogger(__name__)

HEADER_MAX_BYTES = 16 * 2**20  # a GGUF header (vocabulary included) longer than this is refused
LATER_PART_FIRST_BYTES = 256 * 2**10  # split parts after the first carry no vocabulary
_QUANT = re.compile(r"(?:^|[-_.])((?:UD-)?(?:I?Q[1-8](?:_[A-Z0-9]+)*|TQ[12]_0|MXFP4(?:_MOE)?|BF16"
                    r"|FP16|F16|FP32|F32|FP8))(?=$|[-_.])", re.IGNORECASE)
_CHECKPOINT_WEIGHTS = re.compile(r"^model(-\d{5}-of-\d{5})?\.safetensors$")


@dataclass(frozen=True)
class HubRepo:
    repo_id: str
    kind: str  # "gguf" | "checkpoint"
    downloads: int | None
    likes: int | None
    tags: ModelTags = ModelTags()  # tasks, languages, licence from the repo's Hub tags


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


class Hub(HubDownloads):
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
    def search(self, text: str, kind: str = "gguf", limit: int = 20, task: str = "",
               language: str = "") -> list[HubRepo]:
        """Repos whose name contains `text`, most downloaded first; with `task` and
        `language`, only those the Hub tags so (tags are ANDed, as the Hub's `filter` does).

        The same GET /api/models that `HfApi.list_models` sends, made here because
        list_models takes no timeout (the shared client has none: a stalled Hub hangs it)
        and retries 429/5xx five times with backoff before answering.
        """
        if kind not in ("gguf", "checkpoint"):
            raise ValueError(f"kind must be 'gguf' or 'checkpoint', not {kind!r}")
        if task and task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
        filters = ["gguf"] if kind == "gguf" else ["transformers", "safetensors"]
        filters += [HUB_TASK_TAGS[task]] if task else []
        filters += [language] if language else []
        params = {"search": text, "filter": filters, "sort": "downloads", "direction": -1,
                  "limit": limit}
        with self._explained(f"Searching the Hub for {text!r} failed"):
            response = get_session().get(f"{self.endpoint}/api/models", params=params,
                                         headers=self._headers(), timeout=self.timeout)
            hf_raise_for_status(response)
            infos = [ModelInfo(**{"siblings": None, **item}) for item in response.json()]
        return [HubRepo(info.id, kind, info.downloads, info.likes,
                        tags_from_hub(info.tags or [], info.pipeline_tag,
                                      info.card_data.to_dict() if info.card_data else None))
                for info in infos[:limit]]

    def repo_tags(self, repo_id: str) -> ModelTags:
        """Tasks, languages and licence from the repo's Hub tags and model card data."""
        with self._explained(f"Reading the model card of {repo_id} failed", repo_id):
            info = self._api.model_info(repo_id, timeout=self.timeout, token=self.token)
        return tags_from_hub(info.tags or [], info.pipeline_tag,
                             info.card_data.to_dict() if info.card_data else None)

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

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return build_hf_headers(token=self.token, headers=extra)

    def _siblings(self, repo_id: str) -> list:
        with self._explained(f"Listing the files of {repo_id} failed", repo_id):
            info = self._api.model_info(repo_id, files_metadata=True, timeout=self.timeout,
                                        token=self.token)
        return list(info.siblings or [])

    def _head(self, repo_id: str, filename: str, revision: str) -> RemoteFile:
        with self._explained(f"Downloading {filename} from {repo_id} failed", repo_id, filename):
            meta = get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision,
                                                   endpoint=self.endpoint),
                                        token=self.token, timeout=self.timeout,
                                        endpoint=self.endpoint)
            if not meta.commit_hash or not meta.etag:
                raise ValueError(f"{self.endpoint} does not answer like the Hugging Face Hub "
                                 "(no X-Repo-Commit or ETag)")
        return RemoteFile(filename, meta.commit_hash, meta.etag, meta.size)

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
        return bytes(data[skip:want]), total_size(response), commit

    def _remote_header(self, repo_id: str, filename: str, first_bytes: int, revision: str = "main"
                       ) -> tuple[dict, list[tuple[str, int]], int, str]:
        action = f"Reading the GGUF header of {filename} in {repo_id} failed"
        with self._explained(action, repo_id, filename):
            data, total, commit = self._read_range(repo_id, filename, 0, first_bytes - 1, revision)
            revision = commit or revision  # later reads come from the same commit
            while True:
                try:
                    metadata, tensors = _parse_gguf(data, filename)
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

    @contextmanager
    def _explained(self, action: str, repo_id: str | None = None,
                   filename: str | None = None) -> Iterator[None]:
        """Turn what the network, the Hub and the disk raise into one HubError sentence."""
        with explained(action, self.endpoint, self.timeout, repo_id, filename):
            yield


def _weight_files(siblings: list) -> set[str]:
    """The safetensors transformers loads: model.safetensors or its shards, top level only."""
    return {s.rfilename for s in siblings if _CHECKPOINT_WEIGHTS.match(s.rfilename)}


def _parse_gguf(data: bytes, filename: str) -> tuple[dict, list[tuple[str, int]]]:
    """The bounded GGUF header parser over a file's first bytes; _Truncated when the
    header goes on past them."""
    try:
        metadata, tensors, end = parse_gguf_layout(data, filename)
    except struct.error:  # GGUFHeaderEnds among them: the header goes on
        raise _Truncated from None
    if end > len(data):
        raise _Truncated
    return metadata, [(name, count) for name, count, _, _ in tensors]


