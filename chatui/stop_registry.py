"""Which reply a browser tab's Stop button ends.

A tab (Gradio's session hash, with ":compare" for the Compare tab) runs at most one
generation at a time; starting another cancels the one before, and Stop cancels the
current one. The core knows only the cancel event it is handed.
"""
from __future__ import annotations

import threading


class StopRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}

    def begin(self, key: str) -> threading.Event:
        """A fresh cancel event for the generation `key` starts; the previous one stops."""
        event = threading.Event()
        with self._lock:
            previous = self._events.get(key)
            self._events[key] = event
        if previous is not None:
            previous.set()
        return event

    def follow(self, key: str, event: threading.Event) -> None:
        """Stop in tab `key` ends the reply `event` cancels (one that runs on its own, which
        the tab follows); a reply the tab followed before runs on."""
        with self._lock:
            self._events[key] = event

    def end(self, key: str, event: threading.Event) -> None:
        with self._lock:
            if self._events.get(key) is event:
                del self._events[key]

    def stop(self, key: str) -> bool:
        """Stop the generation `key` started; False when nothing was running."""
        with self._lock:
            event = self._events.get(key)
        if event is None:
            return False
        event.set()
        return True
