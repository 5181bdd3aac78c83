"""Where the engines are (`--engine HOST:PORT[,…]`, else DISCOVERY_ENGINE, else
localhost:50051) and who the CLI is to them (DISCOVERY_TOKEN, else the file
DISCOVERY_TOKEN_FILE, else the `.discovery/token` that `make run` writes): the client
library's settings (discovery_client/settings.py), with the flag on top."""

from __future__ import annotations

import os
from collections.abc import Mapping

from discovery_client.channel import IDEMPOTENT_READS, channel_options
from discovery_client.errors import ConfigError
from discovery_client.settings import (
    DEFAULT_TARGET,
    ENGINE_ENV,
    GRPC_SCHEMES,
    Settings,
    grpc_target,
    tls_from_env,
    token_from_env,
)
from services.cli.errors import UsageError

__all__ = ["DEFAULT_TARGET", "ENGINE_ENV", "RETRIED_STARTS", "engine_settings", "engine_target"]

# Starts are retried too: the CLI always sends a request_id, so a retry finds the same run.
RETRIED_STARTS = channel_options(
    retried=[*IDEMPOTENT_READS, ("discovery.engine.v1.ExecutionService", "StartExecution")],
    reconnect_backoff_ms=(100, 1000),
)


def engine_settings(
    flag: str | None, timeout_seconds: float, environ: Mapping[str, str] = os.environ
) -> Settings:
    try:
        return Settings(
            target=engine_target(flag, environ),
            token=token_from_env(environ),
            tls=tls_from_env(environ),
            timeout_seconds=timeout_seconds,
        )
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def engine_target(flag: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The gRPC target to dial: `host:port` (`http://host:port` is accepted: the seed's URLs
    have it), a list of engines or a gRPC target, as the services read theirs."""
    source = "--engine" if flag is not None else ENGINE_ENV
    raw = flag if flag is not None else environ.get(ENGINE_ENV, "")
    if flag is not None and not flag.strip():
        raise UsageError("--engine: empty")
    scheme, sep, _ = raw.strip().partition("://")
    if sep and scheme.lower() != "http" and not raw.strip().lower().startswith(GRPC_SCHEMES):
        # The CLI dials plaintext or its own TLS settings: grpcs:// and the like would be a
        # silent downgrade, not what the user asked for.
        raise UsageError(f"{source}: {raw!r}: only plaintext host:port (or http://) is supported")
    try:
        return grpc_target({source: raw}, source, DEFAULT_TARGET)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
