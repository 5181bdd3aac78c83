"""Engine settings, read from the environment once at start-up."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    """A variable holds a value the engine cannot use; the message names it."""


def _number(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be >= {minimum:g}")
    return value


def _port(name: str, default: int) -> int:
    value = _number(name, default)
    if value != int(value) or not 0 <= value <= 65535:
        raise ConfigError(f"{name}={value!r} is not a port number")
    return int(value)


def grpc_target(url: str) -> str:
    """The seed's variables hold URLs (`http://localhost:8000`); gRPC wants host:port."""
    for scheme in ("http://", "https://", "grpc://", "dns:///"):
        if url.startswith(scheme):
            url = url[len(scheme) :]
    return url.rstrip("/")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 50051
    # Unset: an embedded SecantusDB server on `data_dir`.
    mongodb_uri: str | None = None
    mongodb_database: str = "discovery"
    data_dir: Path = Path(".discovery")
    pioneer_targets: tuple[str, ...] = ("localhost:50052",)
    # Stable across restarts, so a restarted engine takes its own executions back at once
    # instead of waiting for their leases to expire.
    engine_id: str = ""
    lease_seconds: float = 15.0
    grace_seconds: float = 10.0
    max_concurrent_rpcs: int = 1000
    max_message_bytes: int = 80 * 1024 * 1024
    # Input strings at least this long are stored as blobs, not in the execution.
    blob_threshold_bytes: int = 64 * 1024
    max_input_bytes: int = 1024 * 1024
    max_result_bytes: int = 256 * 1024
    max_custom_data_bytes: int = 16 * 1024
    watch_queue: int = 1000

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        host = env.get("ENGINE_HOST", cls.host)
        port = _port("ENGINE_PORT", cls.port)
        targets = tuple(
            grpc_target(t.strip())
            for t in env.get("PIONEER_URL", ",".join(cls.pioneer_targets)).split(",")
            if t.strip()
        )
        if not targets:
            raise ConfigError("PIONEER_URL is empty")
        return cls(
            host=host,
            port=port,
            mongodb_uri=env.get("MONGODB_URI") or None,
            mongodb_database=env.get("MONGODB_DATABASE", cls.mongodb_database),
            data_dir=Path(env.get("DISCOVERY_DATA_DIR", str(cls.data_dir))),
            pioneer_targets=targets,
            engine_id=env.get("ENGINE_ID") or f"{socket.gethostname()}:{port}",
            lease_seconds=_number("ENGINE_LEASE_SECONDS", cls.lease_seconds, minimum=1.0),
            grace_seconds=_number("ENGINE_GRACE_SECONDS", cls.grace_seconds),
            max_concurrent_rpcs=int(
                _number("ENGINE_MAX_CONCURRENT_RPCS", cls.max_concurrent_rpcs, minimum=1)
            ),
            max_message_bytes=int(
                _number("ENGINE_MAX_MESSAGE_BYTES", cls.max_message_bytes, minimum=1024)
            ),
        )
