"""The gateway's app factory: routes, the error middleware, the engine client, live streams.

The engine client (one grpc.aio channel) and the shared feeds on it are opened and closed in
`cleanup_ctx`; live WebSocket and SSE streams are told to go away in `on_shutdown`, before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from services import tracing
from services.auth import (
    ANY_TENANT,
    RUNNER,
    ServiceToken,
    TokenAuthority,
)
from services.gateway import cors, pages, routes, schedule_routes
from services.gateway.anonymous import AnonymousAccess
from services.gateway.auth import ANONYMOUS, AUTHORITY, REPORTER, auth_middleware
from services.gateway.config import Settings
from services.gateway.engine import engine_client
from services.gateway.errors import error_middleware
from services.gateway.feeds import FeedRegistry, engine_watch
from services.gateway.log_context import log_context_middleware
from services.gateway.metrics import GatewayMetrics
from services.gateway.quotas import TENANT_STREAMS, TenantStreams
from services.gateway.revocations import follow_revocations
from services.gateway.state import ENGINE, FEEDS, SETTINGS, STREAMS
from services.gateway.streams import StreamRegistry
from services.ratelimit import RateLimiter

# Request envelope around the largest body the cap allows (headers are bounded by aiohttp).
ENVELOPE_BYTES = 64 * 1024


async def _engine_client(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = engine_client(settings)

    authority = app[AUTHORITY]

    app[ENGINE] = client
    # The ring's backlog must fit a joining client's queue beside its snapshot (at most
    # half of it): at most the other half.
    ring_bytes = min(settings.feed_ring_bytes, settings.stream_queue_bytes // 2)
    watch = engine_watch(client, authority, settings)
    app[FEEDS] = FeedRegistry(watch, settings.feed_ring_messages, ring_bytes)
    revocations = asyncio.create_task(
        follow_revocations(client.with_credentials(app[REPORTER]), authority, app[STREAMS]),
        name="revoked-tokens",
    )
    yield
    revocations.cancel()
    await asyncio.gather(revocations, return_exceptions=True)
    await app[FEEDS].close()
    await client.close()


async def _close_streams(app: web.Application) -> None:
    await app[STREAMS].shutdown()
    await app[FEEDS].close()


def create_app(settings: Settings, metrics: GatewayMetrics | None = None) -> web.Application:
    """`metrics`: where the requests and streams are counted (a registry of the app's own
    unless given: the caller serves it)."""
    settings.check_anonymous_access()
    metrics = GatewayMetrics() if metrics is None else metrics
    app = web.Application(
        # The error middleware is outermost but for the metrics: it also answers the auth
        # middleware's refusals, and the metrics count what it answered.
        middlewares=[
            # Before all: the request's span (none while tracing is off), and the execution
            # its lines are about.
            *tracing.aiohttp_middlewares("gateway"),
            log_context_middleware,
            metrics.middleware,
            error_middleware,
            auth_middleware,
        ],
        # The handlers read bodies themselves within the cap (bodies.py); this is aiohttp's
        # own backstop for anything that would call request.read().
        client_max_size=settings.max_body_bytes + ENVELOPE_BYTES,
    )
    app[SETTINGS] = settings
    app[AUTHORITY] = TokenAuthority(settings.auth_keys)
    # Reports that carry only their attempt token, of any tenant's step: the token binds each
    # to its one step.
    app[REPORTER] = ServiceToken(
        app[AUTHORITY], subject="gateway:attempt-token", role=RUNNER, tenant=ANY_TENANT
    )
    if settings.anonymous_access:
        app[ANONYMOUS] = AnonymousAccess(settings, app[AUTHORITY])
    app[STREAMS] = StreamRegistry(
        settings.max_streams,
        settings.max_streams_per_client,
        RateLimiter(settings.stream_open_rate, settings.stream_open_burst),
    )
    app[TENANT_STREAMS] = TenantStreams(settings.max_streams_per_tenant)
    metrics.follow(
        streams=lambda: app[STREAMS].count,
        engine_streams=lambda: app[FEEDS].engine_streams if FEEDS in app else 0,
    )
    app.cleanup_ctx.append(_engine_client)
    app.on_shutdown.append(_close_streams)
    routes.setup(app)
    schedule_routes.setup(app)
    pages.setup(app)
    cors.setup(app, settings)
    return app


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log without query strings: a WebSocket's `?access_token=` must never
    reach a log line."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status,
            extra={
                "remote": request.remote,
                "seconds": round(time, 4),
                # Logged once the request's own context is gone (log_context.py).
                **_execution_of(request),
            },
        )


def _execution_of(request: BaseRequest) -> dict[str, str]:
    match_info = getattr(request, "match_info", None)
    execution_id = match_info.get("execution_id") if match_info is not None else None
    return {"execution_id": execution_id} if execution_id else {}


def create_runner(
    settings: Settings, metrics: GatewayMetrics | None = None, **kwargs: Any
) -> web.AppRunner:
    """The app in a runner set up as the gateway needs it; serve it with `web.TCPSite`.

    aiohttp's own inflation of request bodies is off: bodies.py inflates them within the cap
    and answers every refusal in the legacy error shape.
    """
    kwargs.setdefault("shutdown_timeout", settings.shutdown_seconds)
    kwargs.setdefault("access_log_class", AccessLogger)
    return web.AppRunner(create_app(settings, metrics), auto_decompress=False, **kwargs)
