"""The services as a user runs them, on real sockets: an engine and a pioneer, in this
process (fast, for most tests) or as child processes (for the kill tests)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import execution_service_pb2_grpc as es_grpc
from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import step_queue_service_pb2_grpc as sq_grpc
from discovery.engine.v1 import step_report_service_pb2_grpc as sr_grpc
from discovery.engine.v1 import workflow_pb2 as wf
from discovery.engine.v1 import workflow_service_pb2 as ws
from discovery.engine.v1 import workflow_service_pb2_grpc as ws_grpc
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pymongo import AsyncMongoClient

import services.pioneer.steps  # noqa: F401  # registers the built-in steps
from discovery_client.requests import struct
from services.auth import (
    ADMIN,
    ANY_TENANT,
    DEFAULT_TENANT,
    RUNNER,
    ServiceToken,
    TokenAuthority,
)
from services.engine.app import Engine
from services.engine.config import Settings as EngineSettings
from services.engine.store.embedded import free_port as free_port
from services.engine.store.repository import ExecutionStore
from services.grpc_auth import BearerToken, bearer_interceptors
from services.pioneer.config import Settings as PioneerSettings
from services.pioneer.context import Resources
from services.pioneer.poller import StepPoller, process_runner_id
from services.pioneer.registry import registry
from services.pioneer.reporter import StepReporter
from services.pioneer.runner import StepRunner
from services.pioneer.server import build_server as build_pioneer
from services.pioneer.steps.documents import DocumentTools, document_tools
from services.token_keys import (
    ROLE_NAMES,
    SIGNER_GRANTS,
    SIGNING_KEY_FILE_ENV,
    TRUSTED_KEYS_FILE,
    TRUSTED_KEYS_FILE_ENV,
    AuthKeys,
    keys_from_env,
    load_signing_key,
    make_signer_keys,
)

ROOT = Path(__file__).resolve().parents[1]

# The token keys of every service the tests start, in this process or as children (which
# inherit them through the environment): one key that signs every role for every tenant, as
# the tests act as the operator and as each service. The others are trusted with what a
# deployment grants them, for the tests that hold a signer to its grants (`signed_by`).
KEYS_DIR = Path(tempfile.mkdtemp(prefix="discovery-test-keys-"))
atexit.register(shutil.rmtree, KEYS_DIR, True)
make_signer_keys(
    KEYS_DIR,
    {
        "tests": {role: ["*"] for role in sorted(ROLE_NAMES)},
        **SIGNER_GRANTS,
        "runner-acme": {"runner": ["acme"]},
    },
)
os.environ[TRUSTED_KEYS_FILE_ENV] = str(KEYS_DIR / TRUSTED_KEYS_FILE)
os.environ[SIGNING_KEY_FILE_ENV] = str(KEYS_DIR / "tests.key")
# What a service's settings read, for the tests of settings.
KEY_FILES = {k: os.environ[k] for k in (TRUSTED_KEYS_FILE_ENV, SIGNING_KEY_FILE_ENV)}
AUTH_KEYS = keys_from_env(KEY_FILES)
AUTHORITY = TokenAuthority(AUTH_KEYS)


def signed_by(signer: str, role: str, tenant: str, **claims: Any) -> str:
    """A token signed with one of the test deployment's keys (`KEYS_DIR/<signer>.key`)."""
    authority = TokenAuthority(AuthKeys((), load_signing_key(KEYS_DIR / f"{signer}.key")))
    return authority.mint(
        subject=f"{signer}-{role}", role=role, tenant=tenant, ttl_seconds=3600, **claims
    )


def token(
    role: str = ADMIN,
    tenant: str | None = None,
    *,
    ttl_seconds: float = 3600,
    execution_id: str | None = None,
) -> str:
    """A token as the deployment's operator would issue it: of tenant `default`, but a
    runner's, which like pioneer's serves every tenant unless given one."""
    if tenant is None:
        tenant = ANY_TENANT if role == RUNNER else DEFAULT_TENANT
    return AUTHORITY.mint(
        subject=f"test-{role}",
        role=role,
        tenant=tenant,
        ttl_seconds=ttl_seconds,
        execution_id=execution_id,
    )


TERMINAL = {
    ex_pb.EXECUTION_STATUS_COMPLETED,
    ex_pb.EXECUTION_STATUS_FAILED,
    ex_pb.EXECUTION_STATUS_CANCELLED,
}


def as_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def step_successes(events: list[ex_pb.ExecutionEvent]) -> Counter[int]:
    """How many attempts of each step (by order) succeeded, in a run's log."""
    return Counter(
        as_dict(e.data)["order"]
        for e in events
        if e.type == ex_pb.EVENT_TYPE_STEP_FINISHED and as_dict(e.data)["status"] == "success"
    )


class Pioneer:
    """A pioneer in this process: its server, and its poller pulling from the engine."""

    def __init__(
        self,
        engine_port: int,
        *,
        slots: int = 64,
        name: str = "test-pioneer",
        target: str | None = None,
    ) -> None:
        """`target`: any gRPC target for the engines instead of the one at `engine_port`."""
        self.settings = PioneerSettings(
            port=0, discovery_url=target or f"127.0.0.1:{engine_port}", auth_keys=AUTH_KEYS
        )
        self.slots = slots
        self.name = name
        self.port = 0
        self.runner: StepRunner | None = None
        self.documents: DocumentTools | None = None
        self._reporter: StepReporter | None = None
        self._poller: StepPoller | None = None
        self._server: Any = None

    async def start(self) -> None:
        credentials = ServiceToken(AUTHORITY, subject=self.name, role=RUNNER, tenant=ANY_TENANT)
        self._reporter = StepReporter.connect(self.settings.discovery_url, credentials)
        self.documents = document_tools(self.settings)
        self.runner = StepRunner(
            self._reporter, max_concurrent_steps=self.slots, resources=Resources(self.documents)
        )
        self._server, self.port = await build_pioneer(self.settings, registry, self.runner)
        await self._server.start()
        self._poller = StepPoller(
            self._reporter.channel, credentials, self.runner, registry, self.name
        )
        self._poller.start()

    async def stop(self) -> None:
        assert self._poller is not None
        await self._poller.stop()
        await self._server.stop(0)
        assert self.runner is not None and self._reporter is not None
        await self.runner.close()
        if self.documents is not None:
            await self.documents.pool.close()
        await self._reporter.close()


def authenticated(role: str = ADMIN) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for a raw test channel: every call carries a token of `role`."""
    return bearer_interceptors(BearerToken(token(role)))


@dataclass
class Client:
    """gRPC stubs to the engine, as any client would hold them: an admin of the default
    tenant unless given another token."""

    target: str
    token: str = field(default_factory=token)
    options: list[tuple[str, Any]] = field(default_factory=list)
    channel: grpc.aio.Channel = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.aio.insecure_channel(
            self.target,
            options=self.options,
            interceptors=bearer_interceptors(BearerToken(self.token)),
        )
        self.workflows = ws_grpc.WorkflowServiceStub(self.channel)
        self.executions = es_grpc.ExecutionServiceStub(self.channel)
        self.queue = sq_grpc.StepQueueServiceStub(self.channel)
        # Reports come from step runners, with a runner's token.
        self.runner_channel = grpc.aio.insecure_channel(
            self.target, interceptors=authenticated(RUNNER)
        )
        self.reports = sr_grpc.StepReportServiceStub(self.runner_channel)

    async def close(self) -> None:
        await self.channel.close()
        await self.runner_channel.close()

    async def create_workflow(self, name: str, *steps: dict[str, Any]) -> wf.Workflow:
        definition = wf.Workflow(name=name)
        for step in steps:
            json_format.ParseDict(step, definition.steps.add())
        response: ws.CreateWorkflowResponse = await self.workflows.CreateWorkflow(
            ws.CreateWorkflowRequest(workflow=definition), timeout=10
        )
        return response.workflow

    async def start(
        self,
        workflow_id: str,
        document: dict[str, Any] | None = None,
        *,
        deadline_seconds: float = 10,
        **kw: Any,
    ) -> ex_pb.Execution:
        response: es.StartExecutionResponse = await self.executions.StartExecution(
            es.StartExecutionRequest(workflow_id=workflow_id, input=struct(document or {}), **kw),
            timeout=deadline_seconds,
        )
        return response.execution

    async def get(self, execution_id: str) -> ex_pb.Execution:
        response: es.GetExecutionResponse = await self.executions.GetExecution(
            es.GetExecutionRequest(execution_id=execution_id), timeout=10
        )
        return response.execution

    async def watch(
        self, execution_id: str, after_seq: int | None = None
    ) -> AsyncIterator[es.WatchExecutionResponse]:
        request = es.WatchExecutionRequest(execution_id=execution_id)
        if after_seq is not None:
            request.after_seq = after_seq
        async for item in self.executions.WatchExecution(request, timeout=120):
            yield item

    async def events(self, execution_id: str, after_seq: int = 0) -> list[ex_pb.ExecutionEvent]:
        """Every event after `after_seq` up to the terminal one."""
        return [item.event async for item in self.watch(execution_id, after_seq)]

    async def wait_terminal(self, execution_id: str, seconds: float = 60) -> ex_pb.Execution:
        deadline = time.monotonic() + seconds
        while True:
            try:
                execution = await self.get(execution_id)
                if execution.status in TERMINAL:
                    return execution
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"{execution_id} not terminal after {seconds} s")
            await asyncio.sleep(0.1)


@dataclass
class Stack:
    engine: Engine
    pioneer: Pioneer
    client: Client
    mongo_uri: str
    database: str

    async def stop(self) -> None:
        await self.client.close()
        await self.engine.stop(grace=0)
        await self.pioneer.stop()


def engine_settings(mongo_uri: str, database: str, engine_port: int) -> EngineSettings:
    return EngineSettings(
        port=engine_port,
        mongodb_uri=mongo_uri,
        mongodb_database=database,
        engine_id=f"test-engine-{engine_port}",
        lease_seconds=3.0,
        auth_keys=AUTH_KEYS,
        # Many engines run at once here: the tests that scrape one give it a port.
        metrics_port=0,
    )


async def start_stack(
    mongo_uri: str,
    database: str,
    *,
    wrap_store: Callable[[ExecutionStore], ExecutionStore] | None = None,
    pioneer_slots: int = 64,
    **overrides: Any,
) -> Stack:
    engine_port = free_port()
    settings = replace(engine_settings(mongo_uri, database, engine_port), **overrides)
    engine = Engine(settings, wrap_store=wrap_store)
    await engine.start()
    pioneer = Pioneer(engine.port, slots=pioneer_slots)
    await pioneer.start()
    client = Client(f"127.0.0.1:{engine.port}")
    await wait_for_runner(client.queue, pioneer.name)
    return Stack(engine, pioneer, client, mongo_uri, database)


class ServiceProcess:
    """`python -m <module>` as a child process, for the tests that kill it."""

    module = ""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the fd
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'generated'}", **self.env},
                stdout=log,
                stderr=log,
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def log_tail(self, lines: int = 60) -> str:
        """The end of what the child printed, for a failing test's message."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return -9


class EngineProcess(ServiceProcess):
    module = "services.engine"


def engine_process_env(mongo_uri: str, database: str, port: int) -> dict[str, str]:
    """An engine child's environment: a fixed port and ENGINE_ID, so that a restart takes its
    executions back at once, and a short lease for the takeover tests."""
    return {
        "MONGODB_URI": mongo_uri,
        "MONGODB_DATABASE": database,
        "ENGINE_PORT": str(port),
        "ENGINE_ID": f"engine-{port}",
        "ENGINE_LEASE_SECONDS": "3",
    }


class GatewayProcess(ServiceProcess):
    module = "services.gateway"


class PioneerProcess(ServiceProcess):
    module = "services.pioneer"

    @property
    def runner_id(self) -> str:
        assert self.process is not None
        return process_runner_id(self.process.pid)


@contextlib.asynccontextmanager
async def restartable_engine(
    mongo_uri: str, database: str, log_path: Path, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[Pioneer, EngineProcess, Client]]:
    """A pioneer in this process and the engine as a child process on a fixed port and
    ENGINE_ID, so that a restarted engine takes its executions back at once; `env` adds to
    or overrides its environment."""
    engine_port = free_port()
    engine = EngineProcess(
        {**engine_process_env(mongo_uri, database, engine_port), **(env or {})}, log_path
    )
    engine.start()
    client = Client(f"127.0.0.1:{engine_port}")
    await wait_serving(client.target)
    pioneer = Pioneer(engine_port)
    await pioneer.start()
    try:
        await wait_for_runner(client.queue, pioneer.name)
        yield pioneer, engine, client
    finally:
        await client.close()
        engine.stop()
        await pioneer.stop()


async def running_attempt_token(stack: Stack, execution_id: str, seconds: float = 10) -> str:
    """The token of the execution's first attempt once a runner has taken it, read from the
    database as only the engine and that runner know it."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_uri)
    events = client[stack.database]["events"]
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if await events.find_one({"execution_id": execution_id, "type": "step_started"}):
                queued = await events.find_one(
                    {"execution_id": execution_id, "type": "step_queued"}, sort=[("seq", 1)]
                )
                assert queued is not None
                return str(queued["attempt_token"])
            await asyncio.sleep(0.02)
    finally:
        await client.close()
    raise AssertionError(f"no runner took a step of {execution_id} in {seconds} s")


async def wait_for_runner(
    queue: sq_grpc.StepQueueServiceStub,
    runner_id: str,
    seconds: float = 20,
    explain: Callable[[], str] = str,
) -> None:
    """Until the engine behind `queue` lists the runner: it has polled, so its handlers may
    be named. `explain` adds what a failure message should show (a child's log tail)."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(grpc.aio.AioRpcError):
            reply = await queue.GetStepQueue(sq.GetStepQueueRequest(), timeout=5)
            if any(r.runner_id == runner_id for r in reply.runners):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"runner {runner_id} has not polled in {seconds} s\n{explain()}")
        await asyncio.sleep(0.05)


async def wait_for_handlers(client: Client, handlers: set[str], seconds: float = 30) -> None:
    """Until runners offering `handlers` have polled the engine (whoever they are)."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(grpc.aio.AioRpcError):
            reply = await client.queue.GetStepQueue(sq.GetStepQueueRequest(), timeout=5)
            if handlers <= {h for r in reply.runners for h in r.handlers}:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"no runner offered {sorted(handlers)} in {seconds} s")
        await asyncio.sleep(0.05)


async def wait_serving(target: str, seconds: float = 20) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target} not serving after {seconds} s")
            await asyncio.sleep(0.1)


async def watched(stack: Stack, execution_id: str, seconds: float = 30) -> None:
    """Returns once the engine has a watcher of the execution: a client in a child process or
    a browser may take a while to start on a busy machine, and a test that follows a run
    live holds the run back until then."""
    assert stack.engine.runner is not None
    hub = stack.engine.runner.hub
    async with asyncio.timeout(seconds):
        while not hub.watching(execution_id):  # noqa: ASYNC110 - the hub has no event for this
            await asyncio.sleep(0.05)


async def wait_database(uri: str, seconds: float = 20) -> None:
    """Returns once the MongoDB server at `uri` answers a ping."""
    deadline = time.monotonic() + seconds
    while True:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            uri, serverSelectionTimeoutMS=500
        )
        try:
            await client.admin.command("ping")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
        finally:
            await client.close()


MAKE_RUN_READY = "Ctrl-C stops everything"


def start_make_run(data_dir: Path, log: Path, **env: str | int) -> subprocess.Popen[bytes]:
    """`make run`'s supervisor (`python -m services.stack`) as on a fresh machine: no keys
    given, so it makes its own in `data_dir`; its output goes to `log`. `env` adds to or
    overrides its environment (ports, the seed's PIONEER_URL…)."""
    return _start_supervisor(["services.stack"], data_dir, log, env)


def start_up(
    args: list[str], data_dir: Path, log: Path, **env: str | int
) -> subprocess.Popen[bytes]:
    """The same supervisor through `discovery up ARGS`."""
    return _start_supervisor(["services.cli", "up", *args], data_dir, log, env)


def _start_supervisor(
    command: list[str], data_dir: Path, log: Path, env: dict[str, str | int]
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *command],
            cwd=ROOT,
            env={
                **{k: v for k, v in os.environ.items() if k not in KEY_FILES},
                "DISCOVERY_DATA_DIR": str(data_dir),
                "PYTHONPATH": f"{ROOT}:{ROOT / 'generated'}",
                **{k: str(v) for k, v in env.items()},
            },
            stdout=out,
            stderr=out,
        )


def wait_for(path: Path, text: str, seconds: float) -> str:
    """The file's text once `text` is in it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        content = path.read_text(errors="replace")
        if text in content:
            return content
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not seen within {seconds} s:\n{path.read_text()[-3000:]}")


async def wait_http(url: str, seconds: float = 30) -> None:
    """Returns once `url` answers 200 to an admin of the default tenant."""
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token()}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not answering 200 after {seconds} s")
            await asyncio.sleep(0.1)


def error_info(exc: grpc.aio.AioRpcError) -> tuple[str, dict[str, str], list[str]]:
    """(reason, metadata, fields named by BadRequest) of a rich error."""
    status = rpc_status.from_call(exc)
    assert status is not None, f"no rich status on {exc.code()}: {exc.details()}"
    reason, metadata, fields = "", {}, []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return reason, metadata, fields
