"""The engine's client to the step runners (pioneer): StartStep, CancelStep, ListHandlers.

Several pioneer processes may serve one engine. Attempts are spread round-robin; a pioneer
that is unavailable, busy or without the handler is skipped for the next one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Protocol

import grpc
from discovery.pioneer.v1 import step_runner_service_pb2 as pb
from discovery.pioneer.v1 import step_runner_service_pb2_grpc as pb_grpc

from services.auth import ServiceToken
from services.engine.domain.errors import PioneerUnavailable
from services.tls import Tls, aio_channel

log = logging.getLogger(__name__)

CALL_SECONDS = 5.0
_SKIP = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.NOT_FOUND,
}


class StepRunners(Protocol):
    """What the runner needs from the step runners; PioneerPool is the real one."""

    async def start_step(self, request: pb.StartStepRequest) -> str: ...

    async def cancel_step(self, request: pb.CancelStepRequest) -> None: ...

    async def handlers(self) -> set[str]: ...


class PioneerPool:
    def __init__(
        self,
        targets: tuple[str, ...],
        max_message_bytes: int,
        token: ServiceToken,
        tls: Tls | None = None,
    ) -> None:
        self._token = token
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        self._channels = [aio_channel(t, tls, options=options) for t in targets]
        self._stubs = [pb_grpc.StepRunnerServiceStub(c) for c in self._channels]
        self._targets = targets
        self._next = itertools.cycle(range(len(targets)))

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels))

    async def start_step(self, request: pb.StartStepRequest) -> str:
        """Hands the attempt to the first pioneer that takes it; returns its target."""
        first = next(self._next)
        errors: list[str] = []
        for offset in range(len(self._stubs)):
            i = (first + offset) % len(self._stubs)
            try:
                await self._stubs[i].StartStep(
                    request, timeout=CALL_SECONDS, metadata=self._token.metadata()
                )
                return self._targets[i]
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _SKIP:
                    raise
                errors.append(f"{self._targets[i]}: {exc.code().name} {exc.details()}")
        raise PioneerUnavailable("no pioneer took the step: " + "; ".join(errors))

    async def cancel_step(self, request: pb.CancelStepRequest) -> None:
        """Best effort, to every pioneer: the one that runs the attempt stops it."""
        results = await asyncio.gather(
            *(
                s.CancelStep(request, timeout=CALL_SECONDS, metadata=self._token.metadata())
                for s in self._stubs
            ),
            return_exceptions=True,
        )
        if all(isinstance(r, Exception) for r in results):
            log.warning("no pioneer acknowledged cancelling %s", request.execution_id)

    async def handlers(self) -> set[str]:
        results = await asyncio.gather(
            *(
                s.ListHandlers(
                    pb.ListHandlersRequest(), timeout=CALL_SECONDS, metadata=self._token.metadata()
                )
                for s in self._stubs
            ),
            return_exceptions=True,
        )
        answered = [r for r in results if isinstance(r, pb.ListHandlersResponse)]
        if not answered:
            raise PioneerUnavailable("no pioneer answered ListHandlers")
        return {h.name for r in answered for h in r.handlers}
