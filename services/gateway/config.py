"""Gateway settings, read from the environment once at start-up and passed down.

A bad value stops the gateway at start with the variable named, never later at a request.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.auth import CLIENT, DEFAULT_TENANT
from services.envconfig import ConfigError, boolean, grpc_target, integer, number, text
from services.tls import Tls, tls_from_env
from services.token_keys import AuthKeys, keys_from_env

__all__ = ["ConfigError", "Settings"]

MIB = 1024 * 1024
MAX_JSON_DEPTH = 32

ANONYMOUS_ACCESS = "GATEWAY_ANONYMOUS_ACCESS"
ANONYMOUS_TENANT = "GATEWAY_ANONYMOUS_TENANT"
ANONYMOUS_ROLE = "GATEWAY_ANONYMOUS_ROLE"
TRUSTED_NETWORK = "GATEWAY_TRUSTED_NETWORK"
# What a caller without credentials may be: a client of one tenant. Never admin (defining
# workflows), runner or engine (reporting steps, pushing attempts: service identities), nor
# watcher (a token scoped to one execution, which an anonymous caller has none of).
ANONYMOUS_ROLES = frozenset({CLIENT})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether an address to bind (or a Host header's name) stays on this machine."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _origins(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    origins = []
    for raw in env.get(name, "").split(","):
        origin = raw.strip().rstrip("/")
        if not origin:
            continue
        scheme, sep, rest = origin.partition("://")
        if origin != "*" and (
            not sep or scheme not in ("http", "https") or not rest or "/" in rest
        ):
            raise ConfigError(f"{name}: {origin[:100]!r} is not an origin (scheme://host[:port])")
        origins.append(origin)
    if "*" in origins:
        # Any origin with credentials allowed is every website a user visits acting as them.
        raise ConfigError(f"{name}: '*' is not accepted; list the origins")
    return tuple(origins)


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw)
    if not path.is_file():
        raise ConfigError(f"{name}={raw!r}: no such file")
    return path


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    # Prometheus metrics (services/metrics.py), on `host`; 0: not served.
    metrics_port: int = 9103
    # The engine's gRPC address, host:port.
    engine_target: str = "localhost:50051"
    # Request bodies: a 45 MB PDF in base64 plus its envelope fits in 64 MiB. Compressed bodies
    # are inflated while read and the inflated size is what counts.
    max_body_bytes: int = 64 * MIB
    # JSON nesting allowed in a body (the body itself is level 1), and the most there can be:
    # the engine keeps documents within 32 levels, and protobuf decodes a Struct of 33
    # levels of objects at most (each costs it three levels of message, against a limit of
    # 100), less where a document sits deeper in a message (the status, the events).
    max_json_depth: int = MAX_JSON_DEPTH
    # Deadline of every unary call to the engine.
    rpc_timeout_seconds: float = 10.0
    # Bounded wait of the synchronous `POST /execute/`; the engine caps it at 300 s.
    sync_wait_seconds: float = 30.0
    # A WatchExecution call lasts at most this long, then it is resumed from its last seq:
    # every outbound call keeps a deadline, even a stream that follows a run for hours.
    watch_segment_seconds: float = 300.0
    # How long a live stream keeps trying to reach an engine that went away.
    watch_retry_seconds: float = 30.0
    engine_max_message_bytes: int = 80 * MIB
    # WebSocket: ping interval (a client that misses the pong for half of it is dropped),
    # the cap on one client frame, and the per-socket send queue.
    ws_heartbeat_seconds: float = 20.0
    ws_max_message_bytes: int = 64 * 1024
    # What one live stream may hold for its client, the snapshot and a backlog from the ring
    # included; over it the client is cut off and resumes with its last seq.
    stream_queue_messages: int = 1000
    stream_queue_bytes: int = 4 * MIB
    # A snapshot bigger than this (or than half the queue) is sent without its big fields
    # and with a pointer to the status route.
    stream_snapshot_bytes: int = 1 * MIB
    # Kernel send buffer of a live stream's socket (0 leaves it to the kernel). Linux grows it
    # to 4 MiB per socket otherwise: memory no one accounts for, behind which a stalled client
    # hides for megabytes before its queue notices.
    stream_send_buffer_bytes: int = 256 * 1024
    # Latest events each execution's shared feed keeps, for clients joining a little behind.
    feed_ring_messages: int = 256
    feed_ring_bytes: int = 2 * MIB
    # Live streams (WebSocket and SSE) held at once: in total and per client address.
    max_streams: int = 10_000
    max_streams_per_client: int = 1_000
    # Live streams of all the principals of one tenant together (services/gateway/quotas.py).
    max_streams_per_tenant: int = 2_000
    # How fast one caller may open live streams, and the burst above that rate.
    stream_open_rate: float = 20.0
    stream_open_burst: int = 200
    # Browser origins allowed to open a WebSocket; empty allows any. Unset in the environment,
    # it is the CORS list (below) when that is set. The gateway's own origin is always allowed.
    ws_allowed_origins: tuple[str, ...] = ()
    # Browser origins that may call the REST API from their pages (CORS, credentials allowed);
    # empty: no cross-origin access at all.
    cors_origins: tuple[str, ...] = ()
    # Requests without credentials admitted as one principal: a client of this tenant. Off
    # unless asked for; refused at start on an address other machines reach, unless the
    # network is declared trusted.
    anonymous_access: bool = False
    anonymous_tenant: str = DEFAULT_TENANT
    anonymous_role: str = CLIENT
    trusted_network: bool = False
    # Graceful stop: open streams are told to go away, requests in flight get this long.
    shutdown_seconds: float = 10.0
    # The deployment's trusted keys and the gateway's own signing key (services/token_keys.py):
    # the gateway checks every caller's token before anything else, and signs watch tokens,
    # the reports of HTTP runners that send only their attempt token and, if it admits
    # anonymous callers, their client token. Never printed.
    auth_keys: AuthKeys = field(default=AuthKeys(()), repr=False)
    # Mutual TLS towards the engine (services/tls.py); None: plaintext.
    tls: Tls | None = field(default=None, repr=False)
    # HTTPS on the public edge: a certificate browsers trust, and its key. Unset: plain HTTP,
    # for a gateway behind a terminating proxy or on one machine.
    https_cert: Path | None = None
    https_key: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        d = cls()
        target_name = "ENGINE_URL" if env.get("ENGINE_URL", "").strip() else "DISCOVERY_ENGINE"
        cors_origins = _origins(env, "GATEWAY_CORS_ORIGINS")
        ws_origins = (
            _origins(env, "GATEWAY_WS_ALLOWED_ORIGINS")
            if env.get("GATEWAY_WS_ALLOWED_ORIGINS", "").strip()
            else cors_origins
        )
        settings = cls(
            host=text(env, "GATEWAY_HOST", d.host),
            port=integer(env, "GATEWAY_PORT", d.port, low=0, high=65535),
            metrics_port=integer(env, "GATEWAY_METRICS_PORT", d.metrics_port, low=0, high=65535),
            engine_target=grpc_target(env, target_name, d.engine_target),
            max_body_bytes=integer(env, "GATEWAY_MAX_BODY_BYTES", d.max_body_bytes, low=1024),
            max_json_depth=integer(
                env, "GATEWAY_MAX_JSON_DEPTH", d.max_json_depth, low=2, high=MAX_JSON_DEPTH
            ),
            rpc_timeout_seconds=number(
                env, "GATEWAY_RPC_TIMEOUT_SECONDS", d.rpc_timeout_seconds, low=0.1
            ),
            sync_wait_seconds=number(
                env, "GATEWAY_SYNC_WAIT_SECONDS", d.sync_wait_seconds, low=0.1, high=300.0
            ),
            watch_segment_seconds=number(
                env, "GATEWAY_WATCH_SEGMENT_SECONDS", d.watch_segment_seconds, low=1.0
            ),
            watch_retry_seconds=number(
                env, "GATEWAY_WATCH_RETRY_SECONDS", d.watch_retry_seconds, low=0.0
            ),
            engine_max_message_bytes=integer(
                env,
                "GATEWAY_ENGINE_MAX_MESSAGE_BYTES",
                d.engine_max_message_bytes,
                low=1024 * 1024,
            ),
            ws_heartbeat_seconds=number(
                env, "GATEWAY_WS_HEARTBEAT_SECONDS", d.ws_heartbeat_seconds, low=0.5
            ),
            ws_max_message_bytes=integer(
                env, "GATEWAY_WS_MAX_MESSAGE_BYTES", d.ws_max_message_bytes, low=1024
            ),
            stream_queue_messages=integer(
                env, "GATEWAY_STREAM_QUEUE_MESSAGES", d.stream_queue_messages, low=1
            ),
            stream_queue_bytes=integer(
                env, "GATEWAY_STREAM_QUEUE_BYTES", d.stream_queue_bytes, low=1024
            ),
            stream_snapshot_bytes=integer(
                env, "GATEWAY_STREAM_SNAPSHOT_BYTES", d.stream_snapshot_bytes, low=1024
            ),
            stream_send_buffer_bytes=integer(
                env, "GATEWAY_STREAM_SEND_BUFFER_BYTES", d.stream_send_buffer_bytes, low=0
            ),
            feed_ring_messages=integer(
                env, "GATEWAY_FEED_RING_MESSAGES", d.feed_ring_messages, low=1
            ),
            feed_ring_bytes=integer(env, "GATEWAY_FEED_RING_BYTES", d.feed_ring_bytes, low=1024),
            max_streams=integer(env, "GATEWAY_MAX_STREAMS", d.max_streams, low=1),
            max_streams_per_client=integer(
                env, "GATEWAY_MAX_STREAMS_PER_CLIENT", d.max_streams_per_client, low=1
            ),
            max_streams_per_tenant=integer(
                env, "GATEWAY_MAX_STREAMS_PER_TENANT", d.max_streams_per_tenant, low=1
            ),
            stream_open_rate=number(env, "GATEWAY_STREAM_OPEN_RATE", d.stream_open_rate, low=0.01),
            stream_open_burst=integer(env, "GATEWAY_STREAM_OPEN_BURST", d.stream_open_burst, low=1),
            ws_allowed_origins=ws_origins,
            cors_origins=cors_origins,
            anonymous_access=boolean(env, ANONYMOUS_ACCESS, d.anonymous_access),
            anonymous_tenant=text(env, ANONYMOUS_TENANT, d.anonymous_tenant),
            anonymous_role=text(env, ANONYMOUS_ROLE, d.anonymous_role),
            trusted_network=boolean(env, TRUSTED_NETWORK, d.trusted_network),
            shutdown_seconds=number(env, "GATEWAY_SHUTDOWN_SECONDS", d.shutdown_seconds, low=0.0),
            auth_keys=keys_from_env(env),
            tls=tls_from_env(env),
            https_cert=_path(env, "GATEWAY_TLS_CERT"),
            https_key=_path(env, "GATEWAY_TLS_KEY"),
        )
        if (settings.https_cert is None) != (settings.https_key is None):
            raise ConfigError("GATEWAY_TLS_CERT and GATEWAY_TLS_KEY go together")
        settings.check_anonymous_access()
        return settings

    def check_anonymous_access(self) -> None:
        """Refuses anonymous access that is not a client of a tenant, or that other machines
        could reach without the network being declared trusted (ConfigError, names the
        variables). Also called by `create_app`, for settings not read from the environment."""
        if not self.anonymous_access:
            return
        if self.anonymous_role not in ANONYMOUS_ROLES:
            allowed = ", ".join(sorted(ANONYMOUS_ROLES))
            raise ConfigError(
                f"{ANONYMOUS_ROLE}={self.anonymous_role!r}: a caller without credentials may "
                f"only be {allowed}; never admin, runner, engine or watcher"
            )
        tenant = self.anonymous_tenant
        if not tenant or len(tenant) > 128 or not tenant.isprintable() or " " in tenant:
            raise ConfigError(f"{ANONYMOUS_TENANT}={tenant[:100]!r} is not a tenant name")
        if not self.auth_keys.may_sign(self.anonymous_role, tenant):
            raise ConfigError(
                f"{ANONYMOUS_ACCESS}=true: the gateway signs the anonymous caller's token, and "
                f"its key (DISCOVERY_SIGNING_KEY_FILE) may not sign {self.anonymous_role!r} "
                f"tokens for tenant {tenant!r}: grant it that in DISCOVERY_TRUSTED_KEYS_FILE"
                f' ("discovery_grants": {{"{self.anonymous_role}": ["{tenant}"]}})'
            )
        if not is_loopback(self.host) and not self.trusted_network:
            raise ConfigError(
                f"{ANONYMOUS_ACCESS}=true admits requests without credentials, and "
                f"GATEWAY_HOST={self.host!r} is reachable from other machines: bind to "
                f"127.0.0.1, or set {TRUSTED_NETWORK}=true if only trusted clients reach "
                "this network"
            )
