"""Stop strings over a stream: never show a person half of a stop marker."""
from __future__ import annotations

from collections.abc import Iterable


class StopStringFilter:
    """Feeds streamed text through, holding back any tail that may begin a stop string."""

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Return the text that is safe to show now; sets `stopped` on a full match."""
        if self.stopped:
            return ""
        self._pending += text
        hits = [i for i in (self._pending.find(s) for s in self._stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self._pending = self._pending[: min(hits)], ""
            return out
        hold = self._longest_partial_match()
        cut = len(self._pending) - hold
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def flush(self) -> str:
        """The held-back tail, once the stream has ended without a stop string."""
        out, self._pending = self._pending, ""
        return out

    def _longest_partial_match(self) -> int:
        best = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(stop[:k]):
                    best = k
                    break
        return best
