"""In-process fan-out of freshly committed events to the watchers of each execution.

Events come from two places: the engine that commits them publishes them at once, and the
log's change feed (services/engine/feed.py) publishes every engine's, its own included a few
milliseconds later. A subscription is offered each seq once, whichever comes first.

Publishing never waits: each watcher has a queue bounded in events and in bytes (a
step_started event carries the step's whole input, so a count alone would let a thousand
big events pile up), and a watcher that lets it fill up is marked as overflowed and told to
resume from its last seq. The log in the database stays the source of truth; the hub only
saves watchers a round trip to it.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime

from services.engine.clock import utc_now
from services.engine.domain.events import Event

MIB = 1024 * 1024


def event_size(event: Event) -> int:
    """About what the event weighs in memory and on the wire: its data as JSON."""
    return 64 + len(json.dumps(event.data, default=str))


class Subscription:
    def __init__(
        self,
        execution_id: str,
        capacity: int,
        max_bytes: int,
        on_delivered: Callable[[Event, datetime], None] | None = None,
    ) -> None:
        self.execution_id = execution_id
        self._on_delivered = on_delivered
        # None in the queue: events may have been missed, read the log (see `resync`).
        self._queue: asyncio.Queue[tuple[Event, int] | None] = asyncio.Queue()
        self._capacity = capacity
        self._max_bytes = max_bytes
        self.bytes = 0
        self.overflowed = False
        # The highest seq offered: the same event comes from its engine and from the feed,
        # and one below it is of no use to the watcher either (it has it, or the gap at
        # that seq sends it to the log).
        self._offered = 0
        self._resync_queued = False

    def offer(self, event: Event, size: int) -> None:
        if self.overflowed or event.seq <= self._offered:
            return
        self._offered = event.seq
        # An empty queue takes one event of any size: one bigger than the bound could
        # otherwise never be watched live.
        if self._queue.qsize() >= self._capacity or (
            self._queue.qsize() and self.bytes + size > self._max_bytes
        ):
            self.overflowed = True
            return
        self._queue.put_nowait((event, size))
        self.bytes += size

    def resync(self) -> None:
        """Events may have been committed that will never be offered (the feed started
        anew): the watcher reads the log again after what is queued now."""
        if not self._resync_queued:
            self._resync_queued = True
            self._queue.put_nowait(None)

    async def get(self) -> Event | None:
        """The next event offered; None when the watcher must read the log again."""
        item = await self._queue.get()
        if item is None:
            self._resync_queued = False
            return None
        event, size = item
        self.bytes -= size
        if self._on_delivered is not None:
            self._on_delivered(event, utc_now())
        return event


class EventHub:
    def __init__(self, capacity: int = 1000, max_bytes: int = 8 * MIB) -> None:
        """`capacity` events and `max_bytes` (see `event_size`) queued per watcher."""
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._subscriptions: defaultdict[str, set[Subscription]] = defaultdict(set)
        # Kept as a number: the metrics thread reads it while the loop changes the sets.
        self._count = 0
        # Told of each event a watcher takes from its queue (metrics: the delivery lag).
        self.on_delivered: Callable[[Event, datetime], None] | None = None

    def subscribe(self, execution_id: str) -> Subscription:
        subscription = Subscription(
            execution_id, self._capacity, self._max_bytes, self.on_delivered
        )
        self._subscriptions[execution_id].add(subscription)
        self._count += 1
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscriptions.get(subscription.execution_id)
        if subscribers is not None and subscription in subscribers:
            subscribers.discard(subscription)
            self._count -= 1
            if not subscribers:
                del self._subscriptions[subscription.execution_id]

    def publish(self, events: Iterable[Event]) -> None:
        for event in events:
            subscriptions = self._subscriptions.get(event.execution_id)
            if not subscriptions:
                continue
            size = event_size(event)  # once, however many watch
            for subscription in subscriptions:
                subscription.offer(event, size)

    def resync(self) -> None:
        """Tells every watcher to read the log again (Subscription.resync)."""
        for subscriptions in self._subscriptions.values():
            for subscription in subscriptions:
                subscription.resync()

    def watching(self, execution_id: str) -> int:
        """How many follow the execution here."""
        return len(self._subscriptions.get(execution_id, ()))

    @property
    def watcher_count(self) -> int:
        return self._count
