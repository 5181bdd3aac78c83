"""A step runner outside pioneer, as a team that speaks only HTTP would write one.

It is a real `StepRunnerService` on a real socket that the engine dispatches the `external`
handler to. It runs nothing itself: it hands each attempt (with its token) to the test, which
then reports progress and completion over the gateway's HTTP endpoints with `X-Attempt-Token`.
Any other handler is answered NOT_FOUND, so the engine's pool passes it on to pioneer.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import grpc
from discovery.pioneer.v1 import step_runner_service_pb2 as pb
from discovery.pioneer.v1 import step_runner_service_pb2_grpc as pb_grpc

HANDLER = "external"


class ExternalRunner(pb_grpc.StepRunnerServiceServicer):
    def __init__(self) -> None:
        self.port = 0
        self.cancelled: list[pb.CancelStepRequest] = []
        self._attempts: defaultdict[str, asyncio.Queue[pb.StartStepRequest]] = defaultdict(
            asyncio.Queue
        )
        self._seen: set[str] = set()
        self._server: Any = None

    async def start(self) -> None:
        self._server = grpc.aio.server()
        pb_grpc.add_StepRunnerServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop(0)

    async def next_attempt(self, execution_id: str, seconds: float = 10) -> pb.StartStepRequest:
        """The next attempt the engine handed over for this execution."""
        return await asyncio.wait_for(self._attempts[execution_id].get(), seconds)

    async def StartStep(
        self, request: pb.StartStepRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.StartStepResponse:
        if request.handler != HANDLER:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no handler {request.handler!r}")
        if request.attempt_token not in self._seen:  # StartStep is idempotent per token
            self._seen.add(request.attempt_token)
            self._attempts[request.execution_id].put_nowait(request)
        return pb.StartStepResponse()

    async def CancelStep(
        self, request: pb.CancelStepRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CancelStepResponse:
        self.cancelled.append(request)
        return pb.CancelStepResponse()

    async def ListHandlers(
        self, request: pb.ListHandlersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListHandlersResponse:
        return pb.ListHandlersResponse(
            handlers=[pb.Handler(name=HANDLER, description="reports over HTTP")]
        )
