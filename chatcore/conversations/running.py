"""Replies running for conversations, apart from whoever watches them.

A reply started from the page runs on its own thread to its end, whatever happens to the
tab that asked for it (a reload, a closed tab, a dropped network), and is kept once through
`ConversationService.reply`. A page showing the conversation, the one that started it or
another of the same user's, reads its events from the first (`RunningReply.events_after`:
a reader that joins late gets the text so far, then the rest) and can stop it; another
user can neither find nor stop it. The work is bounded: one running reply per conversation,
and at most `per_user` per user running detached (no page follows them: without `--auth`
every page is the same user, and the pages in use are bounded already by the server's queue).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from chatcore.conversations.service import ConversationService, PlannedReply
from chatcore.generation.replies import LiveReply, StreamEvent

log = logging.getLogger(__name__)

PER_USER = 4  # replies one user may have running with no page following them
SHUTDOWN_WAIT_S = 30.0


class Refused(Exception):
    """A reply was not started; `conversation` is set when that conversation already has
    one running, else the user has `limit` running."""

    def __init__(self, message: str, conversation: int | None = None, limit: int = 0) -> None:
        super().__init__(message)
        self.conversation = conversation
        self.limit = limit


@dataclass(eq=False)
class RunningReply:
    """One conversation's reply, computed on its own thread; `live` once it has started."""

    plan: PlannedReply
    cancel: threading.Event = field(default_factory=threading.Event)
    live: LiveReply | None = None
    failure: Exception | None = None  # what ended it when it could not run
    finished: bool = False  # it ended and what it keeps is stored
    # Held while the reply is kept, so a page that reads the stored messages sees them
    # either before the reply is kept (and follows it) or after (and shows it stored).
    guard: threading.Lock = field(default_factory=threading.Lock)
    followers: int = 0  # pages following it now; with none it runs detached
    _events: list = field(default_factory=list)  # every event, for readers that join late
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def user(self) -> str:
        return self.plan.request.user

    @property
    def conversation_id(self) -> int:
        return self.plan.conversation_id

    def reader(self) -> LiveReply:
        """A fresh record for one reader to apply the events to, from the first."""
        return LiveReply(self.plan.request.model_id, self.plan.request.params)

    def events_after(self, position: int, timeout: float) -> list[StreamEvent | Exception]:
        """The events after the first `position`, waiting up to `timeout` seconds for one
        (none when the reply has ended, or the time passed)."""
        with self._changed:
            if len(self._events) == position and not self.finished:
                self._changed.wait(timeout)
            return self._events[position:]

    def caught_up(self, position: int) -> bool:
        with self._changed:
            return position >= len(self._events)

    def add(self, event: StreamEvent | Exception | None) -> None:
        """The thread's news: an event, or (None) that the reply ended."""
        with self._changed:
            if event is not None:
                self._events.append(event)
            self._changed.notify_all()

    def follow(self, joining: bool = True) -> None:
        """A page follows the reply (`joining`: one more; else the page that started it,
        counted from the start); call `unfollow` when it stops following."""
        with self._changed:
            self.followers += joining

    def unfollow(self) -> None:
        with self._changed:
            self.followers -= 1

    def stop(self) -> None:
        self.cancel.set()


class RunningReplies:
    """Every running page reply, by user and conversation; one per app (all its pages)."""

    def __init__(self, service: ConversationService, per_user: int = PER_USER) -> None:
        self._service = service
        self._per_user = per_user
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, int], RunningReply] = {}
        self._threads: list[threading.Thread] = []
        self._closed = False

    def admit(self, user: str, conversation_id: int | None) -> None:
        """Refused when a reply may not start now (before anything is stored for it)."""
        with self._lock:
            self._admit(user, conversation_id)

    def start(self, plan: PlannedReply, followed: bool = False) -> RunningReply:
        """Run the planned reply on its own thread; Refused over the bounds. `followed`:
        the caller follows it from the start (and calls `unfollow` when it stops)."""
        run = RunningReply(plan, followers=int(followed))
        thread = threading.Thread(target=self._run, args=(run,), daemon=True,
                                  name=f"reply-{plan.conversation_id}")
        with self._lock:
            self._admit(run.user, run.conversation_id)
            self._runs[(run.user, run.conversation_id)] = run
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return run

    def find(self, user: str, conversation_id: int | None) -> RunningReply | None:
        """The user's reply running in that conversation, if any."""
        if conversation_id is None:
            return None
        with self._lock:
            return self._runs.get((user, conversation_id))

    def stop(self, user: str, conversation_id: int | None) -> bool:
        """Stop the reply running in the user's conversation; False when there is none."""
        run = self.find(user, conversation_id)
        if run is None:
            return False
        run.stop()
        return True

    def close(self, wait_s: float = SHUTDOWN_WAIT_S) -> None:
        """The server stops: stop every reply, and wait for each to end (a model still
        loading may not end at once: at most `wait_s` seconds in all)."""
        with self._lock:
            self._closed = True
            runs, threads = list(self._runs.values()), list(self._threads)
        for run in runs:
            run.stop()
        deadline = time.monotonic() + wait_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- inside --------------------------------------------------------------------------
    def _admit(self, user: str, conversation_id: int | None) -> None:
        if self._closed:
            raise Refused("the server is stopping")
        if conversation_id is not None and (user, conversation_id) in self._runs:
            raise Refused(f"conversation {conversation_id} already has a reply running",
                          conversation=conversation_id)
        detached = sum(1 for (owner, _), run in self._runs.items()
                       if owner == user and run.followers == 0)
        if detached >= self._per_user:
            raise Refused(f"{self._per_user} replies are running already with no page "
                          "following them",
                          limit=self._per_user)

    def _run(self, run: RunningReply) -> None:
        keeping = False
        try:
            with self._service.reply(run.plan, run.cancel) as replies:
                run.live = replies.live[0]
                for _, event in replies:
                    run.add(event)
                run.guard.acquire()  # leaving the block keeps the reply
                keeping = True
        except Exception as exc:  # noqa: BLE001 - the page that follows says what it was
            log.info("reply in conversation %s failed: %s", run.conversation_id, exc)
            run.failure = exc
        finally:
            if not keeping:
                run.guard.acquire()
            run.finished = True
            run.guard.release()
            with self._lock:
                if self._runs.get((run.user, run.conversation_id)) is run:
                    del self._runs[(run.user, run.conversation_id)]
            run.add(None)
