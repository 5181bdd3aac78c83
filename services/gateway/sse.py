"""`GET /executions/{execution_id}/events`: the same events as Server-Sent Events.

For clients that cannot hold a WebSocket (proxies, `EventSource`). Each event is
`id: <seq>` plus `data: <the legacy JSON message>`; there is no `event:` line, so a browser's
`onmessage` receives every kind and switches on `data.event`, as WebSocket clients do.
`EventSource` reconnects by itself with `Last-Event-ID`, and the stream resumes exactly after
it (`?after_seq=` does the same for other clients). Without either, the first event is the
snapshot (as on the WebSocket: a big one comes as a pointer to the status route). Each
event's frame is made once and shared by every stream that sends it. After the terminal
event the stream ends; asking again from there gets 204, which tells `EventSource` to stop
reconnecting. A client that falls behind its queue is
disconnected and resumes like any other reconnecting client.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from services.gateway import legacy
from services.gateway.auth import caller, engine_for
from services.gateway.config import Settings
from services.gateway.errors import BadRequest, GatewayError
from services.gateway.feeds import FeedRegistry
from services.gateway.params import resource_id, sequence_number
from services.gateway.quotas import admitted
from services.gateway.state import FEEDS, SETTINGS, STREAMS
from services.gateway.streams import (
    Outgoing,
    StreamSession,
    bound_send_buffer,
    snapshot,
)

log = logging.getLogger(__name__)

RECONNECT_MILLISECONDS = 1000
END_TIMEOUT_SECONDS = 5.0
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


class EventStream(StreamSession):
    kind = "event-stream"

    def __init__(
        self,
        request: web.Request,
        response: web.StreamResponse,
        execution_id: str,
        after_seq: int,
        settings: Settings,
    ) -> None:
        principal = caller(request).principal
        super().__init__(principal, request.transport, execution_id, after_seq, settings)
        self._response = response
        self._heartbeat = settings.ws_heartbeat_seconds
        self._writer: asyncio.Task[None] | None = None
        self._cut = False

    async def run(self, feeds: FeedRegistry, first: Outgoing | None) -> None:
        if first is not None:
            self._queue.put(first)  # into the empty queue: it always fits
        self._writer = asyncio.create_task(self._write())
        try:
            await self._follow(feeds, self._writer)
        finally:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._cut and self._transport is not None:
            self._transport.abort()

    async def shutdown(self) -> None:
        self._queue.clear()
        self._queue.put_end()
        if self._writer is not None:
            done, _ = await asyncio.wait({self._writer}, timeout=END_TIMEOUT_SECONDS)
            if not done:
                self._cut_off()

    def deliver(self, message: Outgoing) -> None:
        seq = message.seq
        if seq is None or seq <= self._last or self._cut:
            return
        if not self._queued(message):
            self._cut_off()

    def end(self, error: GatewayError | None) -> None:
        if error is not None:
            message = {"event": "error", "execution_id": self.execution_id, **error.body()}
            self._queue.put(Outgoing.of(None, message), force=True)
        self._queue.put_end()

    async def _write(self) -> None:
        await self._response.write(f"retry: {RECONNECT_MILLISECONDS}\n\n".encode())
        while True:
            try:
                async with asyncio.timeout(self._heartbeat):
                    message = await self._queue.get()
            except TimeoutError:
                await self._response.write(b": keepalive\n\n")
                continue
            if message is None:
                break
            await self._response.write(message.event_stream)
        async with asyncio.timeout(END_TIMEOUT_SECONDS):
            await self._response.write_eof()

    def _cut_off(self) -> None:
        """Drops the connection: the client reconnects from the last id it received."""
        self._cut = True
        if self._writer is not None:
            self._writer.cancel()


async def events(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    streams = request.app[STREAMS]
    execution_id = resource_id(request.match_info["execution_id"], "execution")
    # Both are checked: a malformed ?after_seq is refused even when Last-Event-ID wins.
    last_event_id = sequence_number(request.headers.get("Last-Event-ID"), "Last-Event-ID")
    query_after_seq = sequence_number(request.query.get("after_seq"), "after_seq")
    after_seq = query_after_seq if last_event_id is None else last_event_id
    with admitted(request):
        execution = await engine_for(request).get_execution(execution_id)
        if after_seq is not None and after_seq > execution.last_seq:
            raise BadRequest(
                f"after seq {after_seq} is past the execution's last seq {execution.last_seq}",
                code="INVALID_ARGUMENT",
                details={"field": "after_seq", "last_seq": execution.last_seq},
            )
        finished = legacy.execution_status(execution.status) in TERMINAL_STATUSES
        if finished and after_seq is not None and after_seq >= execution.last_seq:
            return web.Response(status=204)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        bound_send_buffer(request, settings.stream_send_buffer_bytes)
        start = execution.last_seq if after_seq is None else after_seq
        stream = EventStream(request, response, execution_id, start, settings)
        first = snapshot(execution, settings) if after_seq is None else None
        streams.add(stream)
        try:
            await stream.run(request.app[FEEDS], first)
        except ConnectionError:
            pass  # the client left
        finally:
            streams.discard(stream)
        return response
