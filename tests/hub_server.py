"""A local stand-in for the Hugging Face Hub's HTTP API, for tests.

The real Hub is out of reach here (no network), so tests point the real `huggingface_hub`
library at this server on 127.0.0.1 (`HF_ENDPOINT`, or `endpoint=`) and let it speak the same
HTTP it speaks to huggingface.co. Repos are folders, `<root>/<org>/<repo>/<files>`, and these
routes answer the way the Hub answers them (headers included):

    GET  /api/models?search=&filter=&author=&pipeline_tag=&sort=&direction=&limit=
                                                                          model search
    GET  /api/models/{repo}[/revision/{rev}][?blobs=true]                 model info, siblings
    GET  /api/models/{repo}/tree/{rev}[/{path}]?recursive=&expand=        repo tree, LFS sha256
    POST /api/models/{repo}/paths-info/{rev}                              paths info
    HEAD /{repo}/resolve/{rev}/{path}     ETag (LFS sha256 or git oid), X-Repo-Commit,
                                          X-Linked-Size, X-Linked-Etag, Content-Length
    GET  /{repo}/resolve/{rev}/{path}     Range: bytes=a-b | a- | -n  -> 206 + Content-Range

A repo's README.md front matter is its model card, read as the Hub reads it: `language`
codes become bare tags ("tl"), `license` becomes "license:<id>", `tags` are kept, and
`pipeline_tag` is both answered and a tag; `filter` values are ANDed over the tags and
`pipeline_tag=` matches the card's one; `cardData=true` (or `full`) adds the card data to
search results, and a repo's model info always carries it.

`rev` is `main` or the repo's commit hash (derived from its files). Files ending in .gguf,
.safetensors, .bin, .pt or bigger than 10 MiB are "LFS" files, as the Hub's default
.gitattributes makes them.

What tests see and steer (all thread-safe):
- `bytes_sent(repo, file)`: body bytes written to sockets for that file, ranges included;
  `requests`: every request (method, path, repo, file, Range header);
  `max_concurrent_bodies`: the most file bodies being sent at one time.
- `fail(repo, file, status)`: answer 401/404/429/500/... (file None: every route of the repo).
- `stall(repo, file)`: accept the request and never answer; `stall(..., after_bytes=n)`: send
  the headers and n body bytes, then nothing more (the connection stays open).
- `hold(repo, file, after_bytes=n)`: like a mid-body stall, but `release()` lets the body go on:
  a download is caught at an exact byte, whatever the machine's speed.
- `drop(repo, file, after_bytes=n)`: send n body bytes, then close the connection.
- `wrong_sha256(repo, file)`: advertise a sha256 (ETag, tree, siblings) the bytes don't have.
- `throttle(repo, file, chunk_bytes, delay_s)`: sleep after each chunk of the body.
- `clear()` lifts every switch and releases every stalled or held request.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

log = logging.getLogger(__name__)

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".onnx")
LFS_MIN_BYTES = 10 * 2**20
SEND_CHUNK = 64 * 2**10
_REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    repo_id: str | None
    filename: str | None
    range: str | None


@dataclass
class _Rule:
    repo_id: str
    filename: str | None  # None: every request about the repo
    action: str  # "status" | "stall" | "hold" | "drop"
    status: int = 0
    after_bytes: int | None = None
    times: int | None = None  # None: until clear()
    headers: dict[str, str] = field(default_factory=dict)
    released: threading.Event = field(default_factory=threading.Event)
    reached: threading.Event = field(default_factory=threading.Event)

    def matches(self, repo_id: str | None, filename: str | None) -> bool:
        return (repo_id == self.repo_id and (self.filename is None or self.filename == filename)
                and (self.times is None or self.times > 0))


@dataclass(frozen=True)
class _Throttle:
    chunk_bytes: int
    delay_s: float


@dataclass(frozen=True)
class _File:
    path: str  # in the repo, with "/"
    local: Path
    size: int
    lfs: bool


class HubServer:
    """Serves `<root>/<org>/<repo>/<files>` as Hub model repos; see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._throttles: dict[tuple[str, str | None], _Throttle] = {}
        self._wrong_sha: set[tuple[str, str]] = set()
        self._stats: dict[str, tuple[int, int]] = {}
        self._sha_cache: dict[tuple[str, int, int], str] = {}
        self._sent: dict[tuple[str, str], int] = {}
        self._bodies_now = 0
        self.max_concurrent_bodies = 0
        self.requests: list[RequestRecord] = []
        self._changed = threading.Condition(self._lock)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        assert self._httpd is not None, "start() the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> HubServer:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.clear()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- switches --------------------------------------------------------------------------
    def fail(self, repo_id: str, filename: str | None = None, status: int = 500,
             times: int | None = None, retry_after: int | None = None) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self._add(_Rule(repo_id, filename, "status", status=status, times=times, headers=headers))

    def stall(self, repo_id: str, filename: str | None = None, after_bytes: int | None = None,
              times: int | None = None) -> None:
        self._add(_Rule(repo_id, filename, "stall", after_bytes=after_bytes, times=times))

    def hold(self, repo_id: str, filename: str, after_bytes: int, times: int = 1) -> _Rule:
        """Pause the next body of `filename` after `after_bytes` until `release()`; the rule's
        `reached` event is set when the pause begins."""
        rule = _Rule(repo_id, filename, "hold", after_bytes=after_bytes, times=times)
        self._add(rule)
        return rule

    def release(self) -> None:
        with self._lock:
            for rule in self._rules:
                if rule.action == "hold":
                    rule.released.set()

    def drop(self, repo_id: str, filename: str, after_bytes: int, times: int = 1) -> None:
        self._add(_Rule(repo_id, filename, "drop", after_bytes=after_bytes, times=times))

    def wrong_sha256(self, repo_id: str, filename: str) -> None:
        with self._lock:
            self._wrong_sha.add((repo_id, filename))

    def throttle(self, repo_id: str, filename: str | None = None, chunk_bytes: int = SEND_CHUNK,
                 delay_s: float = 0.005) -> None:
        with self._lock:
            self._throttles[(repo_id, filename)] = _Throttle(chunk_bytes, delay_s)

    def set_stats(self, repo_id: str, downloads: int, likes: int) -> None:
        with self._lock:
            self._stats[repo_id] = (downloads, likes)

    def clear(self) -> None:
        with self._lock:
            for rule in self._rules:
                rule.released.set()
            self._rules.clear()
            self._throttles.clear()
            self._wrong_sha.clear()

    def _add(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def _take_rule(self, repo_id: str | None, filename: str | None, body: bool) -> _Rule | None:
        """The first live rule for this request; `body` picks the rules that act mid-body
        (they wait for a GET of the file, so a HEAD before it does not use them up)."""
        with self._lock:
            for rule in self._rules:
                acts_mid_body = rule.action != "status" and rule.after_bytes is not None
                if rule.matches(repo_id, filename) and acts_mid_body == body:
                    if rule.times is not None:
                        rule.times -= 1
                    return rule
        return None

    # -- counters ----------------------------------------------------------------------------
    def bytes_sent(self, repo_id: str, filename: str) -> int:
        with self._lock:
            return self._sent.get((repo_id, filename), 0)

    def wait_for_bytes(self, repo_id: str, filename: str, at_least: int,
                       timeout: float = 60.0) -> int:
        """Block until that many body bytes of the file went out (a safety net, not a timing)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._sent.get((repo_id, filename), 0) < at_least:
                left = deadline - time.monotonic()
                if left <= 0:
                    sent = self._sent.get((repo_id, filename), 0)
                    raise TimeoutError(f"{repo_id}/{filename}: {sent} bytes sent, waited for "
                                       f"{at_least}")
                self._changed.wait(left)
            return self._sent[(repo_id, filename)]

    def reset_counters(self) -> None:
        with self._lock:
            self._sent.clear()
            self.requests.clear()
            self.max_concurrent_bodies = 0

    def resolve_requests(self, repo_id: str, filename: str,
                         method: str = "GET") -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.repo_id == repo_id
                    and r.filename == filename and "/resolve/" in r.path]

    # -- the repos -------------------------------------------------------------------------
    def repo_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(f"{org.name}/{repo.name}" for org in self.root.iterdir() if org.is_dir()
                      for repo in org.iterdir() if repo.is_dir())

    def files(self, repo_id: str) -> list[_File] | None:
        folder = self.root / repo_id
        if "/" not in repo_id or not folder.is_dir():
            return None
        found = []
        for local in sorted(folder.rglob("*")):
            hidden = any(part.startswith(".") for part in local.relative_to(folder).parts)
            if local.is_file() and not hidden:
                size = local.stat().st_size
                found.append(_File(local.relative_to(folder).as_posix(), local, size,
                                   local.suffix in LFS_SUFFIXES or size >= LFS_MIN_BYTES))
        return found

    def commit(self, repo_id: str) -> str:
        digest = hashlib.sha1(repo_id.encode())
        for item in self.files(repo_id) or []:
            stat = item.local.stat()
            digest.update(f"{item.path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()

    def sha256(self, repo_id: str, item: _File) -> str:
        """The LFS sha256 advertised for the file: the real one unless `wrong_sha256` says not."""
        stat = item.local.stat()
        key = (str(item.local), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            known = self._sha_cache.get(key)
            wrong = (repo_id, item.path) in self._wrong_sha
        if known is None:
            digest = hashlib.sha256()
            with item.local.open("rb") as handle:
                while block := handle.read(2**20):
                    digest.update(block)
            known = digest.hexdigest()
            with self._lock:
                self._sha_cache[key] = known
        return hashlib.sha256(known.encode()).hexdigest() if wrong else known

    @staticmethod
    def git_oid(item: _File) -> str:
        data = item.local.read_bytes() if not item.lfs else b""
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() if not item.lfs \
            else hashlib.sha1(item.path.encode()).hexdigest()

    def card(self, repo_id: str) -> dict:
        """The YAML front matter of the repo's README.md (the model card's data), or {}."""
        readme = self.root / repo_id / "README.md"
        if not readme.is_file():
            return {}
        text = readme.read_text(encoding="utf-8")
        if not text.startswith("---\n") or "\n---" not in text[4:]:
            return {}
        data = yaml.safe_load(text[4:text.index("\n---", 4)])
        return data if isinstance(data, dict) else {}

    def tags(self, repo_id: str) -> list[str]:
        names = [item.path for item in self.files(repo_id) or []]
        tags = []
        if any(name.endswith(".gguf") for name in names):
            tags.append("gguf")
        if "config.json" in names and any(name.endswith(".safetensors") for name in names):
            tags += ["transformers", "safetensors"]
        card = self.card(repo_id)
        listed = (lambda v: [str(x) for x in v] if isinstance(v, list) else [str(v)] if v
                  else [])
        tags += listed(card.get("tags")) + listed(card.get("pipeline_tag"))
        tags += listed(card.get("language"))
        tags += [f"license:{lid}" for lid in listed(card.get("license"))]
        return list(dict.fromkeys(tags))

    def model_entry(self, repo_id: str, blobs: bool) -> dict:
        downloads, likes = self._stats.get(repo_id, (0, 0))
        tags = self.tags(repo_id)
        siblings = []
        for item in self.files(repo_id) or []:
            sibling: dict = {"rfilename": item.path}
            if blobs:
                sibling.update(size=item.size, blobId=self.git_oid(item))
                if item.lfs:
                    sibling["lfs"] = {"sha256": self.sha256(repo_id, item), "size": item.size,
                                      "pointerSize": 134}
            siblings.append(sibling)
        return {"_id": hashlib.md5(repo_id.encode()).hexdigest()[:24], "id": repo_id,
                "modelId": repo_id, "author": repo_id.split("/")[0], "sha": self.commit(repo_id),
                "private": False, "gated": False, "disabled": False, "downloads": downloads,
                "likes": likes, "tags": tags,
                "pipeline_tag": self.card(repo_id).get("pipeline_tag"),
                "library_name": "transformers" if "transformers" in tags else None,
                "createdAt": "2025-01-01T00:00:00.000Z", "lastModified": "2025-01-01T00:00:00.000Z",
                "siblings": siblings}

    def tree_entry(self, repo_id: str, item: _File) -> dict:
        entry = {"type": "file", "oid": self.git_oid(item), "size": item.size, "path": item.path}
        if item.lfs:
            entry["lfs"] = {"oid": self.sha256(repo_id, item), "size": item.size,
                            "pointerSize": 134}
        return entry

    # -- hooks used by the handler -----------------------------------------------------------
    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def _count(self, repo_id: str, filename: str, n: int) -> None:
        with self._changed:
            key = (repo_id, filename)
            self._sent[key] = self._sent.get(key, 0) + n
            self._changed.notify_all()

    def _body_started(self) -> None:
        with self._lock:
            self._bodies_now += 1
            self.max_concurrent_bodies = max(self.max_concurrent_bodies, self._bodies_now)

    def _body_ended(self) -> None:
        with self._lock:
            self._bodies_now -= 1

    def _throttle_for(self, repo_id: str, filename: str) -> _Throttle | None:
        with self._lock:
            return self._throttles.get((repo_id, filename)) or self._throttles.get((repo_id, None))


_REPO_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<what>revision|tree|paths-info)"
                       r"/(?P<rev>[^/]+)(?:/(?P<path>.*))?)?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        log.debug("hub-server: " + format, *args)

    # -- routing -----------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        path = unquote(url.path)
        body = b""
        if method == "POST":
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        api = _REPO_API.match(url.path)
        resolve = _RESOLVE.match(url.path)
        repo_id = filename = None
        if api:
            repo_id = unquote(api["repo"])
        elif resolve:
            repo_id, filename = unquote(resolve["repo"]), unquote(resolve["path"])
        self.hub._record(RequestRecord(method, path, repo_id, filename, self.headers.get("Range")))

        rule = self.hub._take_rule(repo_id, filename, body=False) if repo_id else None
        if rule is not None and rule.action == "status":
            return self._error(rule.status, self._status_code(rule.status),
                               f"switch: {rule.status} for {repo_id}", rule.headers)
        if rule is not None and rule.action == "stall" and rule.after_bytes is None:
            rule.reached.set()
            rule.released.wait()
            self.close_connection = True
            return None
        if url.path == "/api/models" and method == "GET":
            return self._search(query)
        if api and method in ("GET", "POST"):
            return self._repo_api(repo_id, api, query, body)
        if resolve and method in ("GET", "HEAD"):
            return self._resolve(method, repo_id, unquote(resolve["rev"]), filename)
        return self._error(404, None, f"no route for {method} {url.path}")

    @staticmethod
    def _status_code(status: int) -> str | None:
        return {401: "GatedRepo", 404: "EntryNotFound"}.get(status)

    # -- answers -----------------------------------------------------------------------------
    def _json(self, payload: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str | None, message: str,
               headers: dict[str, str] | None = None) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status, _REASONS.get(status))
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _search(self, query: dict[str, list[str]]) -> None:
        text = (query.get("search") or [""])[0].lower()
        filters = query.get("filter", [])
        author = (query.get("author") or [None])[0]
        pipeline = (query.get("pipeline_tag") or [None])[0]
        with_card = {"true", "True", "1"} & set(query.get("cardData", []) + query.get("full", []))
        entries = []
        for repo_id in self.hub.repo_ids():
            tags = self.hub.tags(repo_id)
            if text and text not in repo_id.lower():
                continue
            if author and repo_id.split("/")[0] != author:
                continue
            if any(tag not in tags for tag in filters):
                continue
            if pipeline and self.hub.card(repo_id).get("pipeline_tag") != pipeline:
                continue
            entry = self.hub.model_entry(repo_id, blobs=False)
            del entry["siblings"]
            if with_card and self.hub.card(repo_id):
                entry["cardData"] = self.hub.card(repo_id)
            entries.append(entry)
        sort = (query.get("sort") or [None])[0]
        if sort in ("downloads", "likes"):
            entries.sort(key=lambda entry: entry[sort],
                         reverse=(query.get("direction") or ["-1"])[0] == "-1")
        limit = int((query.get("limit") or ["1000"])[0])
        self._json(entries[:limit])

    def _repo_api(self, repo_id: str, match: re.Match, query: dict[str, list[str]],
                  body: bytes) -> None:
        files = self.hub.files(repo_id)
        if files is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        rev = unquote(match["rev"] or "main")
        commit = self.hub.commit(repo_id)
        if rev not in ("main", commit):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        what = match["what"]
        if what in (None, "revision"):
            blobs = (query.get("blobs") or ["false"])[0].lower() == "true"
            info = self.hub.model_entry(repo_id, blobs=blobs)
            if card := self.hub.card(repo_id):  # the Hub's model info carries the card data
                info["cardData"] = card
            return self._json(info)
        if what == "tree":
            prefix = unquote(match["path"] or "").strip("/")
            recursive = (query.get("recursive") or ["false"])[0].lower() == "true"
            entries, folders = [], set()
            for item in files:
                if prefix and not item.path.startswith(prefix + "/"):
                    continue
                rest = item.path[len(prefix) + 1:] if prefix else item.path
                if "/" in rest and not recursive:
                    folders.add(f"{prefix}/{rest.split('/')[0]}" if prefix else rest.split("/")[0])
                    continue
                if recursive:
                    parts = rest.split("/")[:-1]
                    for depth in range(1, len(parts) + 1):
                        folders.add("/".join(([prefix] if prefix else []) + parts[:depth]))
                entries.append(self.hub.tree_entry(repo_id, item))
            entries += [{"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(),
                         "size": 0, "path": p} for p in sorted(folders)]
            return self._json(entries)
        # paths-info: form-encoded or JSON `paths`
        try:
            paths = json.loads(body).get("paths", [])
        except ValueError:
            paths = parse_qs(body.decode()).get("paths", [])
        by_path = {item.path: item for item in files}
        return self._json([self.hub.tree_entry(repo_id, by_path[p]) for p in paths if p in by_path])

    def _resolve(self, method: str, repo_id: str, rev: str, filename: str) -> None:
        files = self.hub.files(repo_id)
        if files is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        commit = self.hub.commit(repo_id)
        if rev not in ("main", commit):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        item = next((f for f in files if f.path == filename), None)
        if item is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist on \"{rev}\"",
                               {"X-Repo-Commit": commit})
        etag = self.hub.sha256(repo_id, item) if item.lfs else self.hub.git_oid(item)
        base = item.path.split("/")[-1]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                   "Content-Disposition": f"inline; filename*=UTF-8''{quote(base)};"
                                          f' filename="{base}";',
                   "Content-Type": "application/octet-stream"}
        if item.lfs:
            headers.update({"X-Linked-Size": str(item.size), "X-Linked-Etag": f'"{etag}"'})
        start, end = 0, item.size - 1
        status = 200
        wanted = self.headers.get("Range")
        if wanted and method == "GET":
            match = _RANGE.match(wanted.strip())
            if not match or not (match[1] or match[2]):
                return self._error(416, None, f"bad range {wanted}",
                                   {"Content-Range": f"bytes */{item.size}"})
            if match[1]:
                start = int(match[1])
                end = min(int(match[2]), item.size - 1) if match[2] else item.size - 1
            else:
                start = max(0, item.size - int(match[2]))
            if start >= item.size or end < start:
                return self._error(416, None, f"range {wanted} outside {item.size} bytes",
                                   {"Content-Range": f"bytes */{item.size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{item.size}"
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if method == "HEAD":
            return None
        rule = self.hub._take_rule(repo_id, filename, body=True)
        self._send_body(repo_id, item, start, end, rule)
        return None

    def _send_body(self, repo_id: str, item: _File, start: int, end: int,
                   rule: _Rule | None) -> None:
        throttle = self.hub._throttle_for(repo_id, item.path)
        chunk = throttle.chunk_bytes if throttle else SEND_CHUNK
        cut = rule.after_bytes if rule is not None else None
        sent = 0
        self.hub._body_started()
        try:
            with item.local.open("rb") as handle:
                handle.seek(start)
                remaining = end - start + 1
                while remaining > 0:
                    size = min(chunk, remaining)
                    if cut is not None and sent < cut:
                        size = min(size, cut - sent)
                    if cut is not None and sent == cut:
                        rule.reached.set()
                        if rule.action == "drop":
                            self._hang_up()
                            return
                        rule.released.wait()
                        if rule.action == "stall" or self._peer_gone():
                            # A client that left while held gets nothing more: bytes written
                            # into a closed socket would count as sent without being received.
                            self._hang_up()
                            return
                        cut = None
                        continue
                    data = handle.read(size)
                    self.wfile.write(data)
                    sent += len(data)
                    remaining -= len(data)
                    self.hub._count(repo_id, item.path, len(data))
                    if throttle:
                        time.sleep(throttle.delay_s)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.hub._body_ended()

    def _peer_gone(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _hang_up(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
