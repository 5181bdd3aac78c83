"""How a client dials the engine: the gRPC channel options the gateway and the CLI share.

Keepalive finds a dead connection under a long WatchExecution within 30 s without provoking
the engine's too_many_pings (it allows a ping every 10 s). The reconnect backoff is capped so
that a restarted engine is reached again within a second or two. Idempotent calls are
retried by gRPC itself on UNAVAILABLE, a bounded three attempts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

# The engine's own cap (ENGINE_MAX_MESSAGE_BYTES): a 45 MB PDF in base64 fits.
MAX_MESSAGE_BYTES = 80 * 1024 * 1024

# Reads: safe to send again whatever happened to the first try.
IDEMPOTENT_READS = (
    ("discovery.engine.v1.ExecutionService", "GetExecution"),
    ("discovery.engine.v1.ExecutionService", "ListExecutions"),
    ("discovery.engine.v1.ExecutionService", "ListExecutionSteps"),
    ("discovery.engine.v1.WorkflowService", "GetWorkflow"),
    ("discovery.engine.v1.WorkflowService", "ListWorkflows"),
    ("discovery.engine.v1.StepQueueService", "GetStepQueue"),
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
