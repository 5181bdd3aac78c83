"""`python -m services.gateway`: serves the legacy REST/WebSocket API until SIGTERM or SIGINT.

On either signal: new connections are refused, live streams are closed with "going away" (so
clients reconnect elsewhere with their last seq), requests in flight get GATEWAY_SHUTDOWN_SECONDS
to finish, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl

from aiohttp import web

from services import jsonlog, tracing
from services.gateway.app import create_runner
from services.gateway.config import ConfigError, Settings
from services.gateway.metrics import GatewayMetrics
from services.metrics import MetricsServer
from services.tls import https_context

log = logging.getLogger("services.gateway")


async def serve(settings: Settings, https: ssl.SSLContext | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    metrics = GatewayMetrics()
    metrics_server = MetricsServer(
        metrics.registry, settings.host, settings.metrics_port, "GATEWAY_METRICS_PORT"
    )
    metrics_server.start()  # first: a port in use stops the gateway before it serves
    runner = create_runner(settings, metrics, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=https)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else settings.port
    if settings.anonymous_access:
        log.warning(
            "anonymous access is on: requests without credentials are admitted",
            extra={
                "role": settings.anonymous_role,
                "tenant": settings.anonymous_tenant,
                "trusted_network": settings.trusted_network,
            },
        )
    log.info(
        "gateway serving",
        extra={
            "host": settings.host,
            "port": port,
            "metrics_port": metrics_server.port or None,
            "scheme": "https" if https else "http",
            "engine": settings.engine_target,
        },
    )
    await stop.wait()
    log.info("gateway stopping")
    await runner.cleanup()
    await asyncio.to_thread(metrics_server.stop)
    log.info("gateway stopped")


def main() -> int:
    jsonlog.configure("gateway")
    tracing.configure("gateway")
    try:
        settings = Settings.from_env()
        https = None
        if settings.https_cert is not None and settings.https_key is not None:
            https = https_context(settings.https_cert, settings.https_key)
    except ConfigError as exc:
        log.error("bad configuration", extra={"error": str(exc)})
        return 2
    try:
        asyncio.run(serve(settings, https))
    except ConfigError as exc:  # a port in use
        log.error("bad configuration", extra={"error": str(exc)})
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
