"""One WatchExecution stream per execution, shared by every live stream that follows it.

A thousand browsers on one execution cost the engine one watcher, not a thousand (each
engine watcher holds a subscription and re-reads the log when quiet). The feed keeps the
latest events in a ring, so a client that joins, or resumes, a little behind the feed's head
is served from the ring and then live, each event once and in order. A client that resumes
from further back than the ring holds gets a feed of its own, which replays from the engine.

Each event is encoded once (streams.Outgoing), and the ring and every subscriber hold that
one object. The ring is bounded in messages and in bytes. Handing an event to a subscriber
never waits: it goes into that subscriber's bounded queue (streams.SendQueue), a backlog from
the ring as well as live events, and a subscriber whose queue overflows is cut off alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable
from typing import Protocol

from discovery.engine.v1 import execution_pb2 as ex_pb

from discovery_client import AsyncClient, EngineError, Item, Resumed
from services.auth import WATCH_TOKEN_SECONDS, WATCHER, ServiceToken, TokenAuthority
from services.gateway import legacy
from services.gateway.config import Settings
from services.gateway.errors import EngineRefused, GatewayError
from services.gateway.streams import Outgoing

# `watch(execution_id, tenant, after_seq)`: the execution's events after `after_seq`, to the
# terminal one, each once (discovery_client's `watch`, resumed by itself).
Watch = Callable[[str, str, int], AsyncGenerator[Item, None]]


def engine_watch(client: AsyncClient, authority: TokenAuthority, settings: Settings) -> Watch:
    """A feed outlives the caller that opened it and serves everyone of its tenant who may
    see the execution (each checked on joining): it watches with a token of its own."""

    def watch(execution_id: str, tenant: str, after_seq: int) -> AsyncGenerator[Item, None]:
        watcher = ServiceToken(
            authority,
            subject="gateway-feed",
            role=WATCHER,
            tenant=tenant,
            execution_id=execution_id,
            ttl_seconds=WATCH_TOKEN_SECONDS,
        )

        def resumed(resumed: Resumed) -> None:
            # A gap is never expected (the engine's log has none): worth a warning.
            level = logging.WARNING if resumed.reason == "GAP" else logging.INFO
            log.log(
                level,
                "watch resumed",
                extra={
                    "execution_id": execution_id,
                    "after_seq": resumed.after_seq,
                    "reason": resumed.reason,
                },
            )

        return client.with_credentials(watcher).watch(
            execution_id,
            after_seq,
            on_resume=resumed,
            segment_seconds=settings.watch_segment_seconds,
            retry_budget_seconds=settings.watch_retry_seconds,
        )

    return watch


log = logging.getLogger(__name__)


class Subscriber(Protocol):
    def deliver(self, message: Outgoing) -> None:
        """One event, as a legacy JSON message (shared with the other subscribers: never
        changed). Never waits."""

    def end(self, error: GatewayError | None) -> None:
        """No more events: the execution ended (None), or the feed failed."""


class Feed:
    def __init__(
        self,
        execution_id: str,
        after_seq: int,
        events: AsyncGenerator[Item, None],
        ring_messages: int,
        ring_bytes: int,
    ) -> None:
        self.execution_id = execution_id
        self._events = events
        self._ring: deque[Outgoing] = deque()
        self._ring_bytes = 0
        self._max_ring_messages = ring_messages
        self._max_ring_bytes = ring_bytes
        # Events after `_base` are in the ring or still to come (`_remember` moves it).
        self._base = after_seq
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
        return not self._ended and after_seq >= self._base

    def subscribe(self, subscriber: Subscriber, after_seq: int) -> None:
        for message in self._ring:
            if message.seq is not None and message.seq > after_seq:
                subscriber.deliver(message)
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
            async with contextlib.aclosing(self._events) as events:
                async for event in events:
                    if not isinstance(event, ex_pb.ExecutionEvent):
                        continue  # a snapshot: sent only when no after_seq is given
                    message = Outgoing.of(event.seq, legacy.event(event))
                    self._remember(message)
                    for subscriber in list(self._subscribers):
                        subscriber.deliver(message)
        except EngineError as exc:
            error = EngineRefused.of(exc)
        except GatewayError as exc:
            error = exc
        except Exception:
            log.exception("feed failed", extra={"execution_id": self.execution_id})
            error = GatewayError("internal error")
        self._ended, self._error = True, error
        for subscriber in list(self._subscribers):
            subscriber.end(error)
        self._subscribers.clear()

    def _remember(self, message: Outgoing) -> None:
        """Keeps the latest events within the ring's bounds (the newest one always, however
        big); `_base` moves past those let go."""
        self._ring.append(message)
        self._ring_bytes += message.size
        while len(self._ring) > self._max_ring_messages or (
            len(self._ring) > 1 and self._ring_bytes > self._max_ring_bytes
        ):
            dropped = self._ring.popleft()
            self._ring_bytes -= dropped.size
            self._base = dropped.seq or self._base


class FeedRegistry:
    def __init__(self, watch: Watch, ring_messages: int, ring_bytes: int) -> None:
        """Each feed keeps at most `ring_messages` and `ring_bytes` of its latest events."""
        self._watch = watch
        self._ring_messages = ring_messages
        self._ring_bytes = ring_bytes
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
            feed = Feed(
                execution_id,
                after_seq,
                self._watch(execution_id, tenant, after_seq),
                self._ring_messages,
                self._ring_bytes,
            )
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
