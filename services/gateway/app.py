"""The gateway's app factory: routes, the error middleware, the engine client, live streams.

The engine client (one grpc.aio channel) and the shared feeds on it are opened and closed in
`cleanup_ctx`; live WebSocket and SSE streams are told to go away in `on_shutdown`, before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from services.gateway import pages, routes
from services.gateway.config import Settings
from services.gateway.engine import EngineClient
from services.gateway.errors import error_middleware
from services.gateway.feeds import FeedRegistry
from services.gateway.follow import Follower
from services.gateway.state import ENGINE, FEEDS, SETTINGS, STREAMS
from services.gateway.streams import StreamRegistry

# Request envelope around the largest body the cap allows (headers are bounded by aiohttp).
ENVELOPE_BYTES = 64 * 1024


async def _engine_client(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = EngineClient(settings)

    def follower(execution_id: str, after_seq: int) -> Follower:
        return Follower(
            client,
            execution_id,
            after_seq,
            segment_seconds=settings.watch_segment_seconds,
            retry_seconds=settings.watch_retry_seconds,
        )

    app[ENGINE] = client
    app[FEEDS] = FeedRegistry(follower, settings.feed_ring_messages)
    yield
    await app[FEEDS].close()
    await client.close()


async def _close_streams(app: web.Application) -> None:
    await app[STREAMS].shutdown()
    await app[FEEDS].close()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware],
        # The handlers read bodies themselves within the cap (bodies.py); this is aiohttp's
        # own backstop for anything that would call request.read().
        client_max_size=settings.max_body_bytes + ENVELOPE_BYTES,
    )
    app[SETTINGS] = settings
    app[STREAMS] = StreamRegistry(settings.max_streams, settings.max_streams_per_client)
    app.cleanup_ctx.append(_engine_client)
    app.on_shutdown.append(_close_streams)
    routes.setup(app)
    pages.setup(app)
    return app


def create_runner(settings: Settings, **kwargs: Any) -> web.AppRunner:
    """The app in a runner set up as the gateway needs it; serve it with `web.TCPSite`.

    aiohttp's own inflation of request bodies is off: bodies.py inflates them within the cap
    and answers every refusal in the legacy error shape.
    """
    kwargs.setdefault("shutdown_timeout", settings.shutdown_seconds)
    return web.AppRunner(create_app(settings), auto_decompress=False, **kwargs)
