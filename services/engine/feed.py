"""The engine's one follower of the event log: every event any engine replica commits, as
the database's change stream gives it, handed to the listeners in this process.

One stream per process, however many watch: a stream per watcher costs the database more
than the writes do (see TOOLCHAIN.md). The EventHub is one listener, so that a watcher of
any execution gets its events live whichever engine writes them; other parts of the engine
add their own (`add_listener`).

After a hiccup the stream resumes from its last resume token, and nothing is missed. When it
cannot (the database's history no longer reaches back that far), it follows from now on and
tells every listener that it lost track (`FeedListener.lost_track`): the hub sends each
watcher back to the log from its last seq.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from services.engine.domain.errors import StoreUnavailable
from services.engine.hub import EventHub
from services.engine.store.repository import (
    CommittedEvent,
    CommittedEvents,
    EventLogFeed,
    HistoryLost,
    ResumeToken,
)

log = logging.getLogger(__name__)

# Between attempts to follow the log again while the database cannot be reached.
FIRST_RETRY_SECONDS = 0.2
MAX_RETRY_SECONDS = 5.0


class FeedListener(Protocol):
    def committed(self, committed: CommittedEvent) -> None:
        """An event committed by any engine, this one's included, in commit order; called
        on the event loop, so it must not block."""
        ...

    def lost_track(self) -> None:
        """Events committed a while ago may never be given: whatever the listener keeps
        of the log must be read again from the store."""
        ...


class _ToHub:
    def __init__(self, hub: EventHub) -> None:
        self._hub = hub

    def committed(self, committed: CommittedEvent) -> None:
        self._hub.publish((committed.event,))

    def lost_track(self) -> None:
        self._hub.resync()


class EventFeed:
    def __init__(self, store: EventLogFeed, hub: EventHub) -> None:
        self._store = store
        self._listeners: list[FeedListener] = [_ToHub(hub)]
        self._token: ResumeToken | None = None
        self._stream: CommittedEvents | None = None
        self._task: asyncio.Task[None] | None = None
        # Times it had to follow from now on, having lost track (for tests and metrics).
        self.times_lost_track = 0

    def add_listener(self, listener: FeedListener) -> Callable[[], None]:
        """Gives `listener` every event committed from now on; returns what removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @property
    def running(self) -> bool:
        return self._task is not None

    async def start(self, *, catching_up: bool = False) -> None:
        """Returns once the stream follows the log: an event committed later reaches the
        listeners. `catching_up`: the listeners were already in use without the feed, and
        are told that they lost track. Raises StoreUnavailable when the database cannot be
        reached."""
        self._stream = await self._store.follow_events(None)
        self._token = self._stream.resume_token
        self._task = asyncio.create_task(self._follow(), name="event-feed")
        if catching_up:
            log.info("event feed started: every watcher reads the log again from its last seq")
            self._lost_track()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._stream is not None:
            await self._stream.close()

    async def _follow(self) -> None:
        retry = FIRST_RETRY_SECONDS
        while True:
            try:
                if self._stream is None:
                    self._stream = await self._reopen()
                committed = await self._stream.next()
                self._token = self._stream.resume_token or self._token
                retry = FIRST_RETRY_SECONDS
                if committed is not None:
                    self._deliver(committed)
                continue
            except StoreUnavailable as exc:
                log.warning("event feed interrupted, resuming in %.1f s: %s", retry, exc)
            except HistoryLost as exc:
                log.warning("event feed cannot resume where it was: %s", exc)
                self._token = None
            except Exception:  # the one follower of the log must outlive any one failure
                log.exception("event feed failed; resuming")
            if self._stream is not None:
                await self._stream.close()
                self._stream = None
            await asyncio.sleep(retry)
            retry = min(retry * 2, MAX_RETRY_SECONDS)

    async def _reopen(self) -> CommittedEvents:
        if self._token is not None:
            return await self._store.follow_events(self._token)
        stream = await self._store.follow_events(None)
        self._token = stream.resume_token
        self.times_lost_track += 1
        log.warning(
            "event feed follows the log from now on: events committed while it was away are "
            "read from the log again by every watcher"
        )
        # Only now that the new stream follows the log: a watcher reading the log from here
        # on misses nothing between what it reads and what the stream gives.
        self._lost_track()
        return stream

    def _lost_track(self) -> None:
        for listener in list(self._listeners):
            try:
                listener.lost_track()
            except Exception:  # as in _deliver
                log.exception("event feed listener failed")

    def _deliver(self, committed: CommittedEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener.committed(committed)
            except Exception:  # one listener's fault must not keep events from the others
                log.exception(
                    "event feed listener failed",
                    extra={"execution_id": committed.event.execution_id},
                )
