"""Proto <-> domain. The attempt tokens in the domain never leave through here."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from discovery.engine.v1 import execution_pb2 as pb
from discovery.engine.v1 import execution_service_pb2 as service_pb
from discovery.engine.v1 import step_queue_service_pb2 as queue_pb
from discovery.engine.v1 import workflow_pb2 as wf_pb
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from services.engine.dispatch import Assignment
from services.engine.domain import events as ev
from services.engine.domain import execution as ex
from services.engine.domain import progress as pg
from services.engine.domain.errors import InvalidArgument
from services.engine.domain.workflow import StepDefinition, Workflow
from services.engine.store.repository import ExecutionFilter, QueueDepth, RunnerSeen

_STATUS = {
    ex.PENDING: pb.EXECUTION_STATUS_PENDING,
    ex.RUNNING: pb.EXECUTION_STATUS_RUNNING,
    ex.WAITING: pb.EXECUTION_STATUS_WAITING,
    ex.COMPLETED: pb.EXECUTION_STATUS_COMPLETED,
    ex.FAILED: pb.EXECUTION_STATUS_FAILED,
    ex.CANCELLED: pb.EXECUTION_STATUS_CANCELLED,
}
_STATUS_NAMES = {number: name for name, number in _STATUS.items()}
_ATTEMPT = {
    ex.ATTEMPT_QUEUED: pb.ATTEMPT_STATUS_QUEUED,
    ex.ATTEMPT_RUNNING: pb.ATTEMPT_STATUS_RUNNING,
    ex.ATTEMPT_SUCCESS: pb.ATTEMPT_STATUS_SUCCESS,
    ex.ATTEMPT_FAILED: pb.ATTEMPT_STATUS_FAILED,
    ex.ATTEMPT_TIMED_OUT: pb.ATTEMPT_STATUS_TIMED_OUT,
    ex.ATTEMPT_CANCELLED: pb.ATTEMPT_STATUS_CANCELLED,
}
_EVENT: dict[str, int] = {
    name: pb.EventType.Value(f"EVENT_TYPE_{name.upper()}") for name in ev.EVENT_TYPES
}


def struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    if value:
        # update() takes the same JSON values as json_format.ParseDict, several times faster.
        message.update(value)
    return message


def from_struct(message: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def workflow(value: Workflow) -> wf_pb.Workflow:
    message = wf_pb.Workflow(
        workflow_id=value.workflow_id,
        name=value.name,
        description=value.description,
        create_time=timestamp(value.created_at),
        version=value.version,
        update_time=timestamp(value.updated_at or value.created_at),
        steps=[
            wf_pb.StepDefinition(
                step_id=s.step_id,
                name=s.name,
                handler=s.handler,
                timeout_seconds=s.timeout_seconds,
                heartbeat_timeout_seconds=s.heartbeat_timeout_seconds,
                schedule_to_start_timeout_seconds=s.schedule_to_start_timeout_seconds or 0.0,
                after=list(s.after),
                retry=wf_pb.RetryPolicy(
                    max_attempts=s.retry.max_attempts,
                    initial_backoff_seconds=s.retry.initial_backoff_seconds,
                    backoff_multiplier=s.retry.backoff_multiplier,
                    max_backoff_seconds=s.retry.max_backoff_seconds,
                ),
            )
            for s in value.steps
        ],
        max_parallel_steps=value.max_parallel_steps,
    )
    if value.input_schema is not None:
        message.input_schema.CopyFrom(struct(value.input_schema.document))
    return message


def input_schema(message: wf_pb.Workflow) -> dict[str, Any] | None:
    """The definition's input schema as the client sent it; None when it has none."""
    return from_struct(message.input_schema) if message.HasField("input_schema") else None


def step_definitions(message: wf_pb.Workflow) -> list[dict[str, Any]]:
    """A definition as the client sent it, for the domain to validate."""
    return [
        {
            "name": s.name,
            "handler": s.handler,
            "timeout_seconds": s.timeout_seconds,
            "heartbeat_timeout_seconds": s.heartbeat_timeout_seconds,
            "schedule_to_start_timeout_seconds": s.schedule_to_start_timeout_seconds,
            "after": list(s.after),
            "retry": {
                "max_attempts": s.retry.max_attempts,
                "initial_backoff_seconds": s.retry.initial_backoff_seconds,
                "backoff_multiplier": s.retry.backoff_multiplier,
                "max_backoff_seconds": s.retry.max_backoff_seconds,
            },
        }
        for s in message.steps
    ]


def progress_from_dict(value: Mapping[str, Any] | None) -> pb.StepProgress | None:
    if not value:
        return None
    message = pb.StepProgress(
        percentage=float(value.get("percentage") or 0.0),
        message=value.get("message") or "",
        current_task=value.get("current_task") or "",
        custom_data=struct(value.get("custom_data")),
    )
    if value.get("estimated_remaining_seconds") is not None:
        message.estimated_remaining_seconds = float(value["estimated_remaining_seconds"])
    return message


def progress_to_dict(message: pb.StepProgress) -> dict[str, Any]:
    value: dict[str, Any] = {
        "percentage": message.percentage,
        "message": message.message,
        "current_task": message.current_task,
        "estimated_remaining_seconds": (
            message.estimated_remaining_seconds
            if message.HasField("estimated_remaining_seconds")
            else None
        ),
        "custom_data": from_struct(message.custom_data),
    }
    return value


def error(value: Mapping[str, Any] | None) -> pb.StepError | None:
    if not value:
        return None
    return pb.StepError(
        reason=str(value.get("reason") or ""),
        type=str(value.get("type") or ""),
        message=str(value.get("message") or ""),
        step_name=str(value.get("step_name") or ""),
    )


def attempt(value: ex.Attempt) -> pb.StepAttempt:
    return pb.StepAttempt(
        step_name=value.step_name,
        order=value.order,
        attempt=value.attempt,
        status=_ATTEMPT[value.status],
        start_time=timestamp(value.started_at),
        finish_time=timestamp(value.finished_at),
        duration_seconds=value.duration_seconds or 0.0,
        input_payload=struct(value.input_payload),
        output_payload=struct(value.output_payload),
        error=error(value.error),
        last_progress=progress_from_dict(value.last_progress),
        queue_time=timestamp(value.queued_at),
        runner_id=value.runner_id or "",
        superseded=value.superseded,
    )


def execution(
    state: ex.ExecutionState,
    typical_seconds: Mapping[str, float],
    now: datetime,
    *,
    summary: bool = False,
) -> pb.Execution:
    p = pg.progress(state, typical_seconds, now)
    progress = pb.ExecutionProgress(
        total_steps=p.total_steps,
        completed_steps=p.completed_steps,
        failed_steps=p.failed_steps,
        percentage=p.percentage,
        is_completed=p.is_completed,
        is_failed=p.is_failed,
        is_running=p.is_running,
    )
    if p.estimated_remaining_seconds is not None:
        progress.estimated_remaining_seconds = p.estimated_remaining_seconds
    message = pb.Execution(
        execution_id=state.execution_id,
        workflow_id=state.workflow.workflow_id,
        workflow_name=state.workflow.name,
        status=_STATUS[state.status],
        mode=pb.EXECUTION_MODE_MANUAL if state.mode == ex.MANUAL else pb.EXECUTION_MODE_AUTOMATIC,
        create_time=timestamp(state.created_at),
        update_time=timestamp(state.updated_at),
        progress=progress,
        last_seq=state.last_seq,
        error=error(state.error),
        priority=state.priority,
        workflow_version=state.workflow.version,
        retries=state.retries,
        running_steps=[_current_step(state.workflow, s) for s in state.running_steps],
    )
    step = state.current_step
    if step is not None:
        message.current_step.CopyFrom(_current_step(state.workflow, step))
    if not summary:
        message.input.CopyFrom(struct(state.input))
        message.dynamic_properties.CopyFrom(struct(state.dynamic_properties))
        message.steps_history.extend(attempt(a) for a in state.history)
    return message


def _current_step(workflow: Workflow, step: StepDefinition) -> pb.CurrentStep:
    found = workflow.step_named(step.name)
    assert found is not None
    return pb.CurrentStep(step_id=step.step_id, name=step.name, order=found[0] + 1)


def event(value: ev.Event) -> pb.ExecutionEvent:
    return pb.ExecutionEvent(
        execution_id=value.execution_id,
        seq=value.seq,
        type=_EVENT[value.type],  # type: ignore[arg-type]  # protoc .pyi: enum values are ints
        time=timestamp(value.time),
        data=struct(value.data),
    )


def execution_steps(state: ex.ExecutionState) -> list[service_pb.ExecutionStep]:
    return [
        service_pb.ExecutionStep(
            step_id=step.step_id,
            name=step.name,
            handler=step.handler,
            order=i + 1,
            state=pg.step_state(state, i),
            attempts=[attempt(a) for a in state.history if a.order == i + 1],
            after=list(step.after),
        )
        for i, step in enumerate(state.workflow.steps)
    ]


def step_task(value: Assignment) -> queue_pb.StepTask:
    return queue_pb.StepTask(
        execution_id=value.execution_id,
        step_name=value.step_name,
        handler=value.handler,
        attempt=value.attempt,
        attempt_token=value.attempt_token,
        input=struct(value.input_payload),
        timeout_seconds=value.timeout_seconds,
        heartbeat_timeout_seconds=value.heartbeat_timeout_seconds,
        queue_time=timestamp(value.queued_at),
        start_time=timestamp(value.started_at),
        traceparent=value.traceparent,
    )


def assignment(task: queue_pb.StepTask) -> Assignment:
    """A task another engine took for a runner that polled this one."""
    return Assignment(
        execution_id=task.execution_id,
        step_name=task.step_name,
        handler=task.handler,
        attempt=task.attempt,
        attempt_token=task.attempt_token,
        input_payload=from_struct(task.input),
        timeout_seconds=task.timeout_seconds,
        heartbeat_timeout_seconds=task.heartbeat_timeout_seconds,
        queued_at=task.queue_time.ToDatetime(tzinfo=UTC),
        started_at=task.start_time.ToDatetime(tzinfo=UTC),
        traceparent=task.traceparent,
    )


def queue_depth(value: QueueDepth) -> queue_pb.QueueDepth:
    return queue_pb.QueueDepth(
        handler=value.handler,
        tenant=value.tenant,
        ready=value.ready,
        oldest_queue_time=timestamp(value.oldest_queued_at),
    )


def queue_runner(value: RunnerSeen) -> queue_pb.QueueRunner:
    return queue_pb.QueueRunner(
        runner_id=value.runner_id,
        handlers=value.handlers,
        free_slots=value.free_slots,
        last_poll_time=timestamp(value.last_poll_at),
    )


def execution_filter(request: service_pb.ListExecutionsRequest) -> ExecutionFilter:
    """ListExecutions' filters; INVALID_ARGUMENT names the first bad one."""
    statuses: set[str] = set()
    for i, number in enumerate(request.statuses):
        if number not in _STATUS_NAMES:
            raise InvalidArgument(f"statuses[{i}]", "an execution status, not UNSPECIFIED")
        statuses.add(_STATUS_NAMES[number])
    after = _datetime(request.created_after) if request.HasField("created_after") else None
    before = _datetime(request.created_before) if request.HasField("created_before") else None
    if after is not None and before is not None and before <= after:
        raise InvalidArgument("created_before", "must be later than created_after")
    if len(request.workflow_name_contains) > 200:
        raise InvalidArgument("workflow_name_contains", "at most 200 characters")
    return ExecutionFilter(
        workflow_id=request.workflow_id,
        statuses=frozenset(statuses),
        created_after=after,
        created_before=before,
        workflow_name_contains=request.workflow_name_contains,
    )


def _datetime(value: timestamp_pb2.Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)
