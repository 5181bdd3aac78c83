"""How a client dials the engine: its channel (plaintext or mutual TLS) and options.

Keepalive finds a dead connection under a long WatchExecution within 30 s without provoking
the engine's too_many_pings (it allows a ping every 10 s). The reconnect backoff is capped so
that a restarted engine is reached again within a second or two. Idempotent calls are
retried by gRPC itself on UNAVAILABLE, a bounded three attempts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

# The engine's own cap (ENGINE_MAX_MESSAGE_BYTES): a 45 MB PDF in base64 fits.
MAX_MESSAGE_BYTES = 80 * 1024 * 1024

# Reads: safe to send again whatever happened to the first try.
IDEMPOTENT_READS = (
    ("discovery.engine.v1.ExecutionService", "GetExecution"),
    ("discovery.engine.v1.ExecutionService", "ListExecutions"),
    ("discovery.engine.v1.ExecutionService", "ListExecutionSteps"),
    ("discovery.engine.v1.WorkflowService", "GetWorkflow"),
    ("discovery.engine.v1.WorkflowService", "ListWorkflows"),
    ("discovery.engine.v1.WorkflowService", "ListWorkflowVersions"),
    ("discovery.engine.v1.StepQueueService", "GetStepQueue"),
    ("discovery.engine.v1.ScheduleService", "GetSchedule"),
    ("discovery.engine.v1.ScheduleService", "ListSchedules"),
)


def channel_options(
    *,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    retried: Iterable[tuple[str, str]] = IDEMPOTENT_READS,
    reconnect_backoff_ms: tuple[int, int] = (200, 2000),
) -> list[tuple[str, Any]]:
    """`retried` lists (service, method) pairs gRPC may send again on UNAVAILABLE: only
    idempotent ones (a start only when it carries a request_id)."""
    service_config = {
        "methodConfig": [
            {
                "name": [{"service": s, "method": m} for s, m in retried],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
    initial_backoff, max_backoff = reconnect_backoff_ms
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        # grpcio waits this long for a keepalive ping's ACK (default 60 s), not the above.
        ("grpc.http2.ping_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # No min_reconnect_backoff_ms: gRPC also takes it as the connect timeout, too short
        # for a distant engine.
        ("grpc.initial_reconnect_backoff_ms", initial_backoff),
        ("grpc.max_reconnect_backoff_ms", max_backoff),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(service_config)),
    ]


@dataclass(frozen=True)
class Tls:
    """PEM bytes of the private CA, the caller's certificate chain and its private key
    (DISCOVERY_TLS_CA, DISCOVERY_TLS_CERT, DISCOVERY_TLS_KEY: settings.py). The services
    serve with the same three (services/tls.py)."""

    ca: bytes
    cert: bytes
    key: bytes

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def balanced(target: str, options: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """`options` plus gRPC's round_robin policy: with a target of several engines (a list, or
    a name with several addresses: settings.grpc_target) every call goes to the next engine
    that is connected, and one that is down is skipped until it is back. A list's authority
    (the name TLS checks the certificate against) is its first address: gRPC's own would be
    the whole list, which no certificate names."""
    balancing: list[tuple[str, Any]] = [("grpc.lb_policy_name", "round_robin")]
    scheme, _, addresses = target.partition(":")
    if scheme in ("ipv4", "ipv6") and "," in addresses:
        balancing.append(("grpc.default_authority", addresses.split(",")[0]))
    return [*options, *balancing]


def aio_channel(
    target: str,
    tls: Tls | None,
    *,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
) -> grpc.aio.Channel:
    options = balanced(target, options)
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(
        target, tls.channel_credentials(), options=options, interceptors=interceptors
    )


def channel(
    target: str, tls: Tls | None, *, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """A blocking channel (the sync client, the services' health check)."""
    options = balanced(target, options)
    if tls is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, tls.channel_credentials(), options=options)
