"""The services under measurement, each as its own process on loopback: the database
(`secantusd-py`), the engine, pioneer (with the bench's steps) and the gateway; and what the
bench reads of them from /proc (CPU seconds, resident memory)."""

from __future__ import annotations

import os
import resource
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from services.engine.store.embedded import DatabaseProcess
from tests.stack import (
    ROOT,
    Client,
    EngineProcess,
    PioneerProcess,
    ServiceProcess,
    free_port,
    wait_database,
    wait_for_handlers,
    wait_http,
    wait_serving,
)

# Throughput starts this many runs at once; the engine's per-tenant start limit is lifted
# to that burst so that the engine, not the limit, is measured.
MAX_BURST = 500
PIONEER_SLOTS = 100
# 500 watchers, 500 starts and pioneer's reports in flight at once exceed the default 1,000.
ENGINE_MAX_RPCS = 4000
# One caller opens all the fan-out sockets: its stream caps and open rate are lifted.
GATEWAY_MAX_STREAMS = 5000
# One tenant makes all the calls of throughput (500 starts, then 500 watches): its quotas
# of calls in flight are lifted, with the clients' pool, under ENGINE_MAX_RPCS.
TENANT_MAX_CALLS = 1500
CLIENT_MAX_CALLS = 3000
LIFTED_QUOTAS = {
    "ENGINE_TENANT_MAX_CALLS": str(TENANT_MAX_CALLS),
    "ENGINE_TENANT_MAX_LONG_CALLS": str(TENANT_MAX_CALLS),
    "ENGINE_CLIENT_MAX_CALLS": str(CLIENT_MAX_CALLS),
    "GATEWAY_MAX_STREAMS_PER_TENANT": str(GATEWAY_MAX_STREAMS),
}
# The soak (bench/scenarios.py) measures the quotas themselves: three tenants, each held to
# what a deployment would give one, on a stack of its own. The start rate leaves room for a
# good tenant's runs in sequence (about 15 a second), no more.
SOAK_QUOTAS = {
    "ENGINE_START_RATE": "20",
    "ENGINE_START_BURST": "40",
    "ENGINE_TENANT_MAX_CALLS": "50",
    "ENGINE_TENANT_MAX_LONG_CALLS": "20",
    "ENGINE_TENANT_MAX_RUNNING_EXECUTIONS": "100",
    "ENGINE_TENANT_MAX_STORED_BYTES": str(48 * 1024 * 1024),
    "GATEWAY_MAX_STREAMS_PER_TENANT": "20",
}
# What a `python -m bench.…` child needs to import the project.
ROOT_ENV = {"PYTHONPATH": f"{ROOT}:{ROOT / 'generated'}"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class GatewayProcess(ServiceProcess):
    module = "services.gateway"


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process and of its children it has waited for."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command name may hold spaces: the fields start after its closing paren.
            fields = stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def raise_open_files_limit() -> None:
    """1,000 sockets and more: the children inherit the raised soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class Stack:
    """One database server and the services on it; `sync_on_commit` makes the database fsync
    its log at every commit. `quotas` replaces the lifted limits (the default set's) with
    those given."""

    sync_on_commit: bool = False
    quotas: dict[str, str] | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="discovery-bench-")))
    database: DatabaseProcess | None = None
    engine: EngineProcess | None = None
    pioneer: PioneerProcess | None = None
    gateway: GatewayProcess | None = None
    client: Client | None = None
    uri: str = ""
    gateway_url: str = ""

    async def start(self) -> None:
        raise_open_files_limit()
        db_port, engine_port = free_port(), free_port()
        pioneer_port, gateway_port = free_port(), free_port()
        self.database = DatabaseProcess(
            self.workdir, port=db_port, sync_on_commit=self.sync_on_commit
        )
        self.uri = await self.database.start_async()
        await wait_database(self.uri)
        env = {
            "MONGODB_URI": self.uri,
            "MONGODB_DATABASE": "discovery_bench",
            "ENGINE_PORT": str(engine_port),
            "ENGINE_ID": f"bench-engine-{engine_port}",
            "ENGINE_START_RATE": "1000000",
            "ENGINE_START_BURST": str(MAX_BURST),
            "ENGINE_MAX_CONCURRENT_RPCS": str(ENGINE_MAX_RPCS),
            "PIONEER_PORT": str(pioneer_port),
            "DISCOVERY_URL": f"127.0.0.1:{engine_port}",
            "PIONEER_MAX_CONCURRENT_STEPS": str(PIONEER_SLOTS),
            "PIONEER_STEP_MODULES": "bench.steps",
            "GATEWAY_PORT": str(gateway_port),
            # Served, as a deployment does: what they cost is in the figures.
            "ENGINE_METRICS_PORT": str(free_port()),
            "PIONEER_METRICS_PORT": str(free_port()),
            "GATEWAY_METRICS_PORT": str(free_port()),
            "ENGINE_URL": f"127.0.0.1:{engine_port}",
            "GATEWAY_MAX_STREAMS": str(GATEWAY_MAX_STREAMS),
            "GATEWAY_MAX_STREAMS_PER_CLIENT": str(GATEWAY_MAX_STREAMS),
            "GATEWAY_STREAM_OPEN_RATE": "1000000",
            "GATEWAY_STREAM_OPEN_BURST": str(GATEWAY_MAX_STREAMS),
            **LIFTED_QUOTAS,
        }
        if self.quotas is not None:
            for lifted in (*LIFTED_QUOTAS, "GATEWAY_MAX_STREAMS_PER_CLIENT"):
                env.pop(lifted)
            env.update(self.quotas)
        self.engine = EngineProcess(env, self.workdir / "engine.log")
        self.pioneer = PioneerProcess(env, self.workdir / "pioneer.log")
        self.gateway = GatewayProcess(env, self.workdir / "gateway.log")
        for service in (self.engine, self.pioneer, self.gateway):
            service.start()
        self.client = Client(f"127.0.0.1:{engine_port}")
        self.gateway_url = f"http://127.0.0.1:{gateway_port}"
        await wait_serving(self.client.target)
        await wait_for_handlers(self.client, {"progress3", "fanout"})
        await wait_http(f"{self.gateway_url}/health")

    async def restart_gateway(self) -> None:
        assert self.gateway is not None
        self.gateway.stop()
        self.gateway.start()
        await wait_http(f"{self.gateway_url}/health")

    def pids(self) -> dict[str, int]:
        """The measured processes by role; `client` is this process."""
        found = {"client": os.getpid()}
        if self.database is not None and self.database.process is not None:
            found["database"] = self.database.process.pid
        for name, service in (
            ("engine", self.engine),
            ("pioneer", self.pioneer),
            ("gateway", self.gateway),
        ):
            if service is not None and service.process is not None:
                found[name] = service.process.pid
        return found

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids().items()}

    def check_alive(self) -> None:
        """A service that died mid-bench makes every later figure meaningless: say which."""
        for name, service in (
            ("engine", self.engine),
            ("pioneer", self.pioneer),
            ("gateway", self.gateway),
        ):
            process = service.process if service is not None else None
            if service is not None and process is not None and process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}):\n{service.log_tail(30)}")
        if self.database is not None and not self.database.running:
            raise RuntimeError("the database exited")

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
        for service in (self.gateway, self.pioneer, self.engine):
            if service is not None:
                service.stop()
        if self.database is not None:
            self.database.stop()
