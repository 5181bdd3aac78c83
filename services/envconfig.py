"""Reading settings from the environment, shared by every service's `Settings.from_env()`.

Each function reads one variable and fails with ConfigError naming it and its bad value, so
that a service refuses to start rather than misbehave later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


class ConfigError(ValueError):
    """A variable holds a value the service cannot use; the message names it."""


def text(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, "").strip() or default


def boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (true or false)")


def integer(
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


def number(
    env: Mapping[str, str], name: str, default: float, *, low: float, high: float = math.inf
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        bounds = f"{low:g}..{high:g}" if math.isfinite(high) else f">= {low:g}"
        raise ConfigError(f"{name}={raw!r} is out of range ({bounds})")
    return value


def grpc_target(env: Mapping[str, str], name: str, default: str) -> str:
    """`host:port`; like the seed's variables, `http://host:port` is accepted and normalised,
    since gRPC would read the scheme as part of a DNS name."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    target = raw.split("://", 1)[1] if "://" in raw else raw
    target = target.rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not host or "/" in target or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}={raw!r} is not host:port (or http://host:port)")
    return target
