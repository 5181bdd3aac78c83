"""Engine settings, read from the environment once at start-up."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from services.envconfig import ConfigError, integer, number, text
from services.tls import Tls, tls_from_env
from services.token_keys import AuthKeys, keys_from_env

__all__ = ["ConfigError", "Settings"]


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 50051
    # Prometheus metrics (services/metrics.py), on `host`; 0: not served.
    metrics_port: int = 9101
    # Unset: an embedded SecantusDB server on `data_dir`.
    mongodb_uri: str | None = None
    mongodb_database: str = "discovery"
    data_dir: Path = Path(".discovery")
    # Stable across restarts, so a restarted engine takes its own executions back at once
    # instead of waiting for their leases to expire.
    engine_id: str = ""
    # Where the other engines reach this one: calls for the executions it holds are sent
    # there. Empty: this host's name and the port it serves on.
    advertise_address: str = ""
    lease_seconds: float = 15.0
    grace_seconds: float = 10.0
    # gRPC's own cap on calls in flight: the last resort, kept above the sum of the pools
    # below (client + runner + health calls), which the quota interceptor enforces first.
    max_concurrent_rpcs: int = 1700
    # Calls in flight (services/engine/quotas.py). Each tenant: unary calls, and long ones
    # (WatchExecution streams, sync ExecuteWorkflow); all tenants' calls together; step
    # runners' reports, polls and blob transfers (a pool client load cannot take); health
    # checks, which need no credentials.
    tenant_max_calls: int = 400
    tenant_max_long_calls: int = 200
    client_max_calls: int = 1000
    runner_max_calls: int = 500
    health_max_calls: int = 32
    # Per tenant: executions not yet ended, and bytes stored (inputs and blobs).
    tenant_max_running_executions: int = 10_000
    tenant_max_stored_bytes: int = 64 * 1024**3
    # Executions that ended this many days ago are deleted with everything stored for them
    # (services/engine/retention.py); 0: kept for good. A fraction of a day is allowed.
    retention_days: float = 30.0
    # Between two rounds of retention.
    retention_sweep_seconds: float = 600.0
    max_message_bytes: int = 80 * 1024 * 1024
    # Input strings at least this long are stored as blobs, not in the execution.
    blob_threshold_bytes: int = 64 * 1024
    max_input_bytes: int = 1024 * 1024
    max_result_bytes: int = 256 * 1024
    max_custom_data_bytes: int = 16 * 1024
    # Events held for one watcher that reads slower than they come, in count and in bytes
    # (their data as JSON); past either it is told to resume from the log (WATCHER_TOO_SLOW).
    watch_queue: int = 1000
    watch_queue_bytes: int = 8 * 1024 * 1024
    # Per tenant: starts a second, and the burst above it (RATE_LIMITED beyond).
    start_rate: float = 100.0
    start_burst: int = 200
    # Per attempt: progress events a second; more are kept as heartbeats only. Room for a
    # step that reports every page of a fast PDF; a loop reporting as fast as it can is not.
    progress_rate: float = 50.0
    progress_burst: int = 200
    # Per execution: progress events logged in all; beyond, reports are refused
    # (EVENT_LIMIT_REACHED) and the steps go on.
    max_progress_events: int = 10_000
    # The keys tokens are verified with, and the engine's own signing key (watch tokens, calls
    # to HTTP runners) (services/token_keys.py); never printed.
    auth_keys: AuthKeys = field(default=AuthKeys(()), repr=False)
    # Mutual TLS for its server (services/tls.py); None: plaintext.
    tls: Tls | None = field(default=None, repr=False)
    # HTTP step runners the engine pushes attempts to (services/engine/webhook_runner.py), from
    # PIONEER_URLS (comma-separated) or the seed's PIONEER_URL when they are http(s) URLs.
    webhook_urls: tuple[str, ...] = ()
    # The gateway's public base URL: a pushed attempt's report_urls are built under it.
    report_base_url: str = "http://localhost:8080"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        d = cls()
        port = integer(env, "ENGINE_PORT", d.port, low=0, high=65535)
        settings = cls(
            host=text(env, "ENGINE_HOST", d.host),
            port=port,
            metrics_port=integer(env, "ENGINE_METRICS_PORT", d.metrics_port, low=0, high=65535),
            mongodb_uri=env.get("MONGODB_URI", "").strip() or None,
            mongodb_database=text(env, "MONGODB_DATABASE", d.mongodb_database),
            data_dir=Path(text(env, "DISCOVERY_DATA_DIR", str(d.data_dir))),
            engine_id=text(env, "ENGINE_ID", f"{socket.gethostname()}:{port}"),
            advertise_address=env.get("ENGINE_ADVERTISE_ADDRESS", "").strip(),
            lease_seconds=number(env, "ENGINE_LEASE_SECONDS", d.lease_seconds, low=1.0),
            grace_seconds=number(env, "ENGINE_GRACE_SECONDS", d.grace_seconds, low=0.0),
            max_concurrent_rpcs=integer(
                env, "ENGINE_MAX_CONCURRENT_RPCS", d.max_concurrent_rpcs, low=1
            ),
            tenant_max_calls=integer(env, "ENGINE_TENANT_MAX_CALLS", d.tenant_max_calls, low=1),
            tenant_max_long_calls=integer(
                env, "ENGINE_TENANT_MAX_LONG_CALLS", d.tenant_max_long_calls, low=1
            ),
            client_max_calls=integer(env, "ENGINE_CLIENT_MAX_CALLS", d.client_max_calls, low=1),
            runner_max_calls=integer(env, "ENGINE_RUNNER_MAX_CALLS", d.runner_max_calls, low=1),
            health_max_calls=integer(env, "ENGINE_HEALTH_MAX_CALLS", d.health_max_calls, low=1),
            tenant_max_running_executions=integer(
                env,
                "ENGINE_TENANT_MAX_RUNNING_EXECUTIONS",
                d.tenant_max_running_executions,
                low=1,
            ),
            tenant_max_stored_bytes=integer(
                env, "ENGINE_TENANT_MAX_STORED_BYTES", d.tenant_max_stored_bytes, low=1
            ),
            retention_days=number(env, "DISCOVERY_RETENTION_DAYS", d.retention_days, low=0.0),
            retention_sweep_seconds=number(
                env, "DISCOVERY_RETENTION_SWEEP_SECONDS", d.retention_sweep_seconds, low=0.1
            ),
            max_message_bytes=integer(
                env, "ENGINE_MAX_MESSAGE_BYTES", d.max_message_bytes, low=1024 * 1024
            ),
            watch_queue_bytes=integer(
                env, "ENGINE_WATCH_QUEUE_BYTES", d.watch_queue_bytes, low=64 * 1024
            ),
            start_rate=number(env, "ENGINE_START_RATE", d.start_rate, low=0.01),
            start_burst=integer(env, "ENGINE_START_BURST", d.start_burst, low=1),
            progress_rate=number(env, "ENGINE_PROGRESS_RATE", d.progress_rate, low=0.01),
            progress_burst=integer(env, "ENGINE_PROGRESS_BURST", d.progress_burst, low=1),
            max_progress_events=integer(
                env, "ENGINE_MAX_PROGRESS_EVENTS", d.max_progress_events, low=1
            ),
            auth_keys=keys_from_env(env),
            tls=tls_from_env(env),
            webhook_urls=webhook_urls(env),
            report_base_url=http_url(env, "ENGINE_REPORT_BASE_URL", d.report_base_url),
        )
        pools = settings.client_max_calls + settings.runner_max_calls + settings.health_max_calls
        if settings.max_concurrent_rpcs <= pools:
            # At or below the pools' sum, gRPC's cap would refuse runners' reports once
            # clients fill theirs: the very starvation the pools are there to prevent.
            raise ConfigError(
                f"ENGINE_MAX_CONCURRENT_RPCS={settings.max_concurrent_rpcs} must be above "
                f"ENGINE_CLIENT_MAX_CALLS + ENGINE_RUNNER_MAX_CALLS + ENGINE_HEALTH_MAX_CALLS "
                f"({pools})"
            )
        return settings


def advertised(settings: Settings, port: int) -> str:
    """The address other engines dial: ENGINE_ADVERTISE_ADDRESS, or this host and `port` (the
    one bound, when ENGINE_PORT is 0)."""
    if settings.advertise_address:
        return settings.advertise_address
    host = settings.host
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = socket.gethostname()
    return f"{host}:{port}"


def http_url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"{name}={raw!r} is not an http:// or https:// URL")
    if "@" in parts.netloc:
        # It would show in logs and in the queue's runner list (webhook:<url>).
        raise ConfigError(f"{name}: a URL with credentials in it is not supported")
    return raw.rstrip("/")


def webhook_urls(env: Mapping[str, str]) -> tuple[str, ...]:
    """The HTTP runners to push to. `PIONEER_URLS` (comma-separated) wins over the seed's
    `PIONEER_URL`; an entry that is not an http(s) URL (a gRPC `host:port`, as deployments
    from before the step queue set it) names a runner that pulls, so it is skipped here and
    `__main__` says so."""
    name = "PIONEER_URLS" if env.get("PIONEER_URLS", "").strip() else "PIONEER_URL"
    urls = []
    for part in env.get(name, "").split(","):
        if not part.strip() or not is_http_url(part):
            continue
        url = http_url({name: part}, name, "")
        if url not in urls:
            urls.append(url)
    return tuple(urls)


def is_http_url(value: str) -> bool:
    return value.strip().lower().startswith(("http://", "https://"))
