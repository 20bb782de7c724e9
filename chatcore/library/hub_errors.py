"""What went wrong talking to the Hub, as one sentence for a person: the repo, the file and
the cause (a token needed, rate limited, disk full, the connection dropped...)."""
from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2
from huggingface_hub.errors import (
    HfHubHTTPError,
    NotASafetensorsRepoError,
    OfflineModeIsEnabled,
    SafetensorsParsingError,
)


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


@contextmanager
def explained(action: str, endpoint: str, timeout: float, repo_id: str | None = None,
              filename: str | None = None) -> Iterator[None]:
    """Turn what the network, the Hub and the disk raise into one HubError sentence."""
    try:
        yield
    except HubError:
        raise
    except (httpx2.HTTPError, OSError, ValueError, SafetensorsParsingError,
            NotASafetensorsRepoError) as exc:
        status = exc.response.status_code if isinstance(exc, HfHubHTTPError) else None
        raise HubError(f"{action}: {cause(exc, endpoint, timeout)}.", repo_id, filename,
                       status) from exc


def cause(exc: BaseException, endpoint: str, timeout: float) -> str:
    """The cause, in words, of what a Hub call raised."""
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
        return f"timed out, {endpoint} did not answer within {timeout:g} s"
    if isinstance(exc, httpx2.RemoteProtocolError):
        return "the connection dropped in the middle"
    if isinstance(exc, (httpx2.ConnectError, httpx2.ProxyError, httpx2.UnsupportedProtocol)):
        return f"the Hub is unreachable at {endpoint} ({exc})"
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
