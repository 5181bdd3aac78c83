"""The live streams (WebSocket and SSE) one gateway holds: caps, counts, and a bounded queue
per stream.

Admission happens before the handshake, so a client over the cap gets 429 and no socket.
On shutdown every stream is told to go away, so clients reconnect (with their last seq) to a
gateway that is up.

Each stream has its own send queue between the engine and the client. Putting never waits:
a queue over its bound in messages or bytes (the snapshot and a replayed backlog count like
any event) means the client reads slower than the execution writes, and that client alone
is disconnected (WebSocket close 1013 "try again later"; SSE
connection dropped) while the others go on. It resumes from its last seq and loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from discovery.engine.v1 import execution_pb2 as ex_pb

from services.auth import Principal
from services.gateway import legacy
from services.gateway.config import Settings
from services.gateway.errors import GatewayError, ShuttingDown, TooManyStreams, Unauthorized
from services.ratelimit import RateLimiter

if TYPE_CHECKING:  # feeds.py imports this module
    from services.gateway.feeds import FeedRegistry

log = logging.getLogger(__name__)


class LiveStream(Protocol):
    # Who opened it: the stream ends when that caller's token expires or is revoked.
    principal: Principal

    async def shutdown(self) -> None:
        """Ends the stream because the gateway is stopping."""

    def token_ended(self, code: str, why: str) -> None:
        """Ends the stream after what is queued: the caller's token is no longer good."""


class StreamSession:
    """What a WebSocket (websocket.WatchSocket) and an event stream (sse.EventStream) share:
    who watches which execution from which seq, the bounded queue to the client, and the end
    of the stream when the caller's token expires or is revoked."""

    # Names the kind of stream in the log line of a client too slow for its queue.
    kind = "live stream"

    def __init__(
        self,
        principal: Principal,
        transport: asyncio.Transport | None,
        execution_id: str,
        after_seq: int,
        settings: Settings,
    ) -> None:
        self.execution_id = execution_id
        self.principal = principal
        self._tenant = principal.tenant
        self._transport = transport
        self._last = after_seq
        self._queue = SendQueue(settings.stream_queue_messages, settings.stream_queue_bytes)

    def deliver(self, message: Outgoing) -> None:
        """One event from the feed (feeds.Subscriber). Never waits."""
        raise NotImplementedError

    def end(self, error: GatewayError | None) -> None:
        """No more events after those queued: the execution ended (None), or `error`."""
        raise NotImplementedError

    async def _follow(self, feeds: FeedRegistry, until: asyncio.Task[None]) -> None:
        """Takes the feed's events, and ends at the caller token's expiry, until `until`
        is done (the client left, or the stream was closed)."""
        feed = feeds.subscribe(self.execution_id, self._tenant, self._last, self)
        expiry = end_at_expiry(self.principal, self.token_expired)
        try:
            await asyncio.wait({until})
        finally:
            if expiry is not None:
                expiry.cancel()
            await feeds.unsubscribe(feed, self)

    def token_expired(self) -> None:
        self.token_ended("TOKEN_EXPIRED", "has expired")

    def token_ended(self, code: str, why: str) -> None:
        """Ends the stream after what is queued: the client resumes after the last event."""
        self.end(token_ended(code, why, self._last))

    def _queued(self, message: Outgoing) -> bool:
        """Puts an event in the send queue; False when the client reads too slowly for the
        queue's bounds (logged; the caller cuts that client off, and it resumes from its
        last seq)."""
        try:
            self._queue.put(message, buffered=buffered(self._transport))
        except Overflow as exc:
            log.warning(
                f"slow {self.kind} client disconnected",
                extra={
                    "execution_id": self.execution_id,
                    "queued": str(exc),
                    "peak_bytes": self._queue.peak_bytes,
                },
            )
            return False
        self._last = message.seq or self._last
        return True


def token_ended(code: str, why: str, last_seq: int) -> Unauthorized:
    """What ends a stream whose caller's token is no longer good: the client reconnects
    with a fresh token from the last seq it received."""
    return Unauthorized(
        f"the token {why}; reconnect with a fresh one and after_seq={last_seq}", code=code
    )


def end_at_expiry(principal: Principal, expire: Callable[[], None]) -> asyncio.TimerHandle | None:
    """Calls `expire` when the caller's token expires: a stream lives no longer than the
    token it was opened with, as the engine's WatchExecution does (the shared feed it reads
    watches with the gateway's own token, so the engine cannot end it for this caller)."""
    if math.isinf(principal.expires_at):
        return None  # the anonymous principal: its forwarded token is renewed
    return asyncio.get_running_loop().call_later(max(principal.seconds_left(), 0.0), expire)


class Overflow(Exception):
    """The client fell behind by more than its queue holds."""


class Outgoing:
    """One message for clients, encoded once however many clients it goes to: the feed makes
    one per event and every client's queue (and the ring) holds that same object, so a big
    event costs its bytes once in memory, not once per client."""

    __slots__ = ("_event_stream", "payload", "seq")

    def __init__(self, seq: int | None, payload: bytes) -> None:
        self.seq = seq
        self.payload = payload  # the legacy JSON message, UTF-8
        self._event_stream: bytes | None = None

    @classmethod
    def of(cls, seq: int | None, message: dict[str, Any]) -> Outgoing:
        return cls(seq, json.dumps(message).encode())

    @property
    def size(self) -> int:
        return len(self.payload)

    @property
    def event_stream(self) -> bytes:
        """As one Server-Sent Event (`id: <seq>` when it has one); made once, on first use.
        json.dumps escapes newlines inside strings, so the data is one line."""
        if self._event_stream is None:
            head = b"" if self.seq is None else b"id: %d\n" % self.seq
            self._event_stream = head + b"data: " + self.payload + b"\n\n"
        return self._event_stream


class SendQueue:
    """Messages waiting for one client, bounded in count and in bytes. The byte bound covers
    all the gateway holds for the client: the queue (the snapshot and a replayed backlog
    count like any event) and what its socket's transport still buffers (aiohttp only waits
    for it every 256 KiB written), which the caller passes as `buffered`. An empty queue
    takes one message of any size: one bigger than the bound could never be delivered."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self._items: deque[Outgoing | None] = deque()
        self._bytes = 0
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._ready = asyncio.Event()
        # The most held for the client at any put, in bytes: logged when it is cut off.
        self.peak_bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Outgoing]:
        return (item for item in self._items if item is not None)

    @property
    def bytes(self) -> int:
        return self._bytes

    def put(self, message: Outgoing, *, buffered: int = 0, force: bool = False) -> None:
        """Queues a message; `force` is for a final error the server itself adds, which a
        client cannot make pile up."""
        held = self._bytes + buffered
        full = len(self._items) >= self._max_messages or (
            bool(self._items or buffered) and held + message.size > self._max_bytes
        )
        if full and not force:
            raise Overflow(
                f"{len(self._items)} messages, {self._bytes} bytes waiting,"
                f" {buffered} bytes in the socket's buffer"
            )
        self._items.append(message)
        self._bytes += message.size
        self.peak_bytes = max(self.peak_bytes, held + message.size)
        self._ready.set()

    def put_end(self) -> None:
        """After this, `get` returns None: the stream is complete."""
        self._items.append(None)
        self._ready.set()

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    async def get(self) -> Outgoing | None:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if item is not None:
            self._bytes -= item.size
        return item


def snapshot(execution: ex_pb.Execution, settings: Settings) -> Outgoing:
    """The first message of a stream that does not resume: whole when it takes at most
    GATEWAY_STREAM_SNAPSHOT_BYTES and half the client's queue (so a backlog from the ring
    fits beside it), else without its big fields and with a pointer (legacy.snapshot)."""
    limit = min(settings.stream_snapshot_bytes, settings.stream_queue_bytes // 2)
    return Outgoing(execution.last_seq, legacy.snapshot(execution, limit).encode())


def buffered(transport: asyncio.BaseTransport | None) -> int:
    """Bytes a stream's transport holds that the kernel has not taken yet."""
    if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
        return transport.get_write_buffer_size()
    return 0


def bound_send_buffer(request: web.Request, size: int) -> None:
    """Caps the kernel's send buffer of a live stream's socket (see Settings)."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if size and sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


class StreamRegistry:
    def __init__(self, max_streams: int, max_per_client: int, opens: RateLimiter) -> None:
        """`opens`: how fast one caller may open streams (a reconnect storm of a whole
        dashboard fits in its burst; a loop opening sockets does not)."""
        self._max = max_streams
        self._max_per_client = max_per_client
        self._opens = opens
        self._per_client: Counter[str] = Counter()
        self._streams: set[LiveStream] = set()
        self._admitted = 0
        self.closing = False

    @property
    def count(self) -> int:
        return self._admitted

    def admit(self, client: str) -> None:
        if self.closing:
            raise ShuttingDown("the gateway is shutting down; reconnect to another")
        if self._admitted >= self._max:
            raise TooManyStreams(f"this gateway holds its maximum of {self._max} live streams")
        if self._per_client[client] >= self._max_per_client:
            raise TooManyStreams(f"at most {self._max_per_client} live streams per caller")
        wait = self._opens.take(client)
        if wait:
            raise TooManyStreams(
                f"opening streams too fast; retry in {wait:.2f} s",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        self._per_client[client] += 1
        self._admitted += 1

    def release(self, client: str) -> None:
        self._per_client[client] -= 1
        if self._per_client[client] <= 0:
            del self._per_client[client]
        self._admitted -= 1

    @property
    def streams(self) -> frozenset[LiveStream]:
        """The live streams now open."""
        return frozenset(self._streams)

    def add(self, stream: LiveStream) -> None:
        self._streams.add(stream)

    def discard(self, stream: LiveStream) -> None:
        self._streams.discard(stream)

    async def shutdown(self) -> None:
        self.closing = True
        await asyncio.gather(*(s.shutdown() for s in list(self._streams)), return_exceptions=True)
