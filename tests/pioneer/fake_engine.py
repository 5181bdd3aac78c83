"""A fake engine for pioneer's tests: a real `StepReportService` on a real socket.

It records every ReportStepProgress and CompleteStep call, and can be told to refuse a token
as stale, to answer a few calls with a given status, or to request cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from discovery.engine.v1 import step_report_service_pb2 as report_pb2
from discovery.engine.v1 import step_report_service_pb2_grpc as report_grpc
from discovery.engine.v1.execution_pb2 import StepProgress


@dataclass
class Script:
    """How the fake engine answers; tests change it while steps run."""

    stale_tokens: set[str] = field(default_factory=set)
    cancel_tokens: set[str] = field(default_factory=set)
    # Answered, first to last, before the next call of that kind succeeds.
    progress_errors: list[grpc.StatusCode] = field(default_factory=list)
    complete_errors: list[grpc.StatusCode] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    # How long a progress call takes to answer: a slow database.
    progress_delay_seconds: float = 0.0


@dataclass(frozen=True)
class Call:
    request: Any
    # None: answered OK.
    refused_with: grpc.StatusCode | None


class FakeEngine(report_grpc.StepReportServiceServicer):
    def __init__(self) -> None:
        self.address = ""
        self.script = Script()
        self.progress_calls: list[Call] = []
        self.complete_calls: list[Call] = []
        # "progress" when a progress call is answered, "complete" when a completion arrives.
        self.order: list[str] = []
        self._changed = asyncio.Condition()

    # -- what tests read ----------------------------------------------------------------------

    def progress(self, token: str) -> list[StepProgress]:
        """Every progress report of one attempt the engine accepted, in order: those sent on
        their own, several to a call, and those the completion carried."""
        reports: list[StepProgress] = []
        for call in self.progress_calls:
            if call.refused_with is None and call.request.attempt_token == token:
                if call.request.HasField("progress"):
                    reports.append(call.request.progress)
                reports.extend(call.request.more_progress)
        for completion in self.completions(token)[:1]:
            reports.extend(completion.progress)
        return reports

    def heartbeats(self, token: str) -> list[report_pb2.ReportStepProgressRequest]:
        return [
            call.request
            for call in self.progress_calls
            if call.request.attempt_token == token
            and not call.request.HasField("progress")
            and not call.request.more_progress
        ]

    def completions(self, token: str) -> list[report_pb2.CompleteStepRequest]:
        """Accepted completions of one attempt."""
        return [
            call.request
            for call in self.complete_calls
            if call.refused_with is None and call.request.attempt_token == token
        ]

    def calls(self, token: str) -> int:
        """Every call that arrived for the attempt, refused ones included."""
        return sum(
            1
            for call in self.progress_calls + self.complete_calls
            if call.request.attempt_token == token
        )

    async def wait_for(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(predicate)

    async def completion(self, token: str, within: float = 5.0) -> report_pb2.CompleteStepRequest:
        await self.wait_for(lambda: bool(self.completions(token)), within)
        return self.completions(token)[0]

    # -- the service --------------------------------------------------------------------------

    async def ReportStepProgress(
        self, request: report_pb2.ReportStepProgressRequest, context: grpc.aio.ServicerContext
    ) -> report_pb2.ReportStepProgressResponse:
        code = self._refusal(request.attempt_token, self.script.progress_errors)
        await asyncio.sleep(self.script.progress_delay_seconds)
        await self._record(self.progress_calls, Call(request, code))
        if code is not None:
            await context.abort(code, f"fake engine answers {code.name}")
        return report_pb2.ReportStepProgressResponse(
            cancel_requested=request.attempt_token in self.script.cancel_tokens
        )

    async def CompleteStep(
        self, request: report_pb2.CompleteStepRequest, context: grpc.aio.ServicerContext
    ) -> report_pb2.CompleteStepResponse:
        code = self._refusal(request.attempt_token, self.script.complete_errors)
        await self._record(self.complete_calls, Call(request, code))
        if code is not None:
            await context.abort(code, f"fake engine answers {code.name}")
        return report_pb2.CompleteStepResponse()

    async def ReadBlob(
        self, request: report_pb2.ReadBlobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[report_pb2.ReadBlobResponse]:
        blob = self.script.blobs.get(request.blob_id)
        if blob is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no blob {request.blob_id!r}")
            return
        for start in range(0, len(blob), 1000):
            yield report_pb2.ReadBlobResponse(chunk=blob[start : start + 1000])

    def _refusal(self, token: str, errors: list[grpc.StatusCode]) -> grpc.StatusCode | None:
        if token in self.script.stale_tokens:
            return grpc.StatusCode.FAILED_PRECONDITION
        return errors.pop(0) if errors else None

    async def _record(self, calls: list[Call], call: Call) -> None:
        async with self._changed:
            calls.append(call)
            self.order.append("complete" if calls is self.complete_calls else "progress")
            self._changed.notify_all()


async def start_fake_engine() -> tuple[FakeEngine, grpc.aio.Server]:
    engine = FakeEngine()
    server = grpc.aio.server()
    report_grpc.add_StepReportServiceServicer_to_server(engine, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    engine.address = f"127.0.0.1:{port}"
    return engine, server
