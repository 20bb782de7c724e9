"""Splitting this machine's cores between replies that decode on the CPU at the same time.

Two engines that each start one thread per core on the same cores fight over them: llama.cpp
threads spin while they wait for each other, so both replies slow down more than the split
would cost. Each model decoding now instead gets cores // (models decoding), asked again
between tokens, so when one side-by-side pane finishes the others take its cores back. The
replies one model batches together decode in one pass, so they count as one.
"""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from backends.cores import physical_cores


class CpuShare:
    def __init__(self, cores: int | None = None) -> None:
        self.cores = max(1, cores or physical_cores())
        self._lock = threading.Lock()
        self._replies: Counter[str] = Counter()  # replies decoding now, per model

    @property
    def running(self) -> int:
        """Models decoding now."""
        with self._lock:
            return len(self._replies)

    def threads(self) -> int:
        """Threads one model should use now."""
        with self._lock:
            return max(1, self.cores // max(1, len(self._replies)))

    @contextmanager
    def share(self, model: str) -> Iterator[Callable[[], int]]:
        """Count a reply of `model` as decoding for the block; yields the function its engine
        asks for threads."""
        with self._lock:
            self._replies[model] += 1
        try:
            yield self.threads
        finally:
            with self._lock:
                self._replies[model] -= 1
                if not self._replies[model]:
                    del self._replies[model]
