"""Where the engine is (`--engine HOST:PORT`, else DISCOVERY_ENGINE, else localhost:50051)
and who the CLI is to it (DISCOVERY_TOKEN, else the file DISCOVERY_TOKEN_FILE, else the
`.discovery/token` that `make run` writes)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from services.cli.errors import UsageError

ENV_VAR = "DISCOVERY_ENGINE"
DEFAULT_TARGET = "localhost:50051"
TOKEN_ENV = "DISCOVERY_TOKEN"
TOKEN_FILE_ENV = "DISCOVERY_TOKEN_FILE"
LOCAL_TOKEN_FILE = Path(".discovery") / "token"


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


def api_token(environ: Mapping[str, str] = os.environ, cwd: Path | None = None) -> str:
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
            raise UsageError(f"{TOKEN_FILE_ENV}: {named!r} does not exist") from None
        raise UsageError(
            f"no credentials: set {TOKEN_ENV} (or {TOKEN_FILE_ENV}), or run `make run` here,"
            f" which writes {LOCAL_TOKEN_FILE}"
        ) from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    if not token:
        raise UsageError(f"{path} is empty")
    return token
