"""One WatchExecution stream per execution, shared by every live stream that follows it.

A thousand browsers on one execution cost the engine one watcher, not a thousand (each
engine watcher holds a subscription and re-reads the log when quiet). The feed keeps the
latest events in a ring, so a client that joins, or resumes, a little behind the feed's head
is served from the ring and then live, each event once and in order. A client that resumes
from further back than the ring holds gets a feed of its own, which replays from the engine.

Handing an event to a subscriber never waits: it goes into that subscriber's bounded queue
(streams.SendQueue), and a subscriber whose queue overflows is cut off alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from services.gateway import legacy
from services.gateway.errors import GatewayError
from services.gateway.follow import Follower

log = logging.getLogger(__name__)


class Subscriber(Protocol):
    def deliver(self, seq: int, message: str, *, backlog: bool = False) -> None:
        """One event, as a legacy JSON message; `backlog` for those replayed from the ring
        when joining (as many as the ring holds, so they do not count against the queue).
        Never waits."""

    def end(self, error: GatewayError | None) -> None:
        """No more events: the execution ended (None), or the feed failed."""


class Feed:
    def __init__(self, follower: Follower, ring_size: int) -> None:
        self.execution_id = follower.execution_id
        self._follower = follower
        self._ring: deque[tuple[int, str]] = deque(maxlen=ring_size)
        # Events after `_base` are in the ring or still to come.
        self._base = follower.last_seq
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._ended = False
        self._error: GatewayError | None = None

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def ended(self) -> bool:
        return self._ended

    def serves(self, after_seq: int) -> bool:
        """Whether every event after `after_seq` is still in the ring or yet to come."""
        first = self._ring[0][0] - 1 if self._ring else self._base
        return not self._ended and after_seq >= first

    def subscribe(self, subscriber: Subscriber, after_seq: int) -> None:
        for seq, message in self._ring:
            if seq > after_seq:
                subscriber.deliver(seq, message, backlog=True)
        if self._ended:
            subscriber.end(self._error)
            return
        self._subscribers.add(subscriber)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"feed {self.execution_id}")

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        error: GatewayError | None = None
        try:
            async with contextlib.aclosing(self._follower.events()) as events:
                async for event in events:
                    message = json.dumps(legacy.event(event))
                    self._ring.append((event.seq, message))
                    for subscriber in list(self._subscribers):
                        subscriber.deliver(event.seq, message)
        except GatewayError as exc:
            error = exc
        except Exception:
            log.exception("feed failed", extra={"execution_id": self.execution_id})
            error = GatewayError("internal error")
        self._ended, self._error = True, error
        for subscriber in list(self._subscribers):
            subscriber.end(error)
        self._subscribers.clear()


class FeedRegistry:
    def __init__(self, make_follower: Callable[[str, str, int], Follower], ring_size: int) -> None:
        """`make_follower(execution_id, tenant, after_seq)`."""
        self._make_follower = make_follower
        self._ring_size = ring_size
        self._shared: dict[str, Feed] = {}
        self._all: set[Feed] = set()

    @property
    def engine_streams(self) -> int:
        return len(self._all)

    def subscribe(
        self, execution_id: str, tenant: str, after_seq: int, subscriber: Subscriber
    ) -> Feed:
        """The feed that now serves `subscriber` every event after `after_seq`. The caller
        has checked that the subscriber, of `tenant`, may see the execution."""
        shared = self._shared.get(execution_id)
        if shared is not None and shared.serves(after_seq):
            feed = shared
        else:
            # Behind the shared feed's ring (a client resuming from far back): a feed of its
            # own, which later clients join only once the shared one is over.
            feed = Feed(self._make_follower(execution_id, tenant, after_seq), self._ring_size)
            if shared is None or shared.ended:
                self._shared[execution_id] = feed
            self._all.add(feed)
        feed.subscribe(subscriber, after_seq)
        return feed

    async def unsubscribe(self, feed: Feed, subscriber: Subscriber) -> None:
        feed.unsubscribe(subscriber)
        if feed.subscribers == 0:
            self._all.discard(feed)
            if self._shared.get(feed.execution_id) is feed:
                del self._shared[feed.execution_id]
            await feed.close()

    async def close(self) -> None:
        feeds = list(self._all)
        self._all.clear()
        self._shared.clear()
        await asyncio.gather(*(feed.close() for feed in feeds), return_exceptions=True)
