"""The gateway's client to the engine: the client library's (discovery_client) on one
grpc.aio channel, with the gateway's deadline and message cap. Each request's calls carry the
token its caller sent (`with_credentials`, auth.engine_for), so the engine decides what that
caller may do and see; the engine's refusals become HTTP answers in errors.py."""

from __future__ import annotations

from typing import Any

from discovery_client import AsyncClient
from discovery_client import Settings as ClientSettings
from discovery_client.channel import IDEMPOTENT_READS
from discovery_client.channel import channel_options as client_channel_options
from services import tracing
from services.gateway.config import Settings


def channel_options(settings: Settings) -> list[tuple[str, Any]]:
    # Reads only: a start is sent again by the client who sent it, with its idempotency key.
    return client_channel_options(
        max_message_bytes=settings.engine_max_message_bytes, retried=IDEMPOTENT_READS
    )


def engine_client(settings: Settings) -> AsyncClient:
    """Without credentials: every call is made `with_credentials` of someone."""
    return AsyncClient(
        ClientSettings(
            settings.engine_target,
            tls=settings.tls,
            timeout_seconds=settings.rpc_timeout_seconds,
            start_timeout_seconds=settings.rpc_timeout_seconds,
        ),
        options=channel_options(settings),
        # Each request's calls carry its trace (none while tracing is off).
        interceptors=tracing.grpc_client_interceptors("gateway"),
    )
