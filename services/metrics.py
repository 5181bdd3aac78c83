"""Prometheus metrics, shared by every service: each service instance keeps its own registry
(several engines run in one test process) and serves it on a port of its own
(ENGINE_METRICS_PORT 9101, PIONEER_METRICS_PORT 9102, GATEWAY_METRICS_PORT 9103; 0: off),
on the host the service binds.

The endpoint is plain HTTP, as Prometheus scrapes by default: it carries counts and timings
only, never an execution id, a payload or a token. Keep its port inside the deployment's
network (docker-compose.yml publishes none).
"""

from __future__ import annotations

import errno
import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)

from services.envconfig import ConfigError

__all__ = ["BoundedLabel", "MetricsServer", "new_registry"]

log = logging.getLogger(__name__)

# Without the `_created` series beside every counter and histogram: they double what each
# scrape carries, and Prometheus does not read them from the text format.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Buckets for what takes milliseconds (a commit, a call) to minutes (a step of a long document).
SECONDS_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)


def new_registry() -> CollectorRegistry:
    """A registry with the process's own figures (CPU, memory, open files, GC, Python)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class BoundedLabel:
    """A label whose values come from users (workflow names, step handlers): the first
    `limit` distinct values are kept, any later one is counted as "other", so that a tenant
    creating workflows without end cannot grow the series without end."""

    OTHER = "other"

    def __init__(self, limit: int = 200) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return self.OTHER
        self._seen.add(value)
        return value


class MetricsServer:
    """`/metrics` (any path answers) on its own port, from a thread of its own: a scrape
    costs the service's event loop nothing but the GIL it takes to render the text."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, setting: str) -> None:
        self.registry = registry
        self._host = host
        self._port = port
        self._setting = setting
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> None:
        """Binds the port (none when it is 0); a port in use is a ConfigError naming it."""
        if self._port == 0:
            return
        try:
            self._server, self._thread = start_http_server(
                self._port, self._host, registry=self.registry
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"{self._setting}={self._port}: the port is in use on {self._host}"
                ) from None
            raise ConfigError(f"{self._setting}={self._port}: {exc.strerror}") from None
        self.port = self._server.server_port
        log.info("metrics serving", extra={"host": self._host, "port": self.port})

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
