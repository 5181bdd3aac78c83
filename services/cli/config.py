"""Where the engine is: `--engine HOST:PORT`, else DISCOVERY_ENGINE, else localhost:50051."""

from __future__ import annotations

import os
from collections.abc import Mapping

from services.cli.errors import UsageError

ENV_VAR = "DISCOVERY_ENGINE"
DEFAULT_TARGET = "localhost:50051"


def engine_target(flag: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The gRPC target to dial. `http://host:port` is accepted (the seed's URLs have it);
    TLS is not: the engine speaks plaintext gRPC."""
    raw = flag if flag is not None else environ.get(ENV_VAR) or DEFAULT_TARGET
    source = "--engine" if flag is not None else ENV_VAR if environ.get(ENV_VAR) else "default"
    value = raw.strip()
    if value.startswith("http://"):
        value = value[len("http://") :]
    elif "://" in value:
        raise UsageError(f"{source}: {raw!r}: only plaintext host:port (or http://) is supported")
    value = value.rstrip("/")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{source}: {raw!r} is not HOST:PORT")
    return value
