"""Pioneer's settings, read from the environment once at start and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.pioneer.errors import ConfigError


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 50052
    # The engine's gRPC address, where steps report to.
    discovery_url: str = "localhost:50051"
    max_concurrent_steps: int = 64
    # Document steps: the largest decoded upload, and the most pages a PDF may have.
    max_document_bytes: int = 48 * 1024 * 1024
    max_pdf_pages: int = 2000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            host=_text(env, "PIONEER_HOST", defaults.host),
            port=_integer(env, "PIONEER_PORT", defaults.port, low=0, high=65535),
            discovery_url=_grpc_target(env, "DISCOVERY_URL", defaults.discovery_url),
            max_concurrent_steps=_integer(
                env, "PIONEER_MAX_CONCURRENT_STEPS", defaults.max_concurrent_steps, low=1
            ),
            # Under the engine's blob cap (64 MiB): the decoded document is stored there.
            max_document_bytes=_integer(
                env,
                "PIONEER_MAX_DOCUMENT_BYTES",
                defaults.max_document_bytes,
                low=1,
                high=64 * 1024 * 1024,
            ),
            max_pdf_pages=_integer(env, "PIONEER_MAX_PDF_PAGES", defaults.max_pdf_pages, low=1),
        )


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _integer(
    env: Mapping[str, str], name: str, default: int, *, low: int, high: int | None = None
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"{name}={raw!r} is out of range ({bounds})")
    return value


def _grpc_target(env: Mapping[str, str], name: str, default: str) -> str:
    """`host:port`; the seed wrote `http://host:port`, so a scheme and a trailing `/` are dropped.

    gRPC itself would read `http://…` as a DNS name with a path, so the form is normalised here.
    """
    raw = env.get(name, "").strip()
    if not raw:
        return default
    target = raw.split("://", 1)[1] if "://" in raw else raw
    target = target.rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not host or "/" in target or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}={raw!r} is not host:port (or http://host:port)")
    return target
