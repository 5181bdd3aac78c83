"""What a test reports for an attempt it holds (taken by the `external` runner, which runs
nothing itself): progress, and the end, a success or a failure."""

from __future__ import annotations

from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import step_report_service_pb2 as sr

from tests.stack import Client


async def report(
    client: Client, attempt: sq.StepTask, numbers: range, total: int | None = None
) -> None:
    """Progress reports of the attempt, one after another (each a new event: a report that
    repeats the one before it is not logged)."""
    for i in numbers:
        await client.reports.ReportStepProgress(
            sr.ReportStepProgressRequest(
                execution_id=attempt.execution_id,
                step_name=attempt.step_name,
                attempt_token=attempt.attempt_token,
                progress=ex_pb.StepProgress(
                    percentage=100 * i / (total or numbers.stop), message=f"page {i}"
                ),
            ),
            timeout=10,
        )


async def complete(client: Client, attempt: sq.StepTask, *, error: str | None = None) -> None:
    """The attempt's end: a success, or with `error` a failure saying it."""
    await client.reports.CompleteStep(
        sr.CompleteStepRequest(
            execution_id=attempt.execution_id,
            step_name=attempt.step_name,
            attempt_token=attempt.attempt_token,
            success=error is None,
            error=None if error is None else ex_pb.StepError(reason="step_failed", message=error),
        ),
        timeout=10,
    )
