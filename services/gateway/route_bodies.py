"""What each route's body must hold, checked before anything is sent to the engine:
starts, step reports, workflow definitions, step-queue polls, advances and cancels.

Every refusal names the field (`details.field`): 422 for a wrong type, a missing or unknown
field or a bad value; the engine checks its own bounds again and names the field the same way.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Any

from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import workflow_pb2 as wf_pb

from services.gateway.body_fields import (
    body_object,
    boolean,
    integer,
    known,
    number,
    string,
    type_name,
)
from services.gateway.errors import ValidationFailed
from services.gateway.params import MAX_ID_CHARS

PROGRESS_FIELDS = frozenset(
    {"percentage", "message", "current_task", "estimated_remaining_seconds", "custom_data"}
)
DOCUMENT_STRINGS = ("mime", "nombre_documento", "uuid_proceso")
EXECUTE_FIELDS = frozenset({"workflow_id", "data", "manual", "priority"})
# An execution's place in the step queue within its tenant: 1 first, 5 last (the engine's
# default, 3, when the request leaves it out).
MIN_PRIORITY = 1
MAX_PRIORITY = 5
WORKFLOW_FIELDS = frozenset({"name", "description", "steps", "input_schema", "max_parallel_steps"})
STEP_TIMEOUTS = (
    "timeout_seconds",
    "heartbeat_timeout_seconds",
    "schedule_to_start_timeout_seconds",
)
STEP_FIELDS = frozenset({"name", "handler", "retry", "after", *STEP_TIMEOUTS})
RETRY_FIELDS = frozenset(
    {"max_attempts", "initial_backoff_seconds", "backoff_multiplier", "max_backoff_seconds"}
)


# `POST /step-queue/poll`: the bounds of PollStepAttemptsRequest (step_queue_service.proto).
POLL_FIELDS = frozenset({"runner_id", "handlers", "max_attempts", "wait_seconds"})
MAX_POLL_HANDLERS = 200
MAX_POLL_ATTEMPTS = 100
MAX_POLL_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class PollRequest:
    runner_id: str
    handlers: tuple[str, ...]
    max_attempts: int
    # 0: the engine's default (20 s).
    wait_seconds: float


@dataclass(frozen=True)
class StartRequest:
    workflow_id: str
    document: dict[str, Any]
    manual: bool
    # 0: the engine's default.
    priority: int = 0


def check_base64(value: object, field: str) -> None:
    """The document: standard alphabet, canonical padding, nothing else. No whitespace or
    newlines, no `data:` prefix, no URL-safe characters, nothing that is not ASCII."""
    if not isinstance(value, str):
        raise ValidationFailed(
            field, f"expected a base64 string, got {type_name(value)}", code="INVALID_BASE64"
        )
    if not value:
        raise ValidationFailed(field, "the document is empty", code="INVALID_BASE64")
    try:
        encoded = value.encode("ascii")
        decoded = binascii.a2b_base64(encoded, strict_mode=True)
    except (UnicodeEncodeError, ValueError):
        raise ValidationFailed(
            field,
            "not strict base64 (standard alphabet A-Z a-z 0-9 + /, '=' padding only at the end,"
            " no whitespace, no data: prefix)",
            code="INVALID_BASE64",
        ) from None
    # Leftover bits that a decoder drops silently mean the text is not the one that encodes
    # these bytes: another way to smuggle two readings of one document.
    if binascii.b2a_base64(decoded, newline=False) != encoded:
        raise ValidationFailed(
            field, "not canonical base64 (non-zero padding bits)", code="INVALID_BASE64"
        )


def _document(value: dict[str, Any], where: str) -> tuple[dict[str, Any], bool | None]:
    """An input document: `manual` taken out as the mode, the seed's known fields checked."""
    document = dict(value)
    manual = None
    if "manual" in document:
        manual = boolean(document.pop("manual"), f"{where}manual")
    if "base64" in document:
        check_base64(document["base64"], f"{where}base64")
    for key in DOCUMENT_STRINGS:
        if key in document:
            string(document[key], f"{where}{key}", max_chars=1000, required=True)
    return document, manual


def start_by_path(workflow_id: str, body: object) -> StartRequest:
    """`POST /workflows/{id}/execute-async`: the body is the input document itself."""
    document, manual = _document(body_object({} if body is None else body), "")
    return StartRequest(workflow_id, document, bool(manual))


def start_legacy(body: object) -> StartRequest:
    """`POST /execute-async/` and `POST /execute/`: `{"workflow_id", "data", "manual",
    "priority"}`. The path form takes no priority: its body is the document itself, whose
    keys are the client's own."""
    value = body_object(body)
    known(value, EXECUTE_FIELDS, "")
    workflow_id = string(
        value.get("workflow_id"), "workflow_id", max_chars=MAX_ID_CHARS, required=True
    )
    data = value.get("data")
    document, manual = _document(body_object({} if data is None else data, "data"), "data.")
    if "manual" in value:
        manual = boolean(value["manual"], "manual")
    priority = 0
    if value.get("priority") is not None:
        priority = integer(value["priority"], "priority", low=MIN_PRIORITY, high=MAX_PRIORITY)
    return StartRequest(workflow_id, document, bool(manual), priority)


def progress(body: object) -> ex_pb.StepProgress | None:
    """A step's progress body; an empty body or `{}` is a heartbeat only."""
    if body is None:
        return None
    value = body_object(body)
    if not value:
        return None
    known(value, PROGRESS_FIELDS, "")
    if "percentage" not in value:
        raise ValidationFailed("percentage", "required, a number from 0 to 100")
    message = ex_pb.StepProgress(
        percentage=number(value["percentage"], "percentage", high=100.0),
        message=string(value.get("message"), "message", max_chars=2000),
        current_task=string(value.get("current_task"), "current_task", max_chars=500),
    )
    eta = value.get("estimated_remaining_seconds")
    if eta is not None:
        message.estimated_remaining_seconds = number(eta, "estimated_remaining_seconds")
    custom = value.get("custom_data")
    if custom is not None:
        message.custom_data.update(body_object(custom, "custom_data"))
    return message


def completion(body: object) -> tuple[bool, dict[str, Any], ex_pb.StepError | None]:
    """`{"success": bool, …result fields…}`: every key, `success` included, is the step's
    output, as pioneer sends it; a failure's `error` is a message or `{"type", "message"}`."""
    value = body_object(body)
    success = value.get("success")
    if not isinstance(success, bool):
        raise ValidationFailed("success", "required, true or false")
    error = value.get("error")
    if error is None:
        failure = ex_pb.StepError(reason="step_failed")
    elif isinstance(error, str):
        failure = ex_pb.StepError(reason="step_failed", message=error[:4000])
    else:
        details = body_object(error, "error")
        failure = ex_pb.StepError(
            reason="step_failed",
            type=string(details.get("type"), "error.type", max_chars=200),
            message=string(details.get("message"), "error.message", max_chars=4000),
        )
    return success, value, None if success else failure


def workflow_definition(body: object) -> wf_pb.Workflow:
    value = body_object(body)
    known(value, WORKFLOW_FIELDS, "")
    workflow = wf_pb.Workflow(
        name=string(value.get("name"), "name", max_chars=200, required=True),
        description=string(value.get("description"), "description", max_chars=10_000),
    )
    if value.get("max_parallel_steps") is not None:
        workflow.max_parallel_steps = integer(
            value["max_parallel_steps"], "max_parallel_steps", low=0, high=100
        )
    schema = value.get("input_schema")
    if schema is not None:
        # Only its shape here; the engine checks it is a JSON Schema, and names what is wrong.
        workflow.input_schema.update(body_object(schema, "input_schema"))
    steps = value.get("steps")
    if not isinstance(steps, list):
        raise ValidationFailed("steps", f"expected an array, got {type_name(steps)}")
    if not steps:
        raise ValidationFailed("steps", "a workflow needs at least one step")
    if len(steps) > 100:
        raise ValidationFailed("steps", "at most 100 steps")
    for i, raw in enumerate(steps):
        where = f"steps[{i}]"
        step = body_object(raw, where)
        known(step, STEP_FIELDS, f"{where}.")
        definition = workflow.steps.add(
            name=string(step.get("name"), f"{where}.name", max_chars=200, required=True),
            handler=string(step.get("handler"), f"{where}.handler", max_chars=200, required=True),
        )
        for key in STEP_TIMEOUTS:
            if step.get(key) is not None:
                setattr(definition, key, number(step[key], f"{where}.{key}"))
        # The engine checks that each name is a step's, and that no steps wait in a cycle.
        definition.after.extend(_names(step.get("after"), f"{where}.after"))
        retry_raw = step.get("retry")
        if retry_raw is None:
            continue
        retry = body_object(retry_raw, f"{where}.retry")
        known(retry, RETRY_FIELDS, f"{where}.retry.")
        if retry.get("max_attempts") is not None:
            definition.retry.max_attempts = integer(
                retry["max_attempts"], f"{where}.retry.max_attempts", low=0, high=1000
            )
        for key in ("initial_backoff_seconds", "backoff_multiplier", "max_backoff_seconds"):
            if retry.get(key) is not None:
                setattr(definition.retry, key, number(retry[key], f"{where}.retry.{key}"))
    return workflow


def _names(value: object, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationFailed(field, f"expected an array of step names, got {type_name(value)}")
    if len(value) > 100:
        raise ValidationFailed(field, "at most 100 names")
    return [
        string(name, f"{field}[{i}]", max_chars=200, required=True) for i, name in enumerate(value)
    ]


def retry_request(body: object) -> tuple[str, str]:
    """`{"from_step", "request_id"}`, both optional (the body too): the step to run again
    from (default: the one that failed) and the retry's idempotency key."""
    if body is None:
        return "", ""
    value = body_object(body)
    known(value, frozenset({"from_step", "request_id"}), "")
    return (
        string(value.get("from_step"), "from_step", max_chars=200),
        string(value.get("request_id"), "request_id", max_chars=128),
    )


def step_queue_poll(body: object) -> PollRequest:
    """`{"runner_id", "handlers": [...], "max_attempts", "wait_seconds"}`: what an HTTP runner
    offers and how long it waits. `max_attempts` absent: 1; `wait_seconds` absent or 0: the
    engine's default (20 s)."""
    value = body_object(body)
    known(value, POLL_FIELDS, "")
    runner_id = string(value.get("runner_id"), "runner_id", max_chars=MAX_ID_CHARS, required=True)
    handlers = value.get("handlers")
    if not isinstance(handlers, list):
        raise ValidationFailed(
            "handlers", f"expected an array of handler names, got {type_name(handlers)}"
        )
    if not handlers:
        raise ValidationFailed("handlers", "name at least one handler")
    if len(handlers) > MAX_POLL_HANDLERS:
        raise ValidationFailed("handlers", f"at most {MAX_POLL_HANDLERS} handlers")
    names = tuple(
        string(name, f"handlers[{i}]", max_chars=MAX_ID_CHARS, required=True)
        for i, name in enumerate(handlers)
    )
    max_attempts = 1
    if value.get("max_attempts") is not None:
        max_attempts = integer(value["max_attempts"], "max_attempts", low=1, high=MAX_POLL_ATTEMPTS)
    wait = 0.0
    if value.get("wait_seconds") is not None:
        wait = number(value["wait_seconds"], "wait_seconds", high=MAX_POLL_WAIT_SECONDS)
    return PollRequest(runner_id, names, max_attempts, wait)


def advance_data(body: object) -> dict[str, Any]:
    """`{"data": {…}}`, merged into the context before the next step; the body is optional."""
    if body is None:
        return {}
    value = body_object(body)
    known(value, frozenset({"data"}), "")
    data = value.get("data")
    return {} if data is None else body_object(data, "data")


def cancel_reason(body: object) -> str:
    if body is None:
        return ""
    value = body_object(body)
    known(value, frozenset({"reason"}), "")
    return string(value.get("reason"), "reason", max_chars=1000)
