"""The live streams (WebSocket and SSE) one gateway holds: caps, counts, and a bounded queue
per stream.

Admission happens before the handshake, so a client over the cap gets 429 and no socket.
On shutdown every stream is told to go away, so clients reconnect (with their last seq) to a
gateway that is up.

Each stream has its own send queue between the engine and the client. Putting never waits:
a queue over its bound in messages or bytes means the client reads slower than the execution
writes, and that client alone is disconnected (WebSocket close 1013 "try again later"; SSE
connection dropped) while the others go on. It resumes from its last seq and loses nothing.
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections import Counter, deque
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from services.auth import Principal
from services.gateway.errors import ShuttingDown, TooManyStreams, Unauthorized
from services.ratelimit import RateLimiter


class LiveStream(Protocol):
    async def shutdown(self) -> None:
        """Ends the stream because the gateway is stopping."""


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


class SendQueue:
    """Messages waiting for one client, bounded in count and bytes (characters of JSON,
    which is nearly all ASCII)."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self._items: deque[str | None] = deque()
        self._bytes = 0
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def put(self, message: str, *, force: bool = False) -> None:
        """Queues a message; `force` is for the few the server itself adds (the snapshot, a
        final error), which a client cannot make pile up."""
        full = len(self._items) >= self._max_messages or (
            self._bytes + len(message) > self._max_bytes
        )
        if full and not force:
            raise Overflow(f"{len(self._items)} messages, {self._bytes} bytes waiting")
        self._items.append(message)
        self._bytes += len(message)
        self._ready.set()

    def put_end(self) -> None:
        """After this, `get` returns None: the stream is complete."""
        self._items.append(None)
        self._ready.set()

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    async def get(self) -> str | None:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if item is not None:
            self._bytes -= len(item)
        return item


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

    def add(self, stream: LiveStream) -> None:
        self._streams.add(stream)

    def discard(self, stream: LiveStream) -> None:
        self._streams.discard(stream)

    async def shutdown(self) -> None:
        self.closing = True
        await asyncio.gather(*(s.shutdown() for s in list(self._streams)), return_exceptions=True)
