"""The engine's request messages, built once for both clients (aio.py, sync.py), with the
deadline each call gets."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import schedule_service_pb2 as ss
from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import step_report_service_pb2 as sr
from discovery.engine.v1 import token_service_pb2 as ts
from google.protobuf import struct_pb2

# What the engine waits when a poll's wait_seconds is 0 (step_queue_service.proto).
DEFAULT_POLL_WAIT_SECONDS = 20.0
# A poll's deadline is its wait plus at least this much: the engine answers a second before
# the deadline, and the proto asks for "a few seconds longer" than the wait.
MIN_POLL_MARGIN_SECONDS = 5.0
BLOB_CHUNK_BYTES = 1024 * 1024


def struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    if value:
        message.update(value)
    return message


# Execution statuses by the names the REST API, the CLI and the engine's documents use:
# "failed" is EXECUTION_STATUS_FAILED.
EXECUTION_STATUSES: dict[str, ex_pb.ExecutionStatus] = {
    ex_pb.ExecutionStatus.Name(number).removeprefix("EXECUTION_STATUS_").lower(): cast(
        ex_pb.ExecutionStatus, number
    )
    for number in ex_pb.ExecutionStatus.values()
    if number != ex_pb.EXECUTION_STATUS_UNSPECIFIED
}


def list_executions(
    workflow_id: str,
    statuses: Sequence[ex_pb.ExecutionStatus],
    created_after: datetime | None,
    created_before: datetime | None,
    workflow_name_contains: str,
    page_size: int,
    page_token: str,
) -> es.ListExecutionsRequest:
    request = es.ListExecutionsRequest(
        workflow_id=workflow_id,
        statuses=statuses,
        workflow_name_contains=workflow_name_contains,
        page_size=page_size,
        page_token=page_token,
    )
    if created_after is not None:
        request.created_after.FromDatetime(created_after)
    if created_before is not None:
        request.created_before.FromDatetime(created_before)
    return request


def start(
    workflow_id: str, document: Mapping[str, Any], manual: bool, request_id: str, priority: int
) -> es.StartExecutionRequest:
    return es.StartExecutionRequest(
        workflow_id=workflow_id,
        input=struct(document),
        manual=manual,
        request_id=request_id,
        priority=priority,
    )


def execute(
    workflow_id: str,
    document: Mapping[str, Any],
    manual: bool,
    request_id: str,
    wait_seconds: float,
    priority: int,
) -> es.ExecuteWorkflowRequest:
    return es.ExecuteWorkflowRequest(
        workflow_id=workflow_id,
        input=struct(document),
        manual=manual,
        request_id=request_id,
        wait_seconds=wait_seconds,
        priority=priority,
    )


def advance(execution_id: str, data: Mapping[str, Any]) -> es.AdvanceExecutionRequest:
    return es.AdvanceExecutionRequest(execution_id=execution_id, data=struct(data))


def retry(execution_id: str, from_step: str, request_id: str) -> es.RetryExecutionRequest:
    return es.RetryExecutionRequest(
        execution_id=execution_id, from_step=from_step, request_id=request_id
    )


# A schedule's overlap policy by the names the REST API and the CLI use; "" the default (skip).
OVERLAP_POLICIES: dict[str, ss.OverlapPolicy] = {
    "": ss.OVERLAP_POLICY_UNSPECIFIED,
    "skip": ss.OVERLAP_POLICY_SKIP,
    "allow": ss.OVERLAP_POLICY_ALLOW,
}


def create_schedule(
    workflow_id: str,
    cron: str,
    timezone: str,
    document: Mapping[str, Any] | None,
    overlap: str,
    catchup_limit: int | None,
    priority: int,
    paused: bool,
) -> ss.CreateScheduleRequest:
    if overlap not in OVERLAP_POLICIES:
        raise ValueError(f"overlap: one of skip, allow, not {overlap!r}")
    schedule = ss.Schedule(
        workflow_id=workflow_id,
        cron=cron,
        timezone=timezone,
        input=struct(document),
        overlap=OVERLAP_POLICIES[overlap],
        priority=priority,
        paused=paused,
    )
    if catchup_limit is not None:
        schedule.catchup_limit = catchup_limit
    return ss.CreateScheduleRequest(schedule=schedule)


def revoke(token_or_id: str) -> ts.RevokeTokenRequest:
    # A token has two dots (header.claims.signature); an id has none.
    if token_or_id.count(".") == 2:
        return ts.RevokeTokenRequest(token=token_or_id)
    return ts.RevokeTokenRequest(token_id=token_or_id)


def progress(
    execution_id: str, step_name: str, attempt_token: str, report: ex_pb.StepProgress | None
) -> sr.ReportStepProgressRequest:
    return sr.ReportStepProgressRequest(
        execution_id=execution_id,
        step_name=step_name,
        attempt_token=attempt_token,
        progress=report,
    )


def completion(
    execution_id: str,
    step_name: str,
    attempt_token: str,
    success: bool,
    result: Mapping[str, Any] | None,
    error: ex_pb.StepError | None,
) -> sr.CompleteStepRequest:
    return sr.CompleteStepRequest(
        execution_id=execution_id,
        step_name=step_name,
        attempt_token=attempt_token,
        success=success,
        result=struct(result),
        error=error,
    )


def poll(
    runner_id: str, handlers: Sequence[str], max_attempts: int, wait_seconds: float
) -> sq.PollStepAttemptsRequest:
    return sq.PollStepAttemptsRequest(
        runner_id=runner_id, handlers=handlers, max_attempts=max_attempts, wait_seconds=wait_seconds
    )


def poll_deadline(wait_seconds: float, timeout: float) -> float:
    """The wait plus the unary deadline (at least MIN_POLL_MARGIN_SECONDS), so that the wait
    is not cut short."""
    return (wait_seconds or DEFAULT_POLL_WAIT_SECONDS) + max(timeout, MIN_POLL_MARGIN_SECONDS)


def blob_parts(execution_id: str, attempt_token: str, data: bytes) -> Iterator[sr.WriteBlobRequest]:
    """The header, then the bytes in chunks under the message cap."""
    yield sr.WriteBlobRequest(
        header=sr.WriteBlobHeader(execution_id=execution_id, attempt_token=attempt_token)
    )
    for offset in range(0, len(data), BLOB_CHUNK_BYTES):
        yield sr.WriteBlobRequest(chunk=data[offset : offset + BLOB_CHUNK_BYTES])
