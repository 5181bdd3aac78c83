"""A TCP fault proxy for the network fault tests, in the manner of Toxiproxy (which is not
installable here): it listens on 127.0.0.1, forwards every connection to one upstream
address, and degrades the traffic on demand while connections are open.

    proxy = FaultProxy("127.0.0.1", engine_port)
    await proxy.start()                  # proxy.target is "127.0.0.1:<port>"
    proxy.latency(500, jitter_ms=100)    # every chunk, each way, arrives later, in order
    proxy.blackhole()                    # connections stay open, nothing moves, no FIN
    proxy.reset_peers()                  # RST on every open connection, both sides
    proxy.slicer(16, delay_ms=1)         # chunks cut into 16-byte writes, 1 ms apart
    proxy.limit_data(4096)               # a connection is closed once 4096 bytes went one way
    proxy.heal()                         # every fault off; held traffic moves again
    await proxy.close()

Faults apply to the connections already open as well as to new ones. A blackhole holds the
data rather than dropping it: like a partition under TCP's retransmissions, what was sent
arrives after `heal()` unless an end gave up first, so a healed connection is still a valid
byte stream. Each direction of a connection is a reader that stamps chunks with their
release time and a writer that waits for it, so latency delays chunks without serialising
them and never reorders them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from dataclasses import dataclass, field
from types import TracebackType

# One read; large enough that bulk traffic is not cut into pieces the proxy itself invents.
READ_BYTES = 64 * 1024
# Chunks waiting for their release time, per direction; beyond it the reader stops reading
# and the sender feels TCP back-pressure, as it would behind a slow link.
QUEUE_CHUNKS = 256


class _LimitReached(Exception):
    """The connection carried its `limit_data` bytes one way: it is closed."""


@dataclass(eq=False)
class _Chunk:
    release_at: float
    data: bytes


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    # Set while the connection is blackholed; cleared (flowing) otherwise.
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    # Bytes written so far, per direction ("up" towards upstream, "down" towards the client).
    sent: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})
    task: asyncio.Task[None] | None = None

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]


class FaultProxy:
    """Forwards 127.0.0.1:`port` to `upstream_host`:`upstream_port`, with faults switched
    at run time. Random choices (jitter) come from `seed`, so a run can be repeated."""

    def __init__(self, upstream_host: str, upstream_port: int, *, seed: int = 0) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = 0
        self.connections_total = 0
        self._random = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._latency_ms = 0.0
        self._jitter_ms = 0.0
        self._blackhole_new = False
        self._slice_bytes: int | None = None
        self._slice_delay_ms = 0.0
        self._limit_bytes: int | None = None

    # -- life cycle -------------------------------------------------------------------------

    @property
    def target(self) -> str:
        """The gRPC target (host:port) to give a client instead of the upstream's."""
        return f"127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._links)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stops listening and closes every connection (FIN), waiting for their tasks."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        tasks = [link.task for link in self._links if link.task is not None]
        for task in tasks:
            task.cancel()  # a held connection would otherwise wait for a heal forever
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- faults -----------------------------------------------------------------------------

    def latency(self, ms: float, jitter_ms: float = 0.0) -> None:
        """Each chunk, in each direction, is delayed by `ms` ± `jitter_ms` (uniform), without
        overtaking the chunk before it."""
        if ms < 0 or jitter_ms < 0 or jitter_ms > ms:
            raise ValueError("latency: need 0 <= jitter_ms <= ms")
        self._latency_ms, self._jitter_ms = ms, jitter_ms

    def blackhole(self, *, new_connections: bool = True) -> None:
        """Nothing moves on the open connections, which stay open: no FIN, no RST, like a
        peer that vanished behind a silent NAT or a pulled cable. With `new_connections`,
        connections opened from now on are held too (the whole route is down); without it
        they pass (only the old connections died)."""
        for link in self._links:
            link.flowing.clear()
        self._blackhole_new = new_connections

    def reset_peers(self) -> int:
        """Resets (RST) every open connection on both of its sides; returns how many."""
        links = list(self._links)
        linger_zero = struct.pack("ii", 1, 0)
        for link in links:
            for writer in link.writers():
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_zero)
                writer.transport.abort()
        return len(links)

    def slicer(self, max_bytes: int, delay_ms: float = 0.0) -> None:
        """Each chunk is written in pieces of at most `max_bytes`, `delay_ms` apart."""
        if max_bytes < 1 or delay_ms < 0:
            raise ValueError("slicer: need max_bytes >= 1 and delay_ms >= 0")
        self._slice_bytes, self._slice_delay_ms = max_bytes, delay_ms

    def limit_data(self, n_bytes: int) -> None:
        """A connection is closed (FIN, both sides) once `n_bytes` have gone through it in
        one direction, counted from the connection's start; the chunk that crosses the limit
        is cut at it."""
        if n_bytes < 0:
            raise ValueError("limit_data: need n_bytes >= 0")
        self._limit_bytes = n_bytes

    def heal(self) -> None:
        """Every fault off; held connections move again."""
        self._latency_ms = self._jitter_ms = 0.0
        self._slice_bytes, self._slice_delay_ms = None, 0.0
        self._limit_bytes = None
        self._blackhole_new = False
        for link in self._links:
            link.flowing.set()

    # -- forwarding -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(client=writer, task=asyncio.current_task())
        stopping = False
        if not self._blackhole_new:
            link.flowing.set()
        self._links.add(link)
        self.connections_total += 1
        try:
            try:
                up_reader, link.upstream = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port
                )
            except OSError:
                return  # the upstream is down: the client sees its connection closed
            directions = [
                asyncio.create_task(self._direction(link, reader, link.upstream, "up")),
                asyncio.create_task(self._direction(link, up_reader, writer, "down")),
            ]
            try:
                # Both ends finished (EOF each way), or one direction failed or hit the limit.
                await asyncio.wait(directions, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for task in directions:
                    task.cancel()
                await asyncio.gather(*directions, return_exceptions=True)
        except asyncio.CancelledError:
            stopping = True  # close(): the writers are dropped below, flushed or not
        finally:
            self._links.discard(link)
            for each in link.writers():
                if stopping:
                    each.transport.abort()
                else:
                    each.close()
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await each.wait_closed()

    async def _direction(
        self,
        link: _Link,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        key: str,
    ) -> None:
        queue: asyncio.Queue[_Chunk | None] = asyncio.Queue(QUEUE_CHUNKS)
        reading = asyncio.create_task(self._read(link, src, queue))
        try:
            await self._write(link, dst, key, queue)
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await reading

    async def _read(
        self, link: _Link, src: asyncio.StreamReader, queue: asyncio.Queue[_Chunk | None]
    ) -> None:
        loop = asyncio.get_running_loop()
        last_release = 0.0
        while True:
            await link.flowing.wait()
            data = await src.read(READ_BYTES)
            if not data:
                await queue.put(None)
                return
            delay = self._latency_ms
            if self._jitter_ms:
                delay += self._random.uniform(-self._jitter_ms, self._jitter_ms)
            last_release = max(last_release, loop.time() + delay / 1000)
            await queue.put(_Chunk(last_release, data))

    async def _write(
        self,
        link: _Link,
        dst: asyncio.StreamWriter,
        key: str,
        queue: asyncio.Queue[_Chunk | None],
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            chunk = await queue.get()
            await link.flowing.wait()
            if chunk is None:
                if dst.can_write_eof() and not dst.transport.is_closing():
                    dst.write_eof()
                return
            wait = chunk.release_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                await link.flowing.wait()  # a blackhole that began meanwhile holds it
            data = chunk.data
            limited = False
            if self._limit_bytes is not None:
                room = max(self._limit_bytes - link.sent[key], 0)
                if len(data) >= room:
                    data, limited = data[:room], True
            size = self._slice_bytes or len(data) or 1
            for start in range(0, len(data), size):
                if start and self._slice_delay_ms:
                    await asyncio.sleep(self._slice_delay_ms / 1000)
                piece = data[start : start + size]
                dst.write(piece)
                await dst.drain()
                link.sent[key] += len(piece)
            if limited:
                raise _LimitReached(key)
