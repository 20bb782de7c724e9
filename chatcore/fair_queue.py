"""A first-come, first-served line for one model: one holder at a time, positions visible."""
from __future__ import annotations

import threading
from collections import deque


class Ticket:
    """A place in one line; `position` 0 means it is this ticket's turn."""


class FairQueue:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._line: deque[Ticket] = deque()

    def join(self) -> Ticket:
        ticket = Ticket()
        with self._changed:
            self._line.append(ticket)
        return ticket

    def position(self, ticket: Ticket) -> int:
        with self._changed:
            return self._line.index(ticket)

    def wait_turn(self, ticket: Ticket, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._line[0] is ticket, timeout)

    def leave(self, ticket: Ticket) -> None:
        """Give up the turn, or the place in line; the next in line is woken."""
        with self._changed:
            if ticket in self._line:
                self._line.remove(ticket)
            self._changed.notify_all()

    def __len__(self) -> int:
        with self._changed:
            return len(self._line)
