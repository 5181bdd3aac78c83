"""`make run`: the whole stack on its embedded default, as one supervised group.

Starts the engine (with its embedded SecantusDB when MONGODB_URI is unset), pioneer and the
gateway as child processes, makes sure the "Procesar Documentos" workflow exists (once
pioneer has polled the engine's step queue, so that its handlers are offered), admits the
seed's token-less clients on loopback (`local_anonymous_access`), says where everything is,
and stops all of them together: on Ctrl-C or SIGTERM, or as soon as one of them dies, so
nothing is left running behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from services.auth import ADMIN, CLIENT, DEFAULT_TENANT, TokenAuthority
from services.engine.config import webhook_urls
from services.envconfig import ConfigError
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


@dataclass
class Service:
    name: str
    module: str
    # Whose signing key it holds (services/token_keys.py).
    signer: str
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


async def main() -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'generated'}"
    engine_port = env.setdefault("ENGINE_PORT", "50051")
    pioneer_port = env.setdefault("PIONEER_PORT", "50052")
    env.setdefault("DISCOVERY_URL", f"127.0.0.1:{engine_port}")
    env.setdefault("ENGINE_URL", f"127.0.0.1:{engine_port}")
    gateway_port = env.setdefault("GATEWAY_PORT", "8080")
    # Where an HTTP runner the engine pushes to (PIONEER_URL=http://…) reports: this gateway.
    env.setdefault("ENGINE_REPORT_BASE_URL", f"http://127.0.0.1:{gateway_port}")
    data_dir = env.setdefault("DISCOVERY_DATA_DIR", str(ROOT / ".discovery"))
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
    services = [
        Service("engine", "services.engine", ENGINE_SIGNER),
        Service("pioneer", "services.pioneer", PIONEER_SIGNER),
        Service("gateway", "services.gateway", GATEWAY_SIGNER),
    ]
    for service in services:
        service.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            service.module,
            env={**env, SIGNING_KEY_FILE_ENV: str(keys_dir / f"{service.signer}.key")},
            cwd=ROOT,
            preexec_fn=_die_with_parent,
        )
    try:
        # The engine refuses a workflow whose handlers no runner has offered in a poll.
        workflow = await ensure_document_workflow(
            f"127.0.0.1:{engine_port}",
            BearerToken(token),
            wait_seconds=60,
            tls=tls_from_env(env),
        )
        ready = f"  workflow        {workflow.name!r} = {workflow.workflow_id}\n"
    except PioneerError as exc:
        ready = f"  workflow        not ready: {exc}\n"
    print(
        "\nDiscovery is up:\n"
        f"  REST / WebSocket http://127.0.0.1:{gateway_port}\n"
        f"{anonymous}"
        f"  dashboard       http://127.0.0.1:{gateway_port}/#token={token}\n"
        f"  admin token     {data_dir}/token   (the CLI reads it; send it as"
        " 'Authorization: Bearer …')\n"
        f"  engine (gRPC)   127.0.0.1:{engine_port}"
        f'   (grpcurl -plaintext -H "authorization: Bearer $(cat {data_dir}/token)"'
        f" 127.0.0.1:{engine_port} list)\n"
        f"  pioneer (gRPC)  127.0.0.1:{pioneer_port}\n"
        f"  HTTP runners    {pushed}\n"
        f"  database        {env.get('MONGODB_URI') or f'embedded SecantusDB in {data_dir}/db'}\n"
        f"{ready}"
        "Ctrl-C stops everything.\n",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waits = {asyncio.create_task(s.process.wait()): s for s in services if s.process is not None}
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*waits, stopping], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    for task in done:
        if task in waits:
            service = waits[task]
            print(f"\n{service.name} exited with code {task.result()}; stopping the rest.")
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
    stopping.cancel()
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
