"""The gateway's Prometheus metrics (services/metrics.py serves them on GATEWAY_METRICS_PORT):
requests by route, method and status (429: refused by a rate limit or a quota), their
durations, and the live streams it holds. Routes are the router's templates
(`/executions/{execution_id}`), never a path with an id in it."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.metrics import SECONDS_BUCKETS, new_registry

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A path no route matches (a 404 or a CORS preflight answered before routing).
UNMATCHED = "unmatched"


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = new_registry() if registry is None else registry
        r = self.registry
        self.requests = Counter(
            "discovery_gateway_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "discovery_gateway_request_duration_seconds",
            "From a request's arrival to its answer (a WebSocket or SSE stream: to its end),"
            " by route and method.",
            ["route", "method"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.streams = Gauge(
            "discovery_gateway_streams",
            "Live WebSocket and SSE streams this gateway holds.",
            registry=r,
        )
        self.engine_streams = Gauge(
            "discovery_gateway_engine_streams",
            "WatchExecution streams this gateway holds to the engines (shared by its clients).",
            registry=r,
        )

    def follow(self, *, streams: Callable[[], int], engine_streams: Callable[[], int]) -> None:
        self.streams.set_function(streams)
        self.engine_streams.set_function(engine_streams)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        began = time.monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else UNMATCHED
            self.requests.labels(route, request.method, str(status)).inc()
            self.request_seconds.labels(route, request.method).observe(time.monotonic() - began)
