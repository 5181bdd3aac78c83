"""MongoDB documents: the only place that knows how domain objects are laid out in storage."""

from __future__ import annotations

import base64
import functools
import json
from datetime import datetime
from typing import Any

from services.auth import DEFAULT_TENANT
from services.engine.domain.errors import InvalidArgument
from services.engine.domain.events import Event
from services.engine.domain.execution import (
    ATTEMPT_QUEUED,
    DEFAULT_PRIORITY,
    Attempt,
    ExecutionState,
)
from services.engine.domain.input_schema import InputSchema
from services.engine.domain.workflow import (
    DEFAULT_MAX_PARALLEL_STEPS,
    RetryPolicy,
    StepDefinition,
    Workflow,
)


def workflow_to_doc(workflow: Workflow, *, with_schema: bool = True) -> dict[str, Any]:
    doc = {
        "_id": workflow.workflow_id,
        "tenant_id": workflow.tenant_id,
        "name": workflow.name,
        "description": workflow.description,
        "created_at": workflow.created_at,
        "max_parallel_steps": workflow.max_parallel_steps,
        "version": workflow.version,
        "updated_at": workflow.updated_at or workflow.created_at,
        "steps": [
            {
                "step_id": s.step_id,
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
            for s in workflow.steps
        ],
    }
    if with_schema and workflow.input_schema is not None:
        # As JSON text: a schema's keys ("$ref", "$defs", "a.b") are not all valid field names.
        doc["input_schema_json"] = workflow.input_schema.text
    return doc


def workflow_from_doc(doc: dict[str, Any]) -> Workflow:
    return Workflow(
        workflow_id=doc["_id"],
        name=doc["name"],
        description=doc.get("description", ""),
        created_at=doc["created_at"],
        # Written before tenants existed: the single-tenant deployment's own.
        tenant_id=doc.get("tenant_id", DEFAULT_TENANT),
        max_parallel_steps=doc.get("max_parallel_steps", DEFAULT_MAX_PARALLEL_STEPS),
        # Written before workflows had versions: their first.
        version=doc.get("version", 1),
        updated_at=doc.get("updated_at", doc["created_at"]),
        input_schema=(
            _input_schema(doc["input_schema_json"]) if doc.get("input_schema_json") else None
        ),
        steps=tuple(
            StepDefinition(
                step_id=s["step_id"],
                name=s["name"],
                handler=s["handler"],
                timeout_seconds=s["timeout_seconds"],
                heartbeat_timeout_seconds=s["heartbeat_timeout_seconds"],
                retry=RetryPolicy(**s["retry"]),
                schedule_to_start_timeout_seconds=s.get("schedule_to_start_timeout_seconds"),
                after=tuple(s.get("after") or ()),
            )
            for s in doc["steps"]
        ),
    )


@functools.lru_cache(maxsize=256)
def _input_schema(text: str) -> InputSchema:
    """A stored schema, checked and compiled once per text: a start reads its workflow's
    document every time (a definition may have a new version), not its schema."""
    return InputSchema.parse(json.loads(text))


# The most of its attempts' payloads a status document holds, the newest first: the others
# it names by the events that carry them, each stored once in the log (a document over
# 16 MiB is refused, and an attempt's input can be a megabyte).
INLINE_PAYLOAD_BYTES = 1024 * 1024


def _history_to_docs(history: list[Attempt]) -> list[dict[str, Any]]:
    budget = INLINE_PAYLOAD_BYTES
    docs = []
    for a in reversed(history):
        inline = a.started_seq is None or a.payload_bytes <= budget
        if inline:
            budget = max(budget - a.payload_bytes, 0)
        docs.append(_attempt_to_doc(a, inline=inline))
    docs.reverse()
    return docs


def _attempt_to_doc(a: Attempt, *, inline: bool) -> dict[str, Any]:
    return {
        "step_name": a.step_name,
        "order": a.order,
        "attempt": a.attempt,
        "token": a.token,
        "status": a.status,
        "queued_at": a.queued_at,
        "started_at": a.started_at,
        "runner_id": a.runner_id,
        "finished_at": a.finished_at,
        "input_payload": a.input_payload if inline else None,
        "output_payload": a.output_payload if inline else None,
        "payloads_in_log": not inline,
        "started_seq": a.started_seq,
        "finished_seq": a.finished_seq,
        "error": a.error,
        "last_progress": a.last_progress,
        "superseded": a.superseded,
    }


def _attempt_from_doc(d: dict[str, Any]) -> Attempt:
    # A listing reads attempts without their payloads; a status document may leave them in
    # the log (the store reads them back: payloads_in_log). Attempts stored before the step
    # queue existed were queued when they started.
    fields = {k: v for k, v in d.items() if k != "payloads_in_log"}
    if fields.get("input_payload") is None:
        fields["input_payload"] = {}
    return Attempt(**{"queued_at": d.get("started_at"), **fields})


def payloads_in_log(doc: dict[str, Any]) -> list[int]:
    """The places in its history of the attempts whose payloads an execution document left
    in the log."""
    return [i for i, a in enumerate(doc.get("history") or []) if a.get("payloads_in_log")]


@functools.lru_cache(maxsize=1024)
def _workflow_doc(workflow: Workflow) -> dict[str, Any]:
    """A version of a definition never changes (an update makes another version): its
    document is made once, not at every status write. It is the definition the execution
    runs to its end, whatever versions come after (written once, with the execution).
    Shared: callers must not change it. Without the input schema: it is checked at the start
    only, from the workflow's own document, and need not be repeated in every execution."""
    return workflow_to_doc(workflow, with_schema=False)


def execution_to_doc(state: ExecutionState) -> dict[str, Any]:
    """An execution's document as it is first stored: what never changes, and the status."""
    doc: dict[str, Any] = {
        "_id": state.execution_id,
        "tenant_id": state.workflow.tenant_id,
        "workflow_id": state.workflow.workflow_id,
        "workflow_name": state.workflow.name,
        "workflow": _workflow_doc(state.workflow),
        "mode": state.mode,
        "input": state.input,
        "created_at": state.created_at,
        "priority": state.priority,
        **status_to_doc(state),
    }
    if state.request_id is not None:
        doc["request_id"] = state.request_id
        doc["request_hash"] = state.request_hash
    if state.traceparent is not None:
        doc["traceparent"] = state.traceparent
    if state.input_bytes:
        doc["input_bytes"] = state.input_bytes
    return doc


def status_to_doc(state: ExecutionState) -> dict[str, Any]:
    """The status projection: the fields a change can change. What never changes (the
    input, up to a megabyte, and the definition) is written once, by execution_to_doc.
    Lease fields are not in it: they have writers of their own, except that a terminal
    execution gives its lease up."""
    doc: dict[str, Any] = {
        "updated_at": state.updated_at,
        "status": state.status,
        "dynamic_properties": state.dynamic_properties,
        "step_index": state.step_index,
        "history": _history_to_docs(state.history),
        "last_seq": state.last_seq,
        "error": state.error,
        "progress_events": state.progress_events,
        "queue": _queue_entry(state),
        "retries": state.retries,
        "retry_request_ids": state.retry_request_ids,
    }
    if state.is_terminal:
        doc["lease_owner"] = None
        # Its last event's time: what retention finds ended executions by (schema.py).
        doc["ended_at"] = state.updated_at
    return doc


def _queue_entry(state: ExecutionState) -> dict[str, Any] | None:
    """The execution's places in the step queue while attempts of it wait for a runner:
    what GetStepQueue counts across engines. The log stays the truth; this field is part of
    the projection and is caught up with it. One field, not one per attempt, so that one
    index on `queue.state` finds every execution with work waiting."""
    queued = [a for a in state.live_attempts() if a.status == ATTEMPT_QUEUED]
    if not queued:
        return None
    return {
        "state": "ready",
        "attempts": [
            {
                "handler": state.workflow.steps[a.order - 1].handler,
                "order": a.order,
                "priority": state.priority,
                "queued_at": a.queued_at,
                # Other engines put it in their step queues from here (queue_mirror.py).
                "token": a.token,
            }
            for a in queued
        ],
    }


def queued_attempts(queue: dict[str, Any]) -> list[dict[str, Any]]:
    """The attempts of a `queue` field; one written before steps ran side by side is the
    entry of its one attempt."""
    return list(queue.get("attempts") or [queue])


def execution_from_doc(doc: dict[str, Any]) -> ExecutionState:
    return ExecutionState(
        execution_id=doc["_id"],
        workflow=workflow_from_doc(doc["workflow"]),
        mode=doc["mode"],
        input=doc.get("input") or {},
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        request_id=doc.get("request_id"),
        request_hash=doc.get("request_hash"),
        priority=doc.get("priority", DEFAULT_PRIORITY),
        status=doc["status"],
        dynamic_properties=doc.get("dynamic_properties") or {},
        step_index=doc.get("step_index"),
        history=[_attempt_from_doc(a) for a in doc.get("history") or []],
        last_seq=doc["last_seq"],
        error=doc.get("error"),
        # Written before the limit existed: counted from here on.
        progress_events=doc.get("progress_events", 0),
        traceparent=doc.get("traceparent"),
        input_bytes=doc.get("input_bytes", 0),
        retries=doc.get("retries", 0),
        retry_request_ids=list(doc.get("retry_request_ids") or []),
    )


def event_id(execution_id: str, seq: int) -> str:
    """An event's `_id`: its place in the log. Two writers of one seq collide on the primary
    key, and a stretch of the log is read by its ids (point lookups): the (execution_id, seq)
    index this replaces cost the database a third of its time per event written."""
    return f"{execution_id}:{seq}"


def event_to_doc(event: Event, tenant_id: str | None = None) -> dict[str, Any]:
    """`tenant_id`, the execution's, is for the readers of the log's change feed only (an
    event read back leaves it out)."""
    doc: dict[str, Any] = {
        "_id": event_id(event.execution_id, event.seq),
        "execution_id": event.execution_id,
        "seq": event.seq,
        "type": event.type,
        "time": event.time,
        "data": event.data,
    }
    if event.attempt_token is not None:
        doc["attempt_token"] = event.attempt_token
    if tenant_id is not None:
        doc["tenant_id"] = tenant_id
    return doc


def event_from_doc(doc: dict[str, Any]) -> Event:
    return Event(
        execution_id=doc["execution_id"],
        seq=doc["seq"],
        type=doc["type"],
        time=doc["time"],
        data=doc.get("data") or {},
        attempt_token=doc.get("attempt_token"),
    )


# Page tokens are opaque to clients: the sort key of the last item they saw.


def encode_page_token(time: datetime, item_id: str) -> str:
    raw = json.dumps({"t": time.isoformat(), "i": item_id}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_page_token(token: str) -> tuple[datetime, str]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token.encode()))
        return datetime.fromisoformat(raw["t"]), str(raw["i"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument("page_token", "not a token this server gave") from exc
