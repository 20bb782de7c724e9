"""Downloads the Models tab queues: one at a time in one worker thread, each with a state
(queued, downloading, done, failed, cancelled), its speed and time left, that the page polls."""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chatcore.library.hub import Hub
from chatcore.library.hub_errors import DownloadCancelled, HubError

log = logging.getLogger(__name__)


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
