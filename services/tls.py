"""Mutual TLS between the services, when a deployment gives them certificates.

One convention for every service: `DISCOVERY_TLS_CA` is the private CA that signs every
service's certificate, and `DISCOVERY_TLS_CERT` / `DISCOVERY_TLS_KEY` are this service's own,
used both to serve (engine, pioneer) and to call (gateway, pioneer, engine, CLI). With them,
every gRPC server asks for a client certificate signed by the CA, and every client checks the
server's certificate against the CA and the name it dialled (SAN). Without them, plaintext:
the one-machine default of `make run`, where tokens still authenticate every call.

The gateway's public HTTPS edge is separate (GATEWAY_TLS_CERT / GATEWAY_TLS_KEY): browsers
trust a public CA, not the private one.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from services.envconfig import ConfigError

CA_ENV = "DISCOVERY_TLS_CA"
CERT_ENV = "DISCOVERY_TLS_CERT"
KEY_ENV = "DISCOVERY_TLS_KEY"


@dataclass(frozen=True)
class Tls:
    """PEM bytes of the CA, this service's certificate chain and its private key."""

    ca: bytes
    cert: bytes
    key: bytes

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def _read(env: Mapping[str, str], name: str) -> bytes:
    path = env[name].strip()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{name}={path!r}: {exc.strerror}") from None


def tls_from_env(env: Mapping[str, str]) -> Tls | None:
    """All three variables, or none of them (plaintext); a partial set is a mistake."""
    given = [name for name in (CA_ENV, CERT_ENV, KEY_ENV) if env.get(name, "").strip()]
    if not given:
        return None
    if len(given) != 3:
        missing = sorted({CA_ENV, CERT_ENV, KEY_ENV} - set(given))
        raise ConfigError(f"TLS needs {CA_ENV}, {CERT_ENV} and {KEY_ENV}; missing {missing}")
    return Tls(_read(env, CA_ENV), _read(env, CERT_ENV), _read(env, KEY_ENV))


def add_port(server: grpc.aio.Server, address: str, tls: Tls | None) -> int:
    port: int
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, tls.server_credentials())
    return port


def balanced(target: str, options: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """`options` plus gRPC's round_robin policy: with a target of several engines (a list, or
    a name with several addresses: services/envconfig.grpc_target) every call goes to the next
    engine that is connected, and one that is down is skipped until it is back. A list's
    authority (the name TLS checks the certificate against) is its first address: gRPC's own
    would be the whole list, which no certificate names."""
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
    """A blocking channel (the CLI, the health check)."""
    options = balanced(target, options)
    if tls is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, tls.channel_credentials(), options=options)


def https_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The gateway's public edge: TLS 1.2 at least, the certificate it is given."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"GATEWAY_TLS_CERT / GATEWAY_TLS_KEY: {exc}") from None
    return context
