"""The pioneer under test: a real server on port 0 with a client stub, built as `__main__` does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import grpc
from discovery.pioneer.v1 import step_runner_service_pb2 as runner_pb2
from discovery.pioneer.v1 import step_runner_service_pb2_grpc as runner_grpc

from services.auth import ANY_TENANT, ENGINE, RUNNER, ServiceToken
from services.grpc_auth import bearer_interceptors
from services.pioneer.config import Settings
from services.pioneer.context import Resources
from services.pioneer.reporter import RetryPolicy, StepReporter
from services.pioneer.runner import StepRunner
from services.pioneer.server import build_server
from services.pioneer.steps import documents
from services.pioneer.workers import WorkerPool
from tests.pioneer.handlers import registry
from tests.stack import AUTH_KEYS, AUTHORITY

# Short backoffs keep retry tests quick; the retry logic is the production one.
FAST_RETRIES = RetryPolicy(
    call_timeout_seconds=2.0, initial_backoff_seconds=0.02, max_backoff_seconds=0.1
)


@dataclass
class Pioneer:
    stub: Any
    channel: grpc.aio.Channel
    runner: StepRunner
    port: int
    # The worker processes its document steps run in.
    pool: WorkerPool

    async def start(
        self,
        handler: str,
        input: dict[str, Any] | None = None,
        *,
        step_timeout: float = 10.0,
        heartbeat_timeout: float = 0.0,
        token: str | None = None,
    ) -> runner_pb2.StartStepRequest:
        """Starts one attempt of a step named after its handler, as the engine would."""
        request = runner_pb2.StartStepRequest(
            execution_id=f"exec-{uuid.uuid4().hex[:8]}",
            step_name=handler,
            handler=handler,
            attempt=1,
            attempt_token=token or uuid.uuid4().hex,
            timeout_seconds=step_timeout,
            heartbeat_timeout_seconds=heartbeat_timeout,
        )
        request.input.update(input or {})
        await self.stub.StartStep(request, timeout=5)
        return request

    async def idle(self, within: float = 2.0) -> None:
        """Waits until no step runs any more."""
        async with asyncio.timeout(within):
            # Polls the runner's count: an "idle" event would exist in the runner for tests only.
            while self.runner.running_count:  # noqa: ASYNC110
                await asyncio.sleep(0.01)


MakePioneer = Callable[..., Awaitable[Pioneer]]


async def start_pioneer(
    stack: AsyncExitStack,
    engine_address: str,
    *,
    max_concurrent_steps: int = 64,
    document_workers: int | None = None,
    worker_memory_mib: int = Settings.worker_memory_mib,
) -> Pioneer:
    """A pioneer reporting to `engine_address`; `stack` stops it, in __main__'s order."""
    settings = Settings(
        host="127.0.0.1",
        port=0,
        discovery_url=engine_address,
        max_concurrent_steps=max_concurrent_steps,
        document_workers=document_workers,
        worker_memory_mib=worker_memory_mib,
        auth_keys=AUTH_KEYS,
    )
    tools = documents.document_tools(settings)
    stack.push_async_callback(tools.pool.close)
    reporter = StepReporter.connect(
        settings.discovery_url,
        ServiceToken(AUTHORITY, subject="test-pioneer", role=RUNNER, tenant=ANY_TENANT),
        FAST_RETRIES,
    )
    stack.push_async_callback(reporter.close)
    runner = StepRunner(
        reporter, max_concurrent_steps=max_concurrent_steps, resources=Resources(tools)
    )
    stack.push_async_callback(runner.close)
    server, port = await build_server(settings, registry, runner)
    await server.start()
    stack.push_async_callback(server.stop, None)
    # Calls to pioneer come from the engine, whose token the test holds here.
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}",
        interceptors=bearer_interceptors(ServiceToken(AUTHORITY, subject="test", role=ENGINE)),
    )
    stack.push_async_callback(channel.close)
    return Pioneer(runner_grpc.StepRunnerServiceStub(channel), channel, runner, port, tools.pool)
