"""Assembles the engine: database, store, the log's change feed, runner (with its step queue),
the scheduler of cron schedules, and gRPC server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from grpc_health.v1 import health_pb2
from pymongo import AsyncMongoClient

from services.auth import ENGINE, ServiceToken, TokenAuthority
from services.engine.config import ConfigError, Settings, advertised
from services.engine.domain.errors import StoreUnavailable
from services.engine.feed import EventFeed
from services.engine.hub import EventHub
from services.engine.metrics import EngineMetrics
from services.engine.queue_mirror import QueueMirror
from services.engine.quotas import CallQuotas, TenantUsage
from services.engine.retention import RetentionSweeper
from services.engine.revocations import Revocations
from services.engine.rpc.forward import Forwarder
from services.engine.rpc.server import SERVICE_NAMES, build_server
from services.engine.rpc.servicer import Limits
from services.engine.runner import Runner, RunnerSettings
from services.engine.scheduler import Scheduler
from services.engine.schedules import Schedules
from services.engine.store.embedded import DatabaseProcess
from services.engine.store.mongo import MongoStore
from services.engine.store.repository import ExecutionStore
from services.engine.webhook_runner import WebhookRunner
from services.metrics import MetricsServer
from services.ratelimit import RateLimiter
from services.tls import add_port

log = logging.getLogger(__name__)

# Between attempts to start the feed while the database cannot be reached.
FEED_RETRY_SECONDS = 1.0


class Engine:
    def __init__(
        self,
        settings: Settings,
        *,
        wrap_store: Callable[[ExecutionStore], ExecutionStore] | None = None,
    ) -> None:
        """`wrap_store` decorates the store the runner uses (fault injection, metrics)."""
        self.settings = settings
        self._wrap_store = wrap_store
        self.port = 0
        self._embedded: DatabaseProcess | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._store: MongoStore | None = None
        self._usage: TenantUsage | None = None
        self._revocations: Revocations | None = None
        self._forwarder: Forwarder | None = None
        self.feed: EventFeed | None = None
        self._mirror: QueueMirror | None = None
        # Deletes what ended long enough ago (retention.py); None while retention is off.
        self.retention: RetentionSweeper | None = None
        # Starts the executions of cron schedules when their times come (scheduler.py).
        self.scheduler: Scheduler | None = None
        self._feed_starter: asyncio.Task[None] | None = None
        self.runner: Runner | None = None
        self._server: Any = None
        self._health: Any = None
        self.webhooks: list[WebhookRunner] = []
        self.metrics = EngineMetrics()
        self.metrics_server = MetricsServer(
            self.metrics.registry, settings.host, settings.metrics_port, "ENGINE_METRICS_PORT"
        )

    async def start(self) -> None:
        settings = self.settings
        if not settings.auth_keys.trusted:
            raise ConfigError("the engine needs the deployment's trusted keys (auth_keys)")
        authority = TokenAuthority(settings.auth_keys)
        # First: a port in use stops the start before the database is up.
        self.metrics_server.start()
        uri = settings.mongodb_uri
        if uri is None:
            self._embedded = DatabaseProcess(settings.data_dir)
            # From the event loop's thread, which outlives the child (see DatabaseProcess).
            uri = await self._embedded.start_async()
            self._supervisor = asyncio.create_task(self._supervise(self._embedded))
            log.info(
                "embedded database started",
                extra={"path": str(self._embedded.path / "db")},
            )
        self._client = AsyncMongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000)
        self._store = MongoStore(self._client, settings.mongodb_database)
        await self._store.open()
        self._store.observe_commits(self.metrics.commit)
        hub = EventHub(settings.watch_queue, settings.watch_queue_bytes)
        self.feed = EventFeed(self._store, hub)
        self._forwarder = Forwarder(
            settings.tls,
            settings.max_message_bytes,
            # In its own name: taking, for its runners, attempts another engine holds.
            ServiceToken(authority, subject=settings.engine_id, role=ENGINE),
        )
        self.runner = Runner(
            self._wrap_store(self._store) if self._wrap_store else self._store,
            hub,
            RunnerSettings(
                engine_id=settings.engine_id,
                lease_seconds=settings.lease_seconds,
                blob_threshold_bytes=settings.blob_threshold_bytes,
                max_input_bytes=settings.max_input_bytes,
                max_result_bytes=settings.max_result_bytes,
                max_custom_data_bytes=settings.max_custom_data_bytes,
                max_progress_events=settings.max_progress_events,
            ),
            take_elsewhere=self._forwarder.take,
            metrics=self.metrics,
        )
        self._forwarder.on_unreachable = self.runner.forget_holder
        self._mirror = QueueMirror(self.runner.queue, self._store, self.runner.holds)
        self.feed.add_listener(self._mirror)
        self._usage = TenantUsage(
            self._store,
            max_running=settings.tenant_max_running_executions,
            max_stored_bytes=settings.tenant_max_stored_bytes,
        )
        await self._usage.open()
        limits = Limits(
            starts=RateLimiter(settings.start_rate, settings.start_burst),
            progress=RateLimiter(settings.progress_rate, settings.progress_burst),
            usage=self._usage,
        )
        quotas = CallQuotas.of(
            tenant_calls=settings.tenant_max_calls,
            tenant_long_calls=settings.tenant_max_long_calls,
            clients=settings.client_max_calls,
            runners=settings.runner_max_calls,
            health=settings.health_max_calls,
        )
        self._revocations = Revocations(self._store, authority)
        await self._revocations.open()
        self.scheduler = Scheduler(self._store, self.runner, self._usage, self.metrics)
        self._server, self._health = build_server(
            self.runner,
            authority,
            limits,
            quotas,
            self._revocations,
            self._forwarder,
            Schedules(self._store, self.runner, on_change=self.scheduler.poke),
            max_message_bytes=settings.max_message_bytes,
            max_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        self.port = add_port(self._server, f"{settings.host}:{settings.port}", settings.tls)
        # Recovery first, so that the first RPC finds the unfinished executions held again.
        await self.runner.open(advertised(settings, self.port))
        if self._store.others_alive:
            # Following the log before anyone can watch: a watcher's replay and the feed then
            # leave no event between them, whichever engine commits it.
            await self.feed.start()
        else:
            self._feed_starter = asyncio.create_task(self._start_feed_with_company())
        # After recovery: what this engine holds is not mirrored from the others.
        self._mirror.start()
        if settings.retention_days > 0:
            self.retention = RetentionSweeper(
                self._store,
                days=settings.retention_days,
                sweep_seconds=settings.retention_sweep_seconds,
                on_swept=self.metrics.swept,
            )
            self.retention.start()
        # After recovery: its starts are held under this engine's lease.
        self.scheduler.start()
        await self._server.start()
        for url in settings.webhook_urls:
            webhook = WebhookRunner(self.runner, url, settings.report_base_url)
            await webhook.start()
            self.webhooks.append(webhook)
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "engine serving",
            extra={
                "port": self.port,
                "metrics_port": self.metrics_server.port or None,
                "engine_id": settings.engine_id,
                "held": self.runner.held,
                "webhook_runners": list(settings.webhook_urls),
                "report_base_url": settings.report_base_url,
            },
        )

    async def stop(self, grace: float | None = None) -> None:
        """New RPCs get UNAVAILABLE at once; calls in flight get `grace` seconds to finish."""
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self.runner is not None:
            # Long polls answer now rather than hold the grace period: runners poll again
            # elsewhere, or here after the restart.
            self.runner.stop_polls()
        for webhook in self.webhooks:
            await webhook.stop()
        if self._server is not None:
            await self._server.stop(self.settings.grace_seconds if grace is None else grace)
        if self._feed_starter is not None:
            self._feed_starter.cancel()
            await asyncio.gather(self._feed_starter, return_exceptions=True)
        if self._mirror is not None:
            await self._mirror.stop()
        if self.retention is not None:
            await self.retention.stop()
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.runner is not None:
            await self.runner.close()
        if self._forwarder is not None:
            await self._forwarder.close()
        if self.feed is not None:
            await self.feed.stop()
        if self._usage is not None:
            await self._usage.close()
        if self._revocations is not None:
            await self._revocations.close()
        if self._store is not None:
            await self._store.close()
        if self._client is not None:
            await self._client.close()
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)
        await asyncio.to_thread(self.metrics_server.stop)

    async def _start_feed_with_company(self) -> None:
        """An engine alone publishes every event itself: the feed, which reads every event
        back from the database (measured: a third of the CPU a run costs), starts once another
        engine holds a lease (the lease loop looks every third of a lease), and tells the
        watchers and the queue to catch up with the log."""
        assert self._store is not None and self.feed is not None
        await self._store.company.wait()
        while True:
            try:
                await self.feed.start(catching_up=True)
                return
            except StoreUnavailable as exc:
                log.warning("event feed not started: %s", exc)
                await asyncio.sleep(FEED_RETRY_SECONDS)

    @staticmethod
    async def _supervise(database: DatabaseProcess) -> None:
        """Starts the embedded database again, on the same port, if it dies: meanwhile every
        write fails with UNAVAILABLE and nothing acknowledged is lost (its log is on disk)."""
        backoff = 0.5
        while True:
            await asyncio.sleep(1.0)
            if database.running:
                backoff = 0.5
                continue
            assert database.process is not None
            log.error(
                "embedded database exited; starting it again",
                extra={"returncode": database.process.returncode},
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            try:
                await database.start_async()
            except RuntimeError as exc:
                log.error("embedded database did not start: %s", exc)

    async def wait(self) -> None:
        await self._server.wait_for_termination()
