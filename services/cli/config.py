"""Where the engines are (`--engine HOST:PORT[,…]`, else DISCOVERY_ENGINE, else
localhost:50051) and who the CLI is to them (DISCOVERY_TOKEN, else the file
DISCOVERY_TOKEN_FILE, else the `.discovery/token` that `make run` writes)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from services.cli.errors import UsageError
from services.envconfig import GRPC_SCHEMES, ConfigError, grpc_target

ENV_VAR = "DISCOVERY_ENGINE"
DEFAULT_TARGET = "localhost:50051"
TOKEN_ENV = "DISCOVERY_TOKEN"
TOKEN_FILE_ENV = "DISCOVERY_TOKEN_FILE"
LOCAL_TOKEN_FILE = Path(".discovery") / "token"


def engine_target(flag: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The gRPC target to dial: `host:port` (`http://host:port` is accepted: the seed's URLs
    have it), a list of engines or a gRPC target, as the services read theirs
    (services/envconfig.grpc_target)."""
    source = "--engine" if flag is not None else ENV_VAR
    raw = flag if flag is not None else environ.get(ENV_VAR, "")
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
