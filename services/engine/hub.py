"""In-process fan-out of freshly committed events to the watchers of each execution.

Publishing never waits: each watcher has a bounded queue, and a watcher that lets it fill up
is marked as overflowed and told to resume from its last seq. The log in the database stays
the source of truth; the hub only saves watchers a round trip to it.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable

from services.engine.domain.execution import Event


class Subscription:
    def __init__(self, execution_id: str, capacity: int) -> None:
        self.execution_id = execution_id
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=capacity)
        self.overflowed = False

    def offer(self, event: Event) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True


class EventHub:
    def __init__(self, capacity: int = 1000) -> None:
        self._capacity = capacity
        self._subscriptions: defaultdict[str, set[Subscription]] = defaultdict(set)

    def subscribe(self, execution_id: str) -> Subscription:
        subscription = Subscription(execution_id, self._capacity)
        self._subscriptions[execution_id].add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscriptions.get(subscription.execution_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscriptions[subscription.execution_id]

    def publish(self, events: Iterable[Event]) -> None:
        for event in events:
            for subscription in self._subscriptions.get(event.execution_id, ()):
                subscription.offer(event)

    def watching(self, execution_id: str) -> int:
        """How many follow the execution here."""
        return len(self._subscriptions.get(execution_id, ()))

    @property
    def watcher_count(self) -> int:
        return sum(len(s) for s in self._subscriptions.values())
