"""Weights that several loaded entries use at once: a base model and the same base with an
adapter hold one copy, loaded by the first entry and freed when the last one unloads.

The app makes one pool (chat_app.py passes it to every backend the factory builds); a
backend without a pool loads its own copy, as before.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Held:
    """One loaded set of weights; `lock` is held by whoever changes which adapters apply
    and runs with them (transformers: one generation at a time per shared model)."""

    value: Any
    close: Callable[[Any], None]
    users: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    extra: dict = field(default_factory=dict)  # the engine's own bookkeeping


class SharedWeights:
    """Loaded weights by key (file, device and load settings), counted by their users."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[Hashable, Held] = {}
        self._loading: dict[Hashable, threading.Lock] = {}

    def acquire(self, key: Hashable, load: Callable[[], Any],
                close: Callable[[Any], None]) -> Held:
        """The weights for `key`, loading them when no one holds them; pair with release."""
        with self._lock:
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # one load per key; others wait and share it
            with self._lock:
                held = self._held.get(key)
                if held is not None:
                    held.users += 1
                    return held
            held = Held(load(), close, users=1)
            with self._lock:
                self._held[key] = held
            return held

    def release(self, key: Hashable) -> None:
        """One user fewer; the last one frees the weights."""
        with self._lock:
            held = self._held.get(key)
            if held is None:
                return
            held.users -= 1
            if held.users > 0:
                return
            del self._held[key]
        log.info("freeing shared weights %s", key)
        held.close(held.value)

    def users(self, key: Hashable) -> int:
        with self._lock:
            held = self._held.get(key)
            return held.users if held else 0
