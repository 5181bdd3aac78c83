"""Reading settings from the environment, shared by every service's `Settings.from_env()`.

Each function reads one variable and fails with ConfigError naming it and its bad value, so
that a service refuses to start rather than misbehave later.
"""

from __future__ import annotations

import ipaddress
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


# Targets gRPC itself resolves, passed on as given: `dns:///engines:50051` (every address
# the name has), `ipv4:10.0.0.1:50051,10.0.0.2:50051`, `unix:/run/engine.sock`…
GRPC_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


def grpc_target(env: Mapping[str, str], name: str, default: str) -> str:
    """Where the engines are, as one gRPC target (services/tls.py dials it with the
    round_robin policy, so calls spread over every address and skip one that is down):

    - `host:port`; like the seed's variables, `http://host:port` is accepted and normalised,
      since gRPC would read the scheme as part of a DNS name;
    - a comma-separated list of `ip:port` (`[ipv6]:port`), made the `ipv4:`/`ipv6:` target
      that lists them all. gRPC resolves no list of names: for names, one DNS name that
      resolves to every engine, `dns:///NAME:PORT`;
    - any gRPC target with its scheme (GRPC_SCHEMES), as given."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if raw.lower().startswith(GRPC_SCHEMES):
        if not raw.partition(":")[2].strip("/"):
            raise ConfigError(f"{name}={raw!r} names no address")
        return raw
    entries = [entry.strip() for entry in raw.split(",") if entry.strip()]
    if len(entries) == 1:
        return _host_port(name, raw, entries[0])
    addresses = [_host_port(name, raw, entry) for entry in entries]
    families = {_ip_family(name, address) for address in addresses}
    if len(families) > 1:
        raise ConfigError(f"{name}={raw!r} mixes IPv4 and IPv6 addresses: gRPC takes one kind")
    if len(set(addresses)) != len(addresses):
        raise ConfigError(f"{name}={raw!r} lists an address twice")
    return f"{families.pop()}:{','.join(addresses)}"


def _host_port(name: str, raw: str, entry: str) -> str:
    target = entry.split("://", 1)[1] if "://" in entry else entry
    target = target.rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not host or "/" in target or not port.isdigit() or not 0 < int(port) < 65536:
        what = "host:port (or http://host:port)"
        if entry == raw:
            raise ConfigError(f"{name}={raw!r} is not {what}")
        raise ConfigError(f"{name}={raw!r}: {entry!r} is not {what}")
    return target


def _ip_family(name: str, address: str) -> str:
    host = address.rpartition(":")[0]
    try:
        ip = ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        raise ConfigError(
            f"{name}: {host!r} in a list of engines is not an IP address; gRPC resolves no "
            f"list of names: give one DNS name that resolves to every engine, dns:///NAME:PORT"
        ) from None
    if ip.version == 6 and not host.startswith("["):
        raise ConfigError(f"{name}: {address!r}: write an IPv6 address as [ADDRESS]:PORT")
    return f"ipv{ip.version}"
