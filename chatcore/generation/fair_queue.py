"""A first-come, first-served line for one model: up to `holders` served at a time (the
engine's parallel slots), the rest waiting with their positions visible."""
from __future__ import annotations

import threading
from collections import deque


class Ticket:
    """A place in one line; `position` 0 means it is served now."""


class FairQueue:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._line: deque[Ticket] = deque()

    def join(self) -> Ticket:
        ticket = Ticket()
        with self._changed:
            self._line.append(ticket)
        return ticket

    def position(self, ticket: Ticket, holders: int = 1) -> int:
        """How many waiting requests are ahead of this one (0: served now)."""
        with self._changed:
            return max(0, self._line.index(ticket) - holders + 1)

    def wait_turn(self, ticket: Ticket, timeout: float, holders: int = 1) -> bool:
        """Wait until the ticket is among the first `holders`; False after `timeout`."""
        with self._changed:
            return self._changed.wait_for(lambda: self._line.index(ticket) < holders, timeout)

    def leave(self, ticket: Ticket) -> None:
        """Give up the turn, or the place in line; the next in line is woken."""
        with self._changed:
            if ticket in self._line:
                self._line.remove(ticket)
            self._changed.notify_all()

    def __len__(self) -> int:
        with self._changed:
            return len(self._line)
