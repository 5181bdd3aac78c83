"""A step runner outside pioneer, as a team that writes its own would: it pulls attempts of
the `external` handler from the engine's step queue and hands each one (with its token) to
the test, which then reports progress and completion over the gateway's HTTP endpoints with
`X-Attempt-Token`. It runs nothing itself.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import grpc
from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import step_queue_service_pb2_grpc as sq_grpc

from services.grpc_auth import BearerToken, bearer_interceptors

HANDLER = "external"
RUNNER_ID = "external-runner"


class ExternalRunner:
    def __init__(self, engine_target: str, token: str) -> None:
        self._channel = grpc.aio.insecure_channel(
            engine_target, interceptors=bearer_interceptors(BearerToken(token))
        )
        self._stub = sq_grpc.StepQueueServiceStub(self._channel)
        self._attempts: defaultdict[str, asyncio.Queue[sq.StepTask]] = defaultdict(asyncio.Queue)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._channel.close()

    async def next_attempt(self, execution_id: str, seconds: float = 10) -> sq.StepTask:
        """The next attempt this runner took for the execution."""
        return await asyncio.wait_for(self._attempts[execution_id].get(), seconds)

    async def _poll(self) -> None:
        request = sq.PollStepAttemptsRequest(
            runner_id=RUNNER_ID, handlers=[HANDLER], max_attempts=10, wait_seconds=5
        )
        while True:
            try:
                reply = await self._stub.PollStepAttempts(request, timeout=10)
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.2)
                continue
            for task in reply.tasks:
                self._attempts[task.execution_id].put_nowait(task)
