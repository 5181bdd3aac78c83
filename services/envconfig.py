"""Reading settings from the environment, shared by every service's `Settings.from_env()`.

Each function reads one variable and fails with ConfigError naming it and its bad value, so
that a service refuses to start rather than misbehave later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# One ConfigError and one way to read an engine target for the services and the client.
from discovery_client.errors import ConfigError
from discovery_client.settings import GRPC_SCHEMES, grpc_target

__all__ = ["GRPC_SCHEMES", "ConfigError", "boolean", "grpc_target", "integer", "number", "text"]


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
