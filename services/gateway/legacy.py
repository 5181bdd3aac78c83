"""Executions and their events in the legacy JSON shapes the original clients read
(CONTRACT.md): the status document, the listings, the 202 of a start, and the
WebSocket/SSE event messages with their first snapshot.

Field names are kept exactly, Spanish ones included. Times and free-form data are spelled
by legacy_values.py; workflows and the step queue have modules of their own
(legacy_workflows.py, legacy_step_queue.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es

from services.gateway.legacy_values import iso, plain_struct

TERMINAL_EVENTS = frozenset(
    {
        ex_pb.EVENT_TYPE_WORKFLOW_COMPLETED,
        ex_pb.EVENT_TYPE_WORKFLOW_FAILED,
        ex_pb.EVENT_TYPE_WORKFLOW_CANCELLED,
    }
)
# Keys every event message starts with; an event's data never overrides them.
_HEADER = ("event", "execution_id", "seq", "timestamp")


def urls(execution_id: str) -> dict[str, str]:
    return {
        "status": f"/executions/{execution_id}/status",
        "steps": f"/executions/{execution_id}/steps",
        "websocket": f"/ws/{execution_id}",
    }


def _suffix(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def execution_status(value: int) -> str:
    return _suffix(ex_pb.ExecutionStatus.Name(value), "EXECUTION_STATUS_")


def attempt_status(value: int) -> str:
    return _suffix(ex_pb.AttemptStatus.Name(value), "ATTEMPT_STATUS_")


def event_name(value: int) -> str:
    try:
        return _suffix(ex_pb.EventType.Name(value), "EVENT_TYPE_")
    except ValueError:  # a kind this gateway does not know yet
        return f"event_type_{value}"


def error(message: ex_pb.StepError) -> dict[str, Any]:
    value: dict[str, Any] = {"reason": message.reason, "message": message.message}
    if message.type:
        value["type"] = message.type
    if message.step_name:
        value["step_name"] = message.step_name
    return value


def progress_body(message: ex_pb.StepProgress) -> dict[str, Any]:
    """A step's progress as the seed's steps report it."""
    return {
        "percentage": message.percentage,
        "message": message.message,
        "current_task": message.current_task,
        "estimated_remaining_seconds": (
            message.estimated_remaining_seconds
            if message.HasField("estimated_remaining_seconds")
            else None
        ),
        "custom_data": plain_struct(message.custom_data),
    }


def history_entry(attempt: ex_pb.StepAttempt) -> dict[str, Any]:
    """One attempt. `queued_at` is when it entered the step queue; `started_at` stays null
    while it waits there (status `queued`) and is when a runner (`runner_id`) took it."""
    finished = attempt.HasField("finish_time") and iso(attempt.finish_time) is not None
    status = attempt_status(attempt.status)
    return {
        "step_name": attempt.step_name,
        "status": status,
        "attempt": attempt.attempt,
        "queued_at": iso(attempt.queue_time),
        "started_at": iso(attempt.start_time),
        "finished_at": iso(attempt.finish_time) if finished else None,
        "duration_seconds": attempt.duration_seconds if finished else None,
        "input_payload": plain_struct(attempt.input_payload),
        "output_payload": plain_struct(attempt.output_payload) if finished else None,
        "order": attempt.order,
        "error": error(attempt.error) if attempt.HasField("error") else None,
        "last_progress": (
            progress_body(attempt.last_progress) if attempt.HasField("last_progress") else None
        ),
        "runner_id": attempt.runner_id or None,
        # A retry of the execution ran its step again: history, not the step's current one.
        "superseded": attempt.superseded,
    }


def execution_progress(progress: ex_pb.ExecutionProgress) -> dict[str, Any]:
    return {
        "total_steps": progress.total_steps,
        "completed_steps": progress.completed_steps,
        "failed_steps": progress.failed_steps,
        "percentage": progress.percentage,
        "is_completed": progress.is_completed,
        "is_failed": progress.is_failed,
        "is_running": progress.is_running,
        "estimated_remaining_seconds": (
            progress.estimated_remaining_seconds
            if progress.HasField("estimated_remaining_seconds")
            else None
        ),
    }


def current_step(execution: ex_pb.Execution) -> dict[str, Any] | None:
    if not execution.HasField("current_step"):
        return None
    return _step(execution.current_step)


def _step(step: ex_pb.CurrentStep) -> dict[str, Any]:
    return {"id": step.step_id, "name": step.name, "order": step.order}


def standing_step(
    execution: ex_pb.Execution, steps: Iterable[es.ExecutionStep]
) -> dict[str, Any] | None:
    """The step a run stands at when the engine names none (it has not queued its first
    step yet, or it has ended): the step of its latest attempt (the last step of a completed
    run, the one that failed or was cancelled), else its first step.

    The seed's own polling client reads `status.get('current_step', {}).get('name', 'N/A')`
    before it looks at `is_completed`: it was written for a status whose `current_step` is
    an object or absent, and a null there ends it with an AttributeError on its last poll."""
    history = execution.steps_history
    order = history[-1].order if history else 1
    for step in steps:
        if step.order == order:
            return {"id": step.step_id, "name": step.name, "order": step.order}
    return None


def status_document(execution: ex_pb.Execution) -> dict[str, Any]:
    """`GET /executions/{id}/status`: exactly the contract's keys, plus `last_seq` (where a
    WebSocket client resumes from), `error` (why it failed or was cancelled) and `priority`
    (its steps' place in the step queue, 1 first to 5 last)."""
    return {
        "execution_id": execution.execution_id,
        "workflow_id": execution.workflow_id,
        "workflow_name": execution.workflow_name,
        # The version of its workflow it runs (GET /workflows/{id}?version=N): the one
        # current when it started, whatever PUT /workflows/{id} made since.
        "workflow_version": execution.workflow_version,
        "status": execution_status(execution.status),
        "mode": "manual" if execution.mode == ex_pb.EXECUTION_MODE_MANUAL else "automatic",
        "created_at": iso(execution.create_time),
        "updated_at": iso(execution.update_time),
        "context": {
            "execution_id": execution.execution_id,
            "dynamic_properties": plain_struct(execution.dynamic_properties),
        },
        "current_step": current_step(execution),
        "progress": execution_progress(execution.progress),
        "steps_history": [history_entry(a) for a in execution.steps_history],
        "tracking_urls": urls(execution.execution_id),
        "last_seq": execution.last_seq,
        "error": error(execution.error) if execution.HasField("error") else None,
        "priority": execution.priority or None,
        # Every step queued or running now: more than one where steps run side by side
        # (`current_step` is the lowest in order of them).
        "running_steps": [_step(s) for s in execution.running_steps],
        # Times RetryExecution took it back to running.
        "retries": execution.retries,
    }


def execution_summary(execution: ex_pb.Execution) -> dict[str, Any]:
    """One entry of `GET /executions`: what a list of recent runs shows, no history."""
    return {
        "execution_id": execution.execution_id,
        "workflow_id": execution.workflow_id,
        "workflow_name": execution.workflow_name,
        "status": execution_status(execution.status),
        "created_at": iso(execution.create_time),
        "updated_at": iso(execution.update_time),
        "current_step": current_step(execution),
        "progress": execution_progress(execution.progress),
    }


def accepted(execution: ex_pb.Execution, watch_token: str) -> dict[str, Any]:
    """The 202 answer of both execute-async forms; `watch_token` (added to the legacy keys)
    lets a browser follow this one execution and nothing else, for 15 minutes.

    `websocket_url` carries that token (`/ws/{id}?access_token=…`): the seed's browser client
    opens `ws://host${websocket_url}` as it is, and a browser cannot send a header on a
    WebSocket. The path is the legacy one; only the query is added."""
    links = urls(execution.execution_id)
    websocket_url = links["websocket"]
    if watch_token:
        websocket_url += "?" + urlencode({"access_token": watch_token})
    return {
        "execution_id": execution.execution_id,
        "workflow_id": execution.workflow_id,
        "status": execution_status(execution.status),
        "tracking_url": links["status"],
        "websocket_url": websocket_url,
        "created_at": iso(execution.create_time),
        "watch_token": watch_token,
    }


def steps_listing(execution_id: str, steps: Iterable[es.ExecutionStep]) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "steps": [
            {
                "id": step.step_id,
                "name": step.name,
                "handler": step.handler,
                "order": step.order,
                "state": step.state,
                # The steps it waits for; [] in a workflow whose steps run in order.
                "after": list(step.after),
                "attempts": [history_entry(a) for a in step.attempts],
            }
            for step in steps
        ],
    }


def event(message: ex_pb.ExecutionEvent) -> dict[str, Any]:
    """One log entry as a legacy WebSocket message: the header, then the event's own fields
    (`step`, `step_name`, `progress`, `status`, `output`, `error`…) as the engine logged them."""
    value: dict[str, Any] = {
        "event": event_name(message.type),
        "execution_id": message.execution_id,
        "seq": message.seq,
        "timestamp": iso(message.time),
    }
    for key, item in plain_struct(message.data).items():
        if key not in _HEADER:
            value[key] = item
    return value


def snapshot(execution: ex_pb.Execution, max_bytes: int) -> str:
    """The first message of a live stream that does not resume, as JSON (ASCII: its length
    is its size in bytes). One that would take more than `max_bytes` leaves the big fields
    out of its status document (the outputs in the context, each attempt's input and output
    payloads; then, if still too big, the whole history) and adds `status_url`, where the
    whole document is, and `omitted`, what was left out. The contract's keys keep their
    meaning: a client reading the state, progress and current step is served as before."""
    status = status_document(execution)
    message: dict[str, Any] = {
        "event": "snapshot",
        "execution_id": execution.execution_id,
        "seq": execution.last_seq,
        "timestamp": iso(execution.update_time),
        "status": status,
    }
    text = json.dumps(message)
    if len(text) <= max_bytes:
        return text
    del status["context"]["dynamic_properties"]
    for entry in status["steps_history"]:
        del entry["input_payload"], entry["output_payload"]
    omitted = [
        "context.dynamic_properties",
        "steps_history[].input_payload",
        "steps_history[].output_payload",
    ]
    message["status_url"] = status["tracking_urls"]["status"]
    message["omitted"] = omitted
    text = json.dumps(message)
    if len(text) > max_bytes:
        del status["steps_history"]
        omitted.append("steps_history")
        text = json.dumps(message)
    return text
