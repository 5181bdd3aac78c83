"""Pioneer's settings, read from the environment once at start and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.auth import ANY_TENANT
from services.envconfig import ConfigError, grpc_target, integer, text
from services.tls import Tls, tls_from_env
from services.token_keys import AuthKeys, keys_from_env


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 50052
    # Prometheus metrics (services/metrics.py), on `host`; 0: not served.
    metrics_port: int = 9102
    # The engine's gRPC address, where pioneer pulls steps from and reports to.
    discovery_url: str = "localhost:50051"
    max_concurrent_steps: int = 64
    # Document steps: the largest decoded upload, and the most pages a PDF may have.
    max_document_bytes: int = 48 * 1024 * 1024
    max_pdf_pages: int = 2000
    # Worker processes reading documents (services/pioneer/workers.py): how many at most (None:
    # one per core, at most max_concurrent_steps), and the address space each may use.
    document_workers: int | None = None
    worker_memory_mib: int = 1024
    # The user's own step modules, imported at start so that their `@step` decorators
    # register on the default registry beside the built-in steps.
    step_modules: tuple[str, ...] = ()
    # The deployment's trusted keys and pioneer's own signing key (services/token_keys.py):
    # pioneer checks the engine's token on StartStep and signs its own runner token, for
    # `tenant`'s steps only ("*": any tenant's, if its key may sign that). Never printed.
    auth_keys: AuthKeys = field(default=AuthKeys(()), repr=False)
    tenant: str = ANY_TENANT
    # Mutual TLS for its server and its reports (services/tls.py); None: plaintext.
    tls: Tls | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            host=text(env, "PIONEER_HOST", defaults.host),
            port=integer(env, "PIONEER_PORT", defaults.port, low=0, high=65535),
            metrics_port=integer(
                env, "PIONEER_METRICS_PORT", defaults.metrics_port, low=0, high=65535
            ),
            discovery_url=engine_target(env, defaults.discovery_url),
            max_concurrent_steps=integer(
                env, "PIONEER_MAX_CONCURRENT_STEPS", defaults.max_concurrent_steps, low=1
            ),
            # Under the engine's blob cap (64 MiB): the decoded document is stored there.
            max_document_bytes=integer(
                env,
                "PIONEER_MAX_DOCUMENT_BYTES",
                defaults.max_document_bytes,
                low=1,
                high=64 * 1024 * 1024,
            ),
            max_pdf_pages=integer(env, "PIONEER_MAX_PDF_PAGES", defaults.max_pdf_pages, low=1),
            document_workers=_optional_integer(env, "PIONEER_DOCUMENT_WORKERS", low=1),
            # A worker's interpreter and its imports take about 90 MiB of address space, and
            # a document up to 64 MiB arrives whole, so less than this could not read one.
            worker_memory_mib=integer(
                env, "PIONEER_WORKER_MEMORY_MIB", defaults.worker_memory_mib, low=256
            ),
            step_modules=_module_names(env, "PIONEER_STEP_MODULES"),
            auth_keys=keys_from_env(env),
            tenant=text(env, "PIONEER_TENANT", defaults.tenant),
            tls=tls_from_env(env),
        )

    def document_worker_count(self) -> int:
        if self.document_workers is not None:
            return self.document_workers
        return min(self.max_concurrent_steps, os.cpu_count() or 1)


def _optional_integer(env: Mapping[str, str], name: str, *, low: int) -> int | None:
    if not env.get(name, "").strip():
        return None
    return integer(env, name, low, low=low)


def engine_target(env: Mapping[str, str], default: str) -> str:
    """The engine's gRPC address: `ENGINE_URL` (as the gateway reads it), else `DISCOVERY_URL`
    as `host:port`.

    In the seed, `DISCOVERY_URL=http://localhost:8080` is where an HTTP step runner reports:
    the gateway. Pioneer speaks gRPC to the engine, and pointed at the gateway it would only
    fail on every call later, so an http(s) `DISCOVERY_URL` stops it at start saying what to
    set instead. With `ENGINE_URL` set it is not read (an environment shared with HTTP runners
    may keep it for them)."""
    if env.get("ENGINE_URL", "").strip():
        return grpc_target(env, "ENGINE_URL", default)
    raw = env.get("DISCOVERY_URL", "").strip()
    if raw.lower().startswith(("http://", "https://")):
        raise ConfigError(
            f"DISCOVERY_URL={raw!r} is an HTTP URL, the gateway's, where HTTP step runners"
            " report; pioneer speaks gRPC to the engine: set ENGINE_URL=host:port (the"
            " engine's gRPC address, e.g. localhost:50051), or DISCOVERY_URL=host:port"
            " without a scheme"
        )
    return grpc_target(env, "DISCOVERY_URL", default)


def _module_names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated importable names (`pkg.module`); a name Python could not import is
    refused here, before anything is imported."""
    names = tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())
    for module in names:
        if not all(piece.isidentifier() for piece in module.split(".")):
            raise ConfigError(f"{name}: {module!r} is not an importable module name")
    return names
