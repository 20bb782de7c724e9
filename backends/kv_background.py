"""`kv_cache: auto` at load time: never wait for the measurement.

The measurement (`backends/kv_probe.py`) reads 2 x 1,000 prompt tokens: 25 to 120 s on a
2-core CPU, too long for a newcomer's first load, and q8_0's gain over f16 is small and not
reliable. So a load takes the settled or remembered answer when there is one, else f16 for
now, and starts the measurement in a daemon thread whose child runs at nice 19 (the user's
replies keep the cores); the answer applies from the next load. A lock file beside the
answers (created with O_EXCL, stale after the child's limit) keeps it to one measurement
at a time per machine, across threads and processes; a remembered answer ends them.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from backends.kv_probe import (
    CANDIDATES,
    NO_MODEL,
    TIMEOUT_S,
    KvChoice,
    default_cache_file,
    measure_and_remember,
    measure_command,
    remembered,
    settled,
)
from backends.notes import Note

log = logging.getLogger(__name__)

STALE_MARGIN_S = 60.0  # past the child's limit a lock is a crashed measurer's, not a live one


@dataclass(frozen=True)
class KvProbe:
    """Where and how a backend measures: the defaults in the app, stand-ins in tests."""

    cache_file: Path | None = None  # None: kv-probe.json in the user cache directory
    command: Sequence[str] | None = None  # None: backends.kv_measure on SmolLM2
    timeout_s: float = TIMEOUT_S
    setting: str | None = None  # None: $LOCAL_CHAT_KV_CACHE

    @property
    def answers(self) -> Path:
        return default_cache_file() if self.cache_file is None else Path(self.cache_file)


def pending(kv_cache: str = "f16") -> KvChoice:
    """What a load gets while the measurement runs."""
    exact, smaller = CANDIDATES
    return KvChoice(kv_cache, Note(f"measuring {exact} against {smaller} in the background; "
                                   "the answer applies from the next load",
                                   "models.kv.measuring", exact=exact, smaller=smaller),
                    pending=True)


def kv_for_load(probe: KvProbe, flash_attention: str, on_cpu: bool,
                probe_model: Path | None = None, extra_buffers: bool = True
                ) -> tuple[KvChoice, threading.Thread | None]:
    """The type this load uses, without waiting, and the measurement's thread when this
    call started one (tests join it). Raises KvSettingError for a bad variable."""
    if (choice := settled(flash_attention, on_cpu, probe.setting)) is not None:
        return choice, None
    if (choice := remembered(probe.answers)) is not None:
        return choice, None
    command = list(probe.command) if probe.command is not None else \
        measure_command(probe_model, extra_buffers)
    if command is None:
        return NO_MODEL, None
    lock = MeasurementLock.take(lock_path(probe.answers), probe.timeout_s + STALE_MARGIN_S)
    if lock is None:
        log.info("KV cache f16 for now: another load is measuring")
        return pending(), None
    thread = threading.Thread(target=_measure, args=(command, probe, lock), daemon=True,
                              name="kv-probe")
    thread.start()
    return pending(), thread


def _measure(command: list[str], probe: KvProbe, lock: MeasurementLock) -> None:
    """The thread: measure unless a measurer that held the lock before has answered."""
    try:
        if remembered(probe.answers) is None:
            choice = measure_and_remember(command, probe.answers, probe.timeout_s,
                                          low_priority=True)
            log.info("KV cache measured in the background: %s (from the next load)",
                     choice.describe())
    except Exception:  # a daemon thread's failure must not pass unseen; the load has f16
        log.exception("the KV cache measurement failed")
    finally:
        lock.release()


def lock_path(answers: Path) -> Path:
    return answers.with_name(answers.name + ".lock")


@dataclass(frozen=True)
class MeasurementLock:
    """An exclusive lock file: holding it means measuring (its first line: the pid)."""

    path: Path

    @classmethod
    def take(cls, path: Path, stale_after_s: float) -> MeasurementLock | None:
        """The lock, or None while another measurer holds it. A lock older than
        `stale_after_s` is a crashed measurer's (the child is killed at its limit) and is
        taken over."""
        for _ in range(2):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not _older_than(path, stale_after_s):
                    return None
                log.warning("taking over a stale KV probe lock %s", path)
                with suppress(FileNotFoundError):
                    path.unlink()
                continue
            except OSError as error:  # a read-only cache: measure nothing, f16 stays
                log.warning("cannot lock %s to measure the KV cache: %s", path, error)
                return None
            with os.fdopen(fd, "w") as file:
                file.write(f"{os.getpid()}\n")
            return cls(path)
        return None

    def release(self) -> None:
        with suppress(FileNotFoundError):
            self.path.unlink()


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:  # released meanwhile: try to take it
        return True
