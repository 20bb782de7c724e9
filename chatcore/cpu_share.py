"""Splitting this machine's cores between replies that decode on the CPU at the same time.

Two engines that each start one thread per core on the same cores fight over them: llama.cpp
threads spin while they wait for each other, so both replies slow down more than the split
would cost. Each running reply instead gets cores // (replies running), asked again between
tokens, so when one side-by-side pane finishes the others take its cores back.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from backends.cores import physical_cores


class CpuShare:
    def __init__(self, cores: int | None = None) -> None:
        self.cores = max(1, cores or physical_cores())
        self._lock = threading.Lock()
        self._running = 0

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    def threads(self) -> int:
        """Threads one reply should use now."""
        with self._lock:
            return max(1, self.cores // max(1, self._running))

    @contextmanager
    def share(self) -> Iterator[Callable[[], int]]:
        """Count a reply as running for the block; yields the function it asks for threads."""
        with self._lock:
            self._running += 1
        try:
            yield self.threads
        finally:
            with self._lock:
                self._running -= 1
