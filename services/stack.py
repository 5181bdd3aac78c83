"""`make run` and `discovery up [--engines N] [--pioneers N] [--gateways N]`: the whole stack
on its embedded default, as one supervised group.

Starts the engine (with its embedded SecantusDB when MONGODB_URI is unset), pioneer and the
gateway as child processes; with several engines, one SecantusDB for all of them first, each
engine with its own ENGINE_ID and port, and every pioneer and gateway dialling all engines.
It makes sure the "Procesar Documentos" workflow exists (once pioneer has polled the
engine's step queue, so that its handlers are offered), admits the seed's token-less clients
on loopback (`local_anonymous_access`), says where everything is, and stops all of them
together: on Ctrl-C or SIGTERM, or as soon as one of them (the shared database too) dies, so
nothing is left running behind.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.auth import ADMIN, CLIENT, DEFAULT_TENANT, TokenAuthority
from services.engine.config import webhook_urls
from services.engine.store.embedded import DatabaseProcess
from services.envconfig import ConfigError, grpc_target, integer
from services.grpc_auth import BearerToken
from services.pioneer.errors import PioneerError
from services.pioneer.workflows import ensure_document_workflow
from services.tls import tls_from_env
from services.token_keys import (
    ENGINE_SIGNER,
    GATEWAY_SIGNER,
    OPERATOR,
    PIONEER_SIGNER,
    SIGNER_GRANTS,
    SIGNING_KEY_FILE_ENV,
    TRUSTED_KEYS_FILE,
    TRUSTED_KEYS_FILE_ENV,
    AuthKeys,
    load_signing_key,
    make_signer_keys,
)

ROOT = Path(__file__).resolve().parents[1]
PR_SET_PDEATHSIG = 1
# The local admin key `make run` writes for the CLI and the dashboard.
LOCAL_TOKEN_SECONDS = 30 * 24 * 3600
# Engines, and pioneers, this many ports apart: 50051, 50061… beside 50052, 50062….
PORT_STEP = 10
MAX_COUNT = 16


@dataclass
class Service:
    name: str
    module: str
    # Whose signing key it holds (services/token_keys.py).
    signer: str
    # Its own settings (its port…), over the group's.
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it if the supervisor dies, even by SIGKILL, so that
    no service is left running behind (Linux prctl PR_SET_PDEATHSIG; elsewhere a no-op)."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def local_keys(env: dict[str, str], keys_dir: Path, anonymous: tuple[str, str] | None) -> None:
    """Makes the one-machine stack authenticate like a real one: a signing key per service
    and one for the operator in the data directory, and the trusted keys that grant each
    what it signs (the gateway also the `anonymous` (role, tenant) it admits callers as)."""
    grants = {name: {role: list(t) for role, t in g.items()} for name, g in SIGNER_GRANTS.items()}
    if anonymous is not None:
        role, tenant = anonymous
        grants[GATEWAY_SIGNER][role] = [tenant]
    make_signer_keys(keys_dir, grants, replace_trusted=True)
    env[TRUSTED_KEYS_FILE_ENV] = str(keys_dir / TRUSTED_KEYS_FILE)


def local_admin_token(keys_dir: Path, data_dir: Path) -> str:
    """An admin token signed with the operator's key, written where the CLI looks for it."""
    authority = TokenAuthority(AuthKeys((), load_signing_key(keys_dir / f"{OPERATOR}.key")))
    token = authority.mint(
        subject="local-admin", role=ADMIN, tenant=DEFAULT_TENANT, ttl_seconds=LOCAL_TOKEN_SECONDS
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "token"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    return token


def local_anonymous_access(env: dict[str, str]) -> tuple[str, tuple[str, str] | None]:
    """The seed's clients send no token and were promised they work as before: on one machine
    the gateway admits them (GATEWAY_ANONYMOUS_ACCESS) as a client of the default tenant,
    which is safe there because the gateway listens on loopback only (it refuses to start
    with anonymous access on any other address unless GATEWAY_TRUSTED_NETWORK says so).
    Returns the banner's line about it and the (role, tenant) admitted, if any; the
    deployment's own settings win."""
    env.setdefault("GATEWAY_ANONYMOUS_ACCESS", "true")
    if env["GATEWAY_ANONYMOUS_ACCESS"].strip().lower() not in ("1", "true", "yes", "on"):
        return "  without a token refused (GATEWAY_ANONYMOUS_ACCESS is off)\n", None
    role = env.get("GATEWAY_ANONYMOUS_ROLE", "").strip() or CLIENT
    tenant = env.get("GATEWAY_ANONYMOUS_TENANT", "").strip() or DEFAULT_TENANT
    origins = env.get("GATEWAY_CORS_ORIGINS", "").strip() or (
        "none (to allow a page's origin: GATEWAY_CORS_ORIGINS=http://localhost:3000 make run)"
    )
    banner = (
        f"  without a token  admitted as {role} of tenant {tenant!r}"
        " (loopback only; GATEWAY_ANONYMOUS_ACCESS=false to refuse)\n"
        f"  browser origins {origins}\n"
    )
    return banner, (role, tenant)


@dataclass(frozen=True)
class Counts:
    """How many of each service `discovery up` runs."""

    engines: int = 1
    pioneers: int = 1
    gateways: int = 1


def parse_counts(argv: Sequence[str]) -> Counts:
    parser = argparse.ArgumentParser(prog="discovery up", description=__doc__)
    for name in ("engines", "pioneers", "gateways"):
        parser.add_argument(f"--{name}", type=_count, default=1, metavar="N")
    args = parser.parse_args(argv)
    return Counts(args.engines, args.pioneers, args.gateways)


def _count(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{raw!r}: a number from 1 to {MAX_COUNT}")
    return int(raw)


def service_ports(
    env: Mapping[str, str], name: str, count: int, step: int, *, off: bool = False
) -> list[int]:
    """`count` ports from `name`'s (default in `env`), `step` apart: engines at 50051, 50061…
    beside pioneers at 50052, 50062…, gateways at 8080, 8081…; metrics ports alike (9101,
    9111…), where `off` lets 0 turn them all off."""
    base = integer(env, name, 0, low=0 if off else 1, high=65535)
    if base == 0:
        return [0] * count
    ports = [base + step * i for i in range(count)]
    if ports[-1] > 65535:
        raise ConfigError(f"{name}={base}: {count} ports {step} apart go past 65535")
    return ports


def metrics_banner(services: Sequence[Service]) -> str:
    """Where each service's Prometheus metrics are, as the banner says it."""
    served = [
        f"{service.name} http://127.0.0.1:{port}/metrics"
        for service in services
        for key, port in service.env.items()
        if key.endswith("_METRICS_PORT") and port != "0"
    ]
    return ", ".join(served) or "off (ENGINE_METRICS_PORT, … set to 0)"


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def named(kind: str, count: int) -> list[str]:
    """`engine` alone, or `engine-1`, `engine-2`…"""
    return [kind] if count == 1 else [f"{kind}-{i}" for i in range(1, count + 1)]


async def main(argv: Sequence[str] = ()) -> int:
    counts = parse_counts(argv)
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'generated'}"
    env.setdefault("ENGINE_PORT", "50051")
    env.setdefault("PIONEER_PORT", "50052")
    env.setdefault("GATEWAY_PORT", "8080")
    env.setdefault("ENGINE_METRICS_PORT", "9101")
    env.setdefault("PIONEER_METRICS_PORT", "9102")
    env.setdefault("GATEWAY_METRICS_PORT", "9103")
    try:
        engine_ports = service_ports(env, "ENGINE_PORT", counts.engines, PORT_STEP)
        pioneer_ports = service_ports(env, "PIONEER_PORT", counts.pioneers, PORT_STEP)
        gateway_ports = service_ports(env, "GATEWAY_PORT", counts.gateways, 1)
        # 10 apart for every kind: gateways' 1 apart would meet the engines' at 9111.
        metrics_ports = {
            kind: service_ports(env, f"{kind}_METRICS_PORT", count, PORT_STEP, off=True)
            for kind, count in (
                ("ENGINE", counts.engines),
                ("PIONEER", counts.pioneers),
                ("GATEWAY", counts.gateways),
            )
        }
    except ConfigError as exc:
        print(f"discovery up: {exc}", file=sys.stderr)
        return 2
    engines = ",".join(f"127.0.0.1:{port}" for port in engine_ports)
    # Pioneers and gateways dial every engine (a list: services/envconfig.grpc_target).
    env.setdefault("DISCOVERY_URL", engines)
    env.setdefault("ENGINE_URL", engines)
    # Where an HTTP runner the engine pushes to (PIONEER_URL=http://…) reports: a gateway.
    env.setdefault("ENGINE_REPORT_BASE_URL", f"http://127.0.0.1:{gateway_ports[0]}")
    data_dir = env.setdefault("DISCOVERY_DATA_DIR", str(ROOT / ".discovery"))
    kinds = (
        ("ENGINE", "services.engine", ENGINE_SIGNER, engine_ports),
        ("PIONEER", "services.pioneer", PIONEER_SIGNER, pioneer_ports),
        ("GATEWAY", "services.gateway", GATEWAY_SIGNER, gateway_ports),
    )
    services = [
        Service(
            name,
            module,
            signer,
            {f"{kind}_PORT": str(port), f"{kind}_METRICS_PORT": str(metrics)},
        )
        for kind, module, signer, ports in kinds
        for name, port, metrics in zip(
            named(kind.lower(), len(ports)), ports, metrics_ports[kind], strict=True
        )
    ]
    busy = [
        f"{service.name} {port}"
        for service in services
        for port in map(int, service.env.values())
        if port and port_in_use(port)
    ]
    if busy:
        print(
            f"discovery up: ports in use: {', '.join(busy)} (ENGINE_PORT, PIONEER_PORT,"
            f" GATEWAY_PORT and their *_METRICS_PORT move them; 0 turns a metrics port off;"
            f" more than one engine or pioneer: {PORT_STEP} apart)",
            file=sys.stderr,
        )
        return 2
    if counts.engines > 1:
        for service, port in zip(services[: counts.engines], engine_ports, strict=True):
            # Stable names, so that a restarted engine takes its executions back at once; and
            # where the others forward calls for the executions it holds.
            service.env["ENGINE_ID"] = service.name
            service.env["ENGINE_ADVERTISE_ADDRESS"] = f"127.0.0.1:{port}"
    anonymous, admitted = local_anonymous_access(env)
    keys_dir = Path(data_dir) / "keys"
    local_keys(env, keys_dir, admitted)
    token = local_admin_token(keys_dir, Path(data_dir))
    # Pioneer pulls its work from the engine (ENGINE_URL); the engine never dials it. An
    # HTTP runner named by PIONEER_URL(S)=http://… is pushed to by the engine instead.
    try:
        pushed = ", ".join(webhook_urls(env)) or "none (PIONEER_URL=http://host:port names one)"
    except ConfigError as exc:
        pushed = f"none: {exc}"  # the engine refuses it too, and the stack stops with it
    database: DatabaseProcess | None = None
    if counts.engines > 1 and not env.get("MONGODB_URI", "").strip():
        # One database for every engine. One engine alone starts (and restarts) its own.
        database = DatabaseProcess(Path(data_dir))
        try:
            env["MONGODB_URI"] = await database.start_async()
        except RuntimeError as exc:
            print(f"discovery up: {exc}", file=sys.stderr)
            return 1
    for service in services:
        service.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            service.module,
            env={
                **env,
                **service.env,
                SIGNING_KEY_FILE_ENV: str(keys_dir / f"{service.signer}.key"),
            },
            cwd=ROOT,
            preexec_fn=_die_with_parent,
        )
    try:
        # The engine refuses a workflow whose handlers no runner has offered in a poll.
        workflow = await ensure_document_workflow(
            grpc_target({"engines": engines}, "engines", engines),
            BearerToken(token),
            wait_seconds=60,
            tls=tls_from_env(env),
        )
        ready = f"  workflow        {workflow.name!r} = {workflow.workflow_id}\n"
    except PioneerError as exc:
        ready = f"  workflow        not ready: {exc}\n"
    gateway = f"http://127.0.0.1:{gateway_ports[0]}"
    if database is not None:
        where = f"embedded SecantusDB in {data_dir}/db, {database.uri}, for every engine"
    else:
        where = env.get("MONGODB_URI") or f"embedded SecantusDB in {data_dir}/db"
    print(
        "\nDiscovery is up:\n"
        f"  REST / WebSocket {', '.join(f'http://127.0.0.1:{p}' for p in gateway_ports)}\n"
        f"{anonymous}"
        f"  dashboard       {gateway}/#token={token}\n"
        f"  admin token     {data_dir}/token   (the CLI reads it; send it as"
        " 'Authorization: Bearer …')\n"
        f"  {'engine (gRPC)  ' if counts.engines == 1 else 'engines (gRPC) '} {engines}"
        f'   (grpcurl -plaintext -H "authorization: Bearer $(cat {data_dir}/token)"'
        f" 127.0.0.1:{engine_ports[0]} list"
        + ("" if counts.engines == 1 else f"; the CLI: DISCOVERY_ENGINE={engines}")
        + ")\n"
        f"  {'pioneer (gRPC) ' if counts.pioneers == 1 else 'pioneers (gRPC)'} "
        f"{', '.join(f'127.0.0.1:{p}' for p in pioneer_ports)}\n"
        f"  HTTP runners    {pushed}\n"
        f"  metrics         {metrics_banner(services)}\n"
        f"  database        {where}\n"
        f"{ready}"
        "Ctrl-C stops everything.\n",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waits = {asyncio.create_task(s.process.wait()): s.name for s in services if s.process}
    if database is not None and database.process is not None:
        waits[asyncio.create_task(asyncio.to_thread(database.process.wait))] = "database"
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*waits, stopping], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    for task in done:
        if task in waits:
            print(f"\n{waits[task]} exited with code {task.result()}; stopping the rest.")
            code = 1
    for service in services:
        if service.process is not None and service.process.returncode is None:
            service.process.send_signal(signal.SIGTERM)
    for service in services:
        if service.process is None:
            continue
        try:
            await asyncio.wait_for(service.process.wait(), 15)
        except TimeoutError:
            service.process.kill()
            await service.process.wait()
    # Last: the engines write to it until they have stopped.
    if database is not None:
        await asyncio.to_thread(database.stop)
    stopping.cancel()
    for task in waits:
        task.cancel()
    await asyncio.gather(*waits, return_exceptions=True)
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
