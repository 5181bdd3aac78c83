"""`python -m services.pioneer`: runs the built-in steps and those of PIONEER_STEP_MODULES,
pulled from the engine's step queue, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal

import services.pioneer.steps  # noqa: F401  # registers the built-in steps
from services import jsonlog, tracing
from services.auth import RUNNER, ServiceToken, TokenAuthority
from services.envconfig import ConfigError
from services.metrics import MetricsServer
from services.pioneer.config import Settings
from services.pioneer.context import Resources
from services.pioneer.metrics import PioneerMetrics
from services.pioneer.poller import StepPoller, process_runner_id
from services.pioneer.registry import registry
from services.pioneer.reporter import StepReporter
from services.pioneer.runner import StepRunner
from services.pioneer.server import build_server
from services.pioneer.steps.documents import document_tools

log = logging.getLogger("services.pioneer")

# In-flight StartStep/CancelStep calls are short: a few seconds is plenty to let them finish.
SHUTDOWN_GRACE_SECONDS = 5.0


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    step_metrics = PioneerMetrics()
    metrics = MetricsServer(
        step_metrics.registry, settings.host, settings.metrics_port, "PIONEER_METRICS_PORT"
    )
    metrics.start()  # first: a port in use stops pioneer before it connects or takes work
    # Workers start when a document step first needs one; all are stopped below.
    documents = document_tools(settings)
    pool = documents.pool
    runner_id = process_runner_id()
    credentials = ServiceToken(
        TokenAuthority(settings.auth_keys), subject=runner_id, role=RUNNER, tenant=settings.tenant
    )
    reporter = StepReporter.connect(settings.discovery_url, credentials, tls=settings.tls)
    runner = StepRunner(
        reporter,
        max_concurrent_steps=settings.max_concurrent_steps,
        resources=Resources(documents),
        metrics=step_metrics,
    )
    server, port = await build_server(settings, registry, runner)
    await server.start()
    poller = StepPoller(reporter.channel, credentials, runner, registry, runner_id)
    poller.start()
    log.info(
        "pioneer serving",
        extra={
            "host": settings.host,
            "port": port,
            "metrics_port": metrics.port or None,
            "discovery_url": settings.discovery_url,
            "runner_id": runner_id,
            "max_concurrent_steps": settings.max_concurrent_steps,
            "document_workers": pool.size,
            "worker_memory_mib": settings.worker_memory_mib,
            "handlers": [spec.name for spec in registry.handlers()],
        },
    )
    await stop.wait()
    log.info("pioneer stopping", extra={"running_steps": runner.running_count})
    await poller.stop()
    await server.stop(SHUTDOWN_GRACE_SECONDS)
    await runner.close()
    await pool.close()
    await reporter.close()
    await asyncio.to_thread(metrics.stop)
    log.info("pioneer stopped")


def import_step_modules(names: tuple[str, ...]) -> None:
    """Imports the user's step modules: their `@step` decorators register on the default
    registry. Any failure stops pioneer at start, naming the module: a runner that silently
    lacks a handler would leave that handler's steps waiting in the queue."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any import-time error is the module's configuration fault
            raise ConfigError(
                f"PIONEER_STEP_MODULES: cannot import {name!r}: {type(exc).__name__}: {exc}"
            ) from exc


def main() -> int:
    jsonlog.configure("pioneer")
    tracing.configure("pioneer")
    try:
        settings = Settings.from_env()
        import_step_modules(settings.step_modules)
    except ConfigError as exc:
        log.error("bad configuration", extra={"error": str(exc)})
        return 2
    try:
        asyncio.run(serve(settings))
    except ConfigError as exc:  # a port in use
        log.error("bad configuration", extra={"error": str(exc)})
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
