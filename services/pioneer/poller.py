"""Pulls work from the engine's step queue: one long poll at a time, for as many attempts as
pioneer has free slots, each started as soon as it arrives.

Pioneer never takes more than it can run (the engine logs an attempt as started when it hands
it out, so an attempt taken and dropped would wait for its heartbeat timeout). When every
slot is busy, no poll is open; the next one goes out as soon as a step ends. An engine that is
away (restarting, unreachable) is asked again after a capped, jittered backoff: the queued
work waits for it in the database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket

import grpc
from discovery.engine.v1 import step_queue_service_pb2 as queue_pb2
from discovery.engine.v1 import step_queue_service_pb2_grpc as queue_grpc

from services.grpc_auth import Credentials
from services.pioneer.errors import PioneerError
from services.pioneer.registry import StepRegistry
from services.pioneer.runner import StepRunner

log = logging.getLogger(__name__)

POLL_WAIT_SECONDS = 20.0
# The call's deadline leaves the engine room to answer after its wait.
POLL_DEADLINE_MARGIN_SECONDS = 10.0
INITIAL_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 5.0
# The engine caps one poll at this many attempts.
MAX_ATTEMPTS_PER_POLL = 100


def process_runner_id(pid: int | None = None) -> str:
    """The runner_id of a pioneer process: what the engine shows in a step's history and in
    its queue listing."""
    return f"pioneer@{socket.gethostname()}:{os.getpid() if pid is None else pid}"


class StepPoller:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        credentials: Credentials,
        runner: StepRunner,
        registry: StepRegistry,
        runner_id: str,
        *,
        wait_seconds: float = POLL_WAIT_SECONDS,
    ) -> None:
        self._stub = queue_grpc.StepQueueServiceStub(channel)
        self._credentials = credentials
        self._runner = runner
        self._registry = registry
        self._runner_id = runner_id
        self._wait_seconds = wait_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="step-poller")

    async def stop(self) -> None:
        """Stops asking for work. A poll in flight is abandoned: whatever it had taken is
        retried by the engine after its heartbeat timeout, like the steps close() stops."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        handlers = [spec.name for spec in self._registry.handlers()]
        if not handlers:
            log.warning("no step handlers registered: not polling for work")
            return
        backoff = INITIAL_BACKOFF_SECONDS
        while True:
            await self._runner.wait_for_slot()
            free = min(self._runner.free_slots, MAX_ATTEMPTS_PER_POLL)
            if free <= 0:
                return  # the runner is closing
            request = queue_pb2.PollStepAttemptsRequest(
                runner_id=self._runner_id,
                handlers=handlers,
                max_attempts=free,
                wait_seconds=self._wait_seconds,
            )
            try:
                reply = await self._stub.PollStepAttempts(
                    request,
                    timeout=self._wait_seconds + POLL_DEADLINE_MARGIN_SECONDS,
                    metadata=self._credentials.metadata(),
                )
            except grpc.aio.AioRpcError as exc:
                level = logging.INFO if exc.code() == grpc.StatusCode.UNAVAILABLE else logging.ERROR
                log.log(level, "poll failed: %s %s", exc.code().name, exc.details())
                # Jitter keeps pioneers that lost the engine together from returning in step.
                await asyncio.sleep(random.uniform(backoff / 2, backoff))
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            backoff = INITIAL_BACKOFF_SECONDS
            for task in reply.tasks:
                self._start(task)

    def _start(self, task: queue_pb2.StepTask) -> None:
        spec = self._registry.get(task.handler)
        try:
            if spec is None:
                raise PioneerError(f"the engine handed out handler {task.handler!r}")
            self._runner.accept(task, spec.function)
        except PioneerError as exc:
            # Not expected (pioneer asked for its own handlers and its free slots); the
            # engine retries the attempt after its heartbeat timeout.
            log.error(
                "taken attempt not started: %s",
                exc,
                extra={"execution_id": task.execution_id, "step": task.step_name},
            )
