"""`GET /ws/{execution_id}`: the legacy WebSocket, a bridge of WatchExecution.

Handshake: `?after_seq=N` must be an integer from 0 to the execution's last seq (else 400,
before any upgrade). Without it the first message is `{"event": "snapshot", "seq": N,
"status": …}` and the events after N follow, so nothing falls between the two. An unknown
execution gets one `{"event": "error", …}` message and close code 4404.

Events come from the execution's shared feed (feeds.py); handing one over never waits. A
socket that has nothing waiting (its queue empty, the kernel taking all it was given) gets
the frame written at once: with a thousand sockets on one execution, waking a task per
socket per event was most of the gateway's work. Otherwise the event goes into the socket's
bounded queue (bounded in bytes too: the snapshot and a backlog from the ring count). A
snapshot bigger than GATEWAY_STREAM_SNAPSHOT_BYTES comes without its big fields and with a
`status_url` to read them from (legacy.snapshot). Two tasks per socket, each with one job:
the handler only reads the socket (pings, the client's close, oversized frames: 1009) and
the sender only writes the queue to it. After the terminal event the sender closes with
1000. A client slower than its queue is closed with 1013 (try again later) and nobody else
waits for it; a client that stops answering pings is dropped by the heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from discovery_client import EngineError
from services.gateway import legacy_values
from services.gateway.auth import caller, engine_for
from services.gateway.config import Settings
from services.gateway.errors import (
    BadRequest,
    EngineRefused,
    Forbidden,
    GatewayError,
    UpgradeRequired,
)
from services.gateway.feeds import FeedRegistry
from services.gateway.params import resource_id, sequence_number
from services.gateway.quotas import admitted
from services.gateway.state import FEEDS, SETTINGS, STREAMS
from services.gateway.streams import (
    Outgoing,
    SendQueue,
    StreamSession,
    bound_send_buffer,
    snapshot,
)

log = logging.getLogger(__name__)

CLOSE_NOT_FOUND = 4404
# The caller's token expired (or was revoked) while it watched: reconnect with a fresh one.
CLOSE_UNAUTHENTICATED = 4401
# How long a closing handshake may take before the connection is cut.
CLOSE_TIMEOUT_SECONDS = 5.0


def close_code_for(error: GatewayError) -> int:
    if error.status == 404:
        return CLOSE_NOT_FOUND
    if error.status == 401:
        return CLOSE_UNAUTHENTICATED
    if error.status in (429, 503, 504):
        return WSCloseCode.TRY_AGAIN_LATER
    return WSCloseCode.INTERNAL_ERROR


def error_message(execution_id: str, error: GatewayError) -> dict[str, Any]:
    return {
        "event": "error",
        "execution_id": execution_id,
        "timestamp": legacy_values.now_iso(),
        **error.body(),
    }


class WatchSocket(StreamSession):
    kind = "WebSocket"

    def __init__(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        execution_id: str,
        after_seq: int,
        settings: Settings,
    ) -> None:
        principal = caller(request).principal
        super().__init__(principal, request.transport, execution_id, after_seq, settings)
        self._ws = ws
        self._end_code: int = WSCloseCode.OK
        self._end_reason = b"execution finished"
        self._sender: asyncio.Task[None] | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._sender_closing = False

    @property
    def queue(self) -> SendQueue:
        return self._queue

    async def run(self, feeds: FeedRegistry, first: Outgoing | None) -> None:
        if first is not None:
            self._queue.put(first)  # into the empty queue: it always fits
        self._sender = asyncio.create_task(self._send())
        self._receiver = asyncio.create_task(self._receive())
        try:
            # Until the client leaves or closes, or the sender closes (it stops the receiver).
            await self._follow(feeds, self._receiver)
        finally:
            await self._finish()

    async def shutdown(self) -> None:
        self._begin_close(WSCloseCode.GOING_AWAY, b"gateway shutting down; reconnect")
        if self._closer is not None:
            await asyncio.wait({self._closer}, timeout=2 * CLOSE_TIMEOUT_SECONDS + 1)

    # --- what the feed hands over ------------------------------------------------------

    def deliver(self, message: Outgoing) -> None:
        seq = message.seq
        if seq is None or seq <= self._last or self._closer is not None:
            return
        if self._writable_now():
            assert self._transport is not None
            # Header and payload apart: the payload is the feed's, shared by every socket.
            self._transport.write(frame_header(message.size))
            self._transport.write(message.payload)
            self._last = seq
            return
        if not self._queued(message):
            self._begin_close(WSCloseCode.TRY_AGAIN_LATER, b"too slow; resume with after_seq")

    def end(self, error: GatewayError | None) -> None:
        if self._closer is not None:
            return  # closing out of turn already
        if error is not None:
            # The engine stayed away past the retry budget, or refused: say so, then close.
            message = Outgoing.of(None, error_message(self.execution_id, error))
            self._queue.put(message, force=True)
            self._end_code, self._end_reason = close_code_for(error), error.code.encode()[:120]
        self._queue.put_end()

    def _writable_now(self) -> bool:
        """Whether a frame written now goes straight out in order: nothing queued before it
        (a popped message is written in the same step that pops it), nothing left in the
        transport's buffer (so a slow client still meets the queue's bound and aiohttp's
        flow control), and the socket not closing."""
        transport = self._transport
        return (
            not self._queue
            and transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() == 0
            and not self._ws.closed
        )

    # --- the sender ------------------------------------------------------------------

    async def _send(self) -> None:
        try:
            while (message := await self._queue.get()) is not None:
                await self._ws.send_frame(message.payload, WSMsgType.TEXT)
        except ConnectionError:
            return  # the client left; the reading side notices too
        except Exception:
            log.exception("WebSocket send failed", extra={"execution_id": self.execution_id})
            self._abort()  # the reading side then ends too
            return
        self._sender_closing = True
        await self._close(self._end_code, self._end_reason)

    async def _receive(self) -> None:
        async for _ in self._ws:
            pass  # legacy clients send nothing that needs an answer; pings are automatic

    async def _close(self, code: int, reason: bytes) -> None:
        # The receiver is stopped first: aiohttp closing a socket that another task reads
        # closes the connection without waiting for the client's close frame, which then
        # meets a closed socket, and the reset can lose our close frame (1006, not 1013).
        if self._receiver is not None:
            self._receiver.cancel()
            await asyncio.gather(self._receiver, return_exceptions=True)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await self._ws.close(code=code, message=reason)
        except (TimeoutError, ConnectionError):
            self._abort()

    # --- ending ------------------------------------------------------------------------

    def _begin_close(self, code: int, reason: bytes) -> None:
        """Closes out of turn (slow client, shutdown): queued messages are dropped and the
        client resumes from the last seq it received. The sender closes once the frame it is
        writing is out. (Cancelling it while it waited for the socket to drain cancelled
        aiohttp's drain future, shared with the close that followed: the close failed at
        once and the client saw 1006, not 1013.) One that takes nothing more is cut off."""
        if self._closer is not None or self._ws.closed:
            return
        self._queue.clear()
        self._end_code, self._end_reason = code, reason
        self._queue.put_end()
        self._closer = asyncio.create_task(self._cut_off_if_stuck())

    async def _cut_off_if_stuck(self) -> None:
        if self._sender is None:
            return
        done, _ = await asyncio.wait({self._sender}, timeout=2 * CLOSE_TIMEOUT_SECONDS)
        if not done:
            self._abort()

    async def _finish(self) -> None:
        closing = self._closer or (self._sender if self._sender_closing else None)
        if closing is not None and not closing.done():
            await asyncio.wait({closing}, timeout=2 * CLOSE_TIMEOUT_SECONDS + 1)
        tasks = [t for t in (self._sender, self._closer, self._receiver) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Bytes still waiting for a client that stopped reading would hold the connection
        # open for as long as TCP keeps trying: cut it, once the close frame queued behind
        # them had the closing handshake's time to reach a client that reads again (cutting
        # at once turned a slow client's 1013 into an abnormal closure).
        if self._transport is not None and self._transport.get_write_buffer_size() > 0:
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_SECONDS, self._abort)

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def frame_header(size: int) -> bytes:
    """The header of an unmasked, uncompressed, final text frame of `size` bytes (RFC 6455
    5.2): what aiohttp writes for `send_str` on a server socket opened with compress=False."""
    if size < 126:
        return struct.pack("!BB", 0x81, size)
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size)
    return struct.pack("!BBQ", 0x81, 127, size)


def check_origin(request: web.Request, settings: Settings) -> None:
    """A listed origin, or the gateway's own (its dashboard: the list defaults to the CORS
    origins, which never name the gateway itself)."""
    if not settings.ws_allowed_origins:
        return
    origin = request.headers.get("Origin", "").rstrip("/")
    if origin and urlsplit(origin).netloc.lower() == request.host.lower():
        return
    if origin not in settings.ws_allowed_origins:
        raise Forbidden(f"origin {origin[:100]!r} may not open a WebSocket", code="ORIGIN_DENIED")


async def websocket(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    streams = request.app[STREAMS]
    raw_id = request.match_info["execution_id"]
    # Checked before the handshake kind: a bad parameter is a bad request either way.
    after_seq = sequence_number(request.query.get("after_seq"), "after_seq")
    ws = web.WebSocketResponse(
        heartbeat=settings.ws_heartbeat_seconds,
        max_msg_size=settings.ws_max_message_bytes,
        compress=False,  # small JSON messages; per-message deflate costs more CPU than it saves
        timeout=CLOSE_TIMEOUT_SECONDS,
    )
    if not ws.can_prepare(request).ok:
        resource_id(raw_id, "execution")  # an id that cannot exist is unknown, on any request
        raise UpgradeRequired(
            "this path speaks WebSocket; open it with a WebSocket client",
            headers={"Upgrade": "websocket"},
        )
    check_origin(request, settings)
    with admitted(request):
        try:
            execution = await engine_for(request).get_execution(resource_id(raw_id, "execution"))
        except EngineError as exc:
            refused = EngineRefused.of(exc)
            if refused.status != 404:
                raise refused from None
            # A browser cannot read a refused handshake's status; it can read a message.
            await ws.prepare(request)
            await ws.send_json(error_message(raw_id, refused))
            await ws.close(code=CLOSE_NOT_FOUND, message=b"execution not found")
            return ws
        if after_seq is not None and after_seq > execution.last_seq:
            raise BadRequest(
                f"after_seq {after_seq} is past the execution's last seq {execution.last_seq}",
                code="INVALID_ARGUMENT",
                details={"field": "after_seq", "last_seq": execution.last_seq},
            )
        await ws.prepare(request)
        bound_send_buffer(request, settings.stream_send_buffer_bytes)
        start = execution.last_seq if after_seq is None else after_seq
        session = WatchSocket(request, ws, execution.execution_id, start, settings)
        streams.add(session)
        try:
            first = None
            if after_seq is None:
                first = snapshot(execution, settings)
            await session.run(request.app[FEEDS], first)
        finally:
            streams.discard(session)
        return ws
