"""Where the engines are and who the caller is to them, from the environment the CLI and the
services read:

    DISCOVERY_ENGINE       host:port, a list of ip:port, or a gRPC target (localhost:50051)
    DISCOVERY_TOKEN        the token every call carries; else the file DISCOVERY_TOKEN_FILE,
                           else `.discovery/token` (which `make run` writes)
    DISCOVERY_TLS_CA, DISCOVERY_TLS_CERT, DISCOVERY_TLS_KEY
                           mutual TLS: all three or none (plaintext)

Every bad value raises ConfigError naming the variable.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from discovery_client.channel import Tls
from discovery_client.errors import ConfigError

ENGINE_ENV = "DISCOVERY_ENGINE"
DEFAULT_TARGET = "localhost:50051"
TOKEN_ENV = "DISCOVERY_TOKEN"
TOKEN_FILE_ENV = "DISCOVERY_TOKEN_FILE"
LOCAL_TOKEN_FILE = Path(".discovery") / "token"
CA_ENV = "DISCOVERY_TLS_CA"
CERT_ENV = "DISCOVERY_TLS_CERT"
KEY_ENV = "DISCOVERY_TLS_KEY"
DEFAULT_TIMEOUT_SECONDS = 10.0
MIN_START_SECONDS = 60.0

# Targets gRPC itself resolves, passed on as given: `dns:///engines:50051` (every address
# the name has), `ipv4:10.0.0.1:50051,10.0.0.2:50051`, `unix:/run/engine.sock`…
GRPC_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


@dataclass(frozen=True)
class Settings:
    target: str = DEFAULT_TARGET
    token: str = ""
    tls: Tls | None = None
    # The deadline of each unary call.
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    # A start's (and an execute's, beyond its wait): it carries the whole document, which
    # takes a while to send and to store. None: timeout_seconds, but at least 60 s.
    start_timeout_seconds: float | None = None

    @property
    def start_deadline(self) -> float:
        if self.start_timeout_seconds is not None:
            return self.start_timeout_seconds
        return max(self.timeout_seconds, MIN_START_SECONDS)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] = os.environ,
        *,
        cwd: Path | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> Settings:
        return cls(
            target=grpc_target(environ, ENGINE_ENV, DEFAULT_TARGET),
            token=token_from_env(environ, cwd),
            tls=tls_from_env(environ),
            timeout_seconds=timeout_seconds,
        )


def token_from_env(environ: Mapping[str, str] = os.environ, cwd: Path | None = None) -> str:
    """The token every call carries. Never a command-line flag: those show in `ps`."""
    token = environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    named = environ.get(TOKEN_FILE_ENV, "").strip()
    path = Path(named) if named else (cwd or Path.cwd()) / LOCAL_TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        if named:
            raise ConfigError(f"{TOKEN_FILE_ENV}: {named!r} does not exist") from None
        raise ConfigError(
            f"no credentials: set {TOKEN_ENV} (or {TOKEN_FILE_ENV}), or run `make run` here,"
            f" which writes {LOCAL_TOKEN_FILE}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    if not token:
        raise ConfigError(f"{path} is empty")
    return token


def tls_from_env(env: Mapping[str, str] = os.environ) -> Tls | None:
    """All three variables, or none of them (plaintext); a partial set is a mistake."""
    given = [name for name in (CA_ENV, CERT_ENV, KEY_ENV) if env.get(name, "").strip()]
    if not given:
        return None
    if len(given) != 3:
        missing = sorted({CA_ENV, CERT_ENV, KEY_ENV} - set(given))
        raise ConfigError(f"TLS needs {CA_ENV}, {CERT_ENV} and {KEY_ENV}; missing {missing}")
    return Tls(_read(env, CA_ENV), _read(env, CERT_ENV), _read(env, KEY_ENV))


def _read(env: Mapping[str, str], name: str) -> bytes:
    path = env[name].strip()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{name}={path!r}: {exc.strerror}") from None


def grpc_target(env: Mapping[str, str], name: str, default: str) -> str:
    """Where the engines are, as one gRPC target (channel.py dials it with the round_robin
    policy, so calls spread over every address and skip one that is down):

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
