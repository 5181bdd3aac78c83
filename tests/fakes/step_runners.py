"""A stand-in for the pioneer pool that runs nothing and remembers every attempt it was given."""

from __future__ import annotations

from discovery.pioneer.v1 import step_runner_service_pb2 as pb


class RecordingStepRunners:
    def __init__(self, handlers: set[str]) -> None:
        self._handlers = handlers
        self.started: list[pb.StartStepRequest] = []
        self.cancelled: list[pb.CancelStepRequest] = []

    async def start_step(self, request: pb.StartStepRequest) -> str:
        self.started.append(request)
        return "recording"

    async def cancel_step(self, request: pb.CancelStepRequest) -> None:
        self.cancelled.append(request)

    async def handlers(self) -> set[str]:
        return self._handlers

    def tokens(self, execution_id: str) -> list[str]:
        """Attempt tokens dispatched for the execution, oldest first, without repeats."""
        seen: list[str] = []
        for request in self.started:
            if request.execution_id == execution_id and request.attempt_token not in seen:
                seen.append(request.attempt_token)
        return seen
