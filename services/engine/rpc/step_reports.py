"""StepReportService: a runner's reports of the attempts it took, and their blobs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from discovery.engine.v1 import execution_pb2 as pb
from discovery.engine.v1 import step_report_service_pb2 as sr
from discovery.engine.v1 import step_report_service_pb2_grpc as sr_grpc

from services.engine.domain.errors import InvalidArgument
from services.engine.rpc import convert
from services.engine.rpc.servicer import (
    MAX_REPORTS_PER_CALL,
    Context,
    Servicer,
    reports_at_most,
    required_text,
)

READ_BLOB_MESSAGE_BYTES = 1024 * 1024


class StepReportServicer(Servicer, sr_grpc.StepReportServiceServicer):
    # A runner is bound to its step by the attempt token alone: it holds no tenant.
    async def ReportStepProgress(
        self, request: sr.ReportStepProgressRequest, context: Context
    ) -> sr.ReportStepProgressResponse:
        reports = [request.progress] if request.HasField("progress") else []
        reports.extend(
            reports_at_most(request.more_progress, MAX_REPORTS_PER_CALL, "more_progress")
        )
        cancelled = await self._runner.reports.report_progress(
            required_text(request.execution_id, "execution_id"),
            required_text(request.step_name, "step_name"),
            required_text(request.attempt_token, "attempt_token"),
            self._within_rate(request.attempt_token, reports),
            tenant=self._caller(context).runs_for,
        )
        return sr.ReportStepProgressResponse(cancel_requested=cancelled)

    async def CompleteStep(
        self, request: sr.CompleteStepRequest, context: Context
    ) -> sr.CompleteStepResponse:
        error = None
        if request.HasField("error"):
            error = {
                "reason": request.error.reason or "step_failed",
                "type": request.error.type,
                "message": request.error.message[:4000],
            }
        await self._runner.reports.complete_step(
            required_text(request.execution_id, "execution_id"),
            required_text(request.step_name, "step_name"),
            required_text(request.attempt_token, "attempt_token"),
            request.success,
            convert.from_struct(request.result),
            error,
            progress=self._within_rate(
                request.attempt_token,
                reports_at_most(request.progress, MAX_REPORTS_PER_CALL, "progress"),
            ),
            tenant=self._caller(context).runs_for,
        )
        return sr.CompleteStepResponse()

    def _within_rate(
        self, attempt_token: str, reports: Iterable[pb.StepProgress]
    ) -> list[dict[str, Any]]:
        """The reports within the attempt's progress rate. The others are faster than the log
        should grow: kept as the heartbeat they also are; the step's next progress within
        the rate, and its completion, say where it got to."""
        return [
            convert.progress_to_dict(report)
            for report in reports
            if not self._limits.progress.take(attempt_token)
        ]

    async def ReadBlob(
        self, request: sr.ReadBlobRequest, context: Context
    ) -> AsyncIterator[sr.ReadBlobResponse]:
        chunks = await self._runner.reports.read_blob(
            required_text(request.execution_id, "execution_id"),
            required_text(request.attempt_token, "attempt_token"),
            required_text(request.blob_id, "blob_id"),
            tenant=self._caller(context).runs_for,
        )
        async for chunk in chunks:
            # Small messages fit any client's default 4 MiB receive cap.
            for offset in range(0, len(chunk), READ_BLOB_MESSAGE_BYTES):
                yield sr.ReadBlobResponse(chunk=chunk[offset : offset + READ_BLOB_MESSAGE_BYTES])

    async def WriteBlob(
        self, requests: AsyncIterator[sr.WriteBlobRequest], context: Context
    ) -> sr.WriteBlobResponse:
        first = await anext(aiter(requests), None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument("header", "the first message must be the header")

        execution_id = required_text(first.header.execution_id, "header.execution_id")
        # The runner holds no tenant: the blob counts against its execution's. An unknown
        # execution is the runner's own refusal (write_blob), before any chunk is kept.
        tenant = await self._runner.tenant_of(execution_id)
        usage = self._limits.usage

        async def chunks() -> AsyncIterator[bytes]:
            size = 0
            async for request in requests:
                if request.HasField("header"):
                    raise InvalidArgument("header", "only the first message is a header")
                size += len(request.chunk)
                if tenant is not None:
                    usage.check_bytes(tenant, size)  # before anything is stored
                yield request.chunk

        ref = await self._runner.reports.write_blob(
            execution_id,
            required_text(first.header.attempt_token, "header.attempt_token"),
            chunks(),
            tenant=self._caller(context).runs_for,
        )
        if tenant is not None:
            usage.add_bytes(tenant, ref.size_bytes)
        return sr.WriteBlobResponse(
            blob_id=ref.blob_id, size_bytes=ref.size_bytes, sha256=ref.sha256
        )
