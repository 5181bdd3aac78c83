"""The OpenAPI 3.1 description of the legacy REST API, served at `/openapi.json`.

Built here from the same limits the gateway enforces, and checked in as `openapi.json` beside
this file (`python -m services.gateway.openapi > services/gateway/openapi.json`; a test fails
when the two differ). Request schemas are never stricter than the gateway and the engine
together, so anything they call invalid is refused with a 4xx; response schemas are exact.
"""

from __future__ import annotations

import json
from typing import Any

from services.gateway.params import (
    DEFAULT_EXECUTIONS_LIMIT,
    MAX_ID_CHARS,
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_PAGE_SIZE,
    MAX_SEQ_DIGITS,
    MAX_TOKEN_CHARS,
    MAX_WORKFLOW_VERSION,
    PAGE_TOKEN,
)
from services.gateway.route_bodies import (
    MAX_POLL_ATTEMPTS,
    MAX_POLL_HANDLERS,
    MAX_POLL_WAIT_SECONDS,
    MAX_PRIORITY,
    MIN_PRIORITY,
)
from services.gateway.schedule_bodies import (
    MAX_CATCHUP_LIMIT,
    MAX_CRON_CHARS,
    MAX_TIMEZONE_CHARS,
    OVERLAPS,
)

Schema = dict[str, Any]

# Canonical standard base64 of at least one byte.
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
SEQ_PATTERN = f"^[0-9]{{1,{MAX_SEQ_DIGITS}}}$"
EXECUTION_STATUSES = ["pending", "running", "waiting", "completed", "failed", "cancelled"]
ATTEMPT_STATUSES = ["queued", "running", "success", "failed", "timed_out", "cancelled"]
STEP_STATES = [
    "pending",
    "waiting",
    "queued",
    "running",
    "retrying",
    "success",
    "failed",
    "timed_out",
    "cancelled",
]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(
    properties: dict[str, Schema], *, extra: bool = False, optional: tuple[str, ...] = ()
) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": [key for key in properties if key not in optional],
        "additionalProperties": extra,
    }


STRING: Schema = {"type": "string"}
TIME: Schema = {"type": "string", "format": "date-time"}
WATCH_TOKEN: Schema = {
    "type": "string",
    "description": "A token that may read and watch this one execution for 15 minutes.",
}
WEBSOCKET_URL: Schema = {
    "type": "string",
    "description": (
        "Where to follow the execution live: /ws/{execution_id}?access_token=<watch_token>,"
        " a path a browser opens as it is (ws://host + websocket_url); the token may watch"
        " this one execution for 15 minutes."
    ),
}
FREE: Schema = {"type": "object", "additionalProperties": True}
INT: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}

SCHEMAS: dict[str, Schema] = {
    "Error": obj(
        {
            "error": obj(
                {
                    "code": {**STRING, "description": "Stable, machine-readable."},
                    "message": STRING,
                    "details": {
                        **FREE,
                        "description": "The field at fault (`field`), ids, limits.",
                    },
                }
            )
        }
    ),
    "StepError": obj(
        {"reason": STRING, "message": STRING, "type": STRING, "step_name": STRING},
        optional=("type", "step_name"),
    ),
    "StepProgressReport": obj(
        {
            "percentage": NUMBER,
            "message": STRING,
            "current_task": STRING,
            "estimated_remaining_seconds": nullable(NUMBER),
            "custom_data": FREE,
        }
    ),
    "HistoryEntry": obj(
        {
            "step_name": STRING,
            "status": {"type": "string", "enum": ATTEMPT_STATUSES},
            "attempt": INT,
            "queued_at": {
                **nullable(TIME),
                "description": "When the attempt entered the step queue.",
            },
            "started_at": {
                **nullable(TIME),
                "description": "When a runner took it; null while it is queued.",
            },
            "finished_at": nullable(TIME),
            "duration_seconds": nullable(NUMBER),
            "input_payload": FREE,
            "output_payload": nullable(FREE),
            "order": INT,
            "error": nullable(ref("StepError")),
            "last_progress": nullable(ref("StepProgressReport")),
            "runner_id": {**nullable(STRING), "description": "The runner that took it."},
            "superseded": {
                **BOOL,
                "description": "A retry of the execution ran its step again: this attempt is"
                " history, not the step's current one.",
            },
        }
    ),
    "TrackingUrls": obj({"status": STRING, "steps": STRING, "websocket": STRING}),
    "CurrentStep": obj({"id": STRING, "name": STRING, "order": INT}),
    "ExecutionProgress": obj(
        {
            "total_steps": INT,
            "completed_steps": INT,
            "failed_steps": INT,
            "percentage": NUMBER,
            "is_completed": BOOL,
            "is_failed": BOOL,
            "is_running": BOOL,
            "estimated_remaining_seconds": nullable(NUMBER),
        }
    ),
    "StatusDocument": obj(
        {
            "execution_id": STRING,
            "workflow_id": STRING,
            "workflow_name": STRING,
            "workflow_version": {
                **INT,
                "description": "The version of its workflow it runs: the current one when it"
                " started, whatever PUT /workflows/{workflow_id} made since.",
            },
            "status": {"type": "string", "enum": EXECUTION_STATUSES},
            "mode": {"type": "string", "enum": ["automatic", "manual"]},
            "created_at": nullable(TIME),
            "updated_at": nullable(TIME),
            "context": obj({"execution_id": STRING, "dynamic_properties": FREE}),
            "current_step": {
                **nullable(ref("CurrentStep")),
                "description": (
                    "The step the execution is at; once it has ended, the step it ended at"
                    " (the last one run). Null only for a workflow without steps."
                ),
            },
            "progress": ref("ExecutionProgress"),
            "steps_history": {"type": "array", "items": ref("HistoryEntry")},
            "tracking_urls": ref("TrackingUrls"),
            "last_seq": {
                **INT,
                "description": "The last event this status reflects; resume a WebSocket here.",
            },
            "error": nullable(ref("StepError")),
            "priority": {
                **nullable({"type": "integer", "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY}),
                "description": "Its steps' place in the step queue: 1 first, 5 last.",
            },
            "running_steps": {
                "type": "array",
                "items": ref("CurrentStep"),
                "description": "Every step queued or running now, by order; current_step is"
                " the first of them.",
            },
            "retries": {**INT, "description": "Times a retry took it back to running."},
        }
    ),
    "ExecutionSummary": obj(
        {
            "execution_id": STRING,
            "workflow_id": STRING,
            "workflow_name": STRING,
            "status": {"type": "string", "enum": EXECUTION_STATUSES},
            "created_at": nullable(TIME),
            "updated_at": nullable(TIME),
            "current_step": nullable(ref("CurrentStep")),
            "progress": ref("ExecutionProgress"),
        }
    ),
    "ExecutionList": obj(
        {
            "executions": {"type": "array", "items": ref("ExecutionSummary")},
            "next_page_token": nullable(STRING),
        }
    ),
    "Accepted": obj(
        {
            "execution_id": STRING,
            "workflow_id": STRING,
            "status": {"type": "string", "enum": EXECUTION_STATUSES},
            "tracking_url": STRING,
            "websocket_url": WEBSOCKET_URL,
            "created_at": nullable(TIME),
            "watch_token": WATCH_TOKEN,
        }
    ),
    "StillRunning": obj(
        {
            "execution_id": STRING,
            "workflow_id": STRING,
            "status": {"type": "string", "enum": EXECUTION_STATUSES},
            "tracking_url": STRING,
            "websocket_url": WEBSOCKET_URL,
            "created_at": nullable(TIME),
            "last_seq": {
                **INT,
                "description": "Open the WebSocket with &after_seq=last_seq added.",
            },
            "watch_token": WATCH_TOKEN,
        }
    ),
    "WatchToken": obj(
        {
            "execution_id": STRING,
            "watch_token": WATCH_TOKEN,
            "expires_in": {**INT, "description": "Seconds the token stays valid."},
        }
    ),
    "Document": {
        "type": "object",
        "description": (
            "The input document; free-form. `manual` selects manual mode and is not kept in"
            " the document. `base64` is checked as strict, canonical standard base64."
        ),
        "properties": {
            "base64": {
                "type": "string",
                "minLength": 4,
                "pattern": BASE64_PATTERN,
                "example": "JVBERi0xLjQK",
            },
            "mime": {"type": "string", "minLength": 1, "maxLength": 1000},
            "nombre_documento": {"type": "string", "minLength": 1, "maxLength": 1000},
            "uuid_proceso": {"type": "string", "minLength": 1, "maxLength": 1000},
            "manual": BOOL,
        },
        "additionalProperties": True,
    },
    "ExecuteRequest": obj(
        {
            "workflow_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
            "data": nullable(ref("Document")),
            "manual": BOOL,
            "priority": {
                **nullable({"type": "integer", "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY}),
                "description": "Place of its steps in the step queue: 1 first, 5 last (default 3).",
            },
        },
        optional=("data", "manual", "priority"),
    ),
    "ProgressRequest": {
        **obj(
            {
                "percentage": {"type": "number", "minimum": 0, "maximum": 100},
                "message": nullable({"type": "string", "maxLength": 2000}),
                "current_task": nullable({"type": "string", "maxLength": 500}),
                "estimated_remaining_seconds": nullable({"type": "number", "minimum": 0}),
                "custom_data": nullable(FREE),
            },
            optional=("message", "current_task", "estimated_remaining_seconds", "custom_data"),
        ),
        "description": "The step's progress; `{}` (or no body) is a heartbeat only.",
        "required": [],
        "dependentRequired": {
            "message": ["percentage"],
            "current_task": ["percentage"],
            "estimated_remaining_seconds": ["percentage"],
            "custom_data": ["percentage"],
        },
    },
    "ProgressReply": obj(
        {
            "execution_id": STRING,
            "step_name": STRING,
            "accepted": BOOL,
            "cancel_requested": {**BOOL, "description": "True once cancelled: stop the step."},
        }
    ),
    "CompletionRequest": {
        "type": "object",
        "description": (
            "Every field, `success` included, becomes the step's output_payload; on failure"
            " `error` is a message or {type, message}."
        ),
        "properties": {
            "success": BOOL,
            "error": {
                "anyOf": [
                    STRING,
                    {"type": "null"},
                    {
                        "type": "object",
                        "properties": {
                            "type": nullable({"type": "string", "maxLength": 200}),
                            "message": nullable({"type": "string", "maxLength": 4000}),
                        },
                    },
                ]
            },
        },
        "required": ["success"],
        "additionalProperties": True,
    },
    "CompletionReply": obj(
        {"execution_id": STRING, "step_name": STRING, "accepted": BOOL, "success": BOOL}
    ),
    "AdvanceRequest": obj({"data": nullable(FREE)}, optional=("data",)),
    "CancelRequest": obj(
        {"reason": nullable({"type": "string", "maxLength": 1000})}, optional=("reason",)
    ),
    "RetryRequest": obj(
        {
            "from_step": {
                **nullable({"type": "string", "maxLength": 200}),
                "description": "The step to run again from, by name; absent: the step that"
                " failed (for a cancelled run, the first not done).",
            },
            "request_id": {
                **nullable({"type": "string", "maxLength": 128}),
                "description": "Idempotency key: the same one again retries the run once.",
            },
        },
        optional=("from_step", "request_id"),
    ),
    "RetryPolicy": obj(
        {
            "max_attempts": nullable({"type": "integer", "minimum": 0, "maximum": 1000}),
            "initial_backoff_seconds": nullable({"type": "number", "minimum": 0}),
            "backoff_multiplier": nullable({"type": "number", "minimum": 0}),
            "max_backoff_seconds": nullable({"type": "number", "minimum": 0}),
        },
        optional=(
            "max_attempts",
            "initial_backoff_seconds",
            "backoff_multiplier",
            "max_backoff_seconds",
        ),
    ),
    "StepDefinition": obj(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "handler": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "description": "A handler some pioneer offers (sleep, fail, echo…).",
            },
            "timeout_seconds": nullable({"type": "number", "minimum": 0}),
            "heartbeat_timeout_seconds": nullable({"type": "number", "minimum": 0}),
            "schedule_to_start_timeout_seconds": {
                **nullable({"type": "number", "minimum": 0}),
                "description": "How long an attempt may wait in the step queue for a runner"
                " before the step fails (not retried); 0 or absent: as long as it takes.",
            },
            "retry": nullable(ref("RetryPolicy")),
            "after": {
                **nullable({"type": "array", "maxItems": 100, "items": STRING}),
                "description": "The steps (by name) that must succeed before this one starts."
                " When no step names any, steps run one after another; once one does, each"
                " step starts as soon as the steps it names succeeded (none: at once), side by"
                " side with the others. Unknown names and cycles are refused (422).",
            },
        },
        optional=(
            "timeout_seconds",
            "heartbeat_timeout_seconds",
            "schedule_to_start_timeout_seconds",
            "retry",
            "after",
        ),
    ),
    "WorkflowDefinition": obj(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "description": nullable({"type": "string", "maxLength": 10_000}),
            "steps": {
                "type": "array",
                "minItems": 1,
                "maxItems": 100,
                "items": ref("StepDefinition"),
            },
            "input_schema": {
                **nullable(FREE),
                "description": "A JSON Schema (draft 2020-12) every execution's input must"
                " match, checked at every start before anything is stored: a mismatch is 422"
                " naming each field (input.<key>). At most 64 KiB and 32 levels; every $ref"
                " within the schema (nothing is fetched). Absent or null: any input.",
            },
            "max_parallel_steps": {
                **nullable({"type": "integer", "minimum": 0, "maximum": 100}),
                "description": "The most steps of one execution queued or running at once;"
                " 0 or absent: 10.",
            },
        },
        optional=("description", "input_schema", "max_parallel_steps"),
    ),
    "Workflow": obj(
        {
            "workflow_id": STRING,
            "name": STRING,
            "description": STRING,
            "created_at": nullable(TIME),
            "version": {
                **INT,
                "description": "1 when created, one more at each PUT that changed it.",
            },
            "updated_at": {
                **nullable(TIME),
                "description": "When this version was made (created_at: the first one's).",
            },
            "steps": {
                "type": "array",
                "items": obj(
                    {
                        "id": STRING,
                        "name": STRING,
                        "handler": STRING,
                        "timeout_seconds": NUMBER,
                        "heartbeat_timeout_seconds": NUMBER,
                        "schedule_to_start_timeout_seconds": NUMBER,
                        "after": {"type": "array", "items": STRING},
                        "retry": obj(
                            {
                                "max_attempts": INT,
                                "initial_backoff_seconds": NUMBER,
                                "backoff_multiplier": NUMBER,
                                "max_backoff_seconds": NUMBER,
                            }
                        ),
                    }
                ),
            },
            "input_schema": nullable(FREE),
            "max_parallel_steps": INT,
        }
    ),
    "StepQueuePoll": obj(
        {
            "runner_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_ID_CHARS,
                "description": "Names the runner in the step's history and in GET /queue.",
            },
            "handlers": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_POLL_HANDLERS,
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
                "description": "The handlers this runner offers.",
            },
            "max_attempts": {
                **nullable({"type": "integer", "minimum": 1, "maximum": MAX_POLL_ATTEMPTS}),
                "description": "How many attempts it can start now (its free slots); absent: 1.",
            },
            "wait_seconds": {
                **nullable({"type": "number", "minimum": 0, "maximum": MAX_POLL_WAIT_SECONDS}),
                "description": "How long to wait for work before answering empty; absent or 0:"
                " 20 s.",
            },
        },
        optional=("max_attempts", "wait_seconds"),
    ),
    "StepAttempts": obj(
        {
            "attempts": {
                "type": "array",
                "items": obj(
                    {
                        "execution_id": STRING,
                        "step_name": STRING,
                        "handler": STRING,
                        "attempt": INT,
                        "attempt_token": {
                            **STRING,
                            "description": "Send it as X-Attempt-Token with every report.",
                        },
                        "input": FREE,
                        "timeout_seconds": NUMBER,
                        "heartbeat_timeout_seconds": NUMBER,
                        "queued_at": nullable(TIME),
                        "started_at": nullable(TIME),
                        "report_urls": obj({"progress": STRING, "complete": STRING}),
                    }
                ),
            }
        }
    ),
    "ScheduleRequest": obj(
        {
            "cron": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_CRON_CHARS,
                "description": "Five fields: minute hour day-of-month month day-of-week, e.g."
                ' "0 3 * * *" (03:00 every day); names, ranges, steps, L and # as Debian\'s cron.'
                " A bad one is 422 naming cron.",
            },
            "timezone": {
                **nullable({"type": "string", "maxLength": MAX_TIMEZONE_CHARS}),
                "description": "The IANA zone the expression is read in (Europe/Madrid);"
                " daylight saving as Debian's cron: a time the clock skips runs when it jumps,"
                " a time it repeats runs once. Absent, null or empty: UTC. An unknown one is 422"
                " naming timezone.",
            },
            "input": {
                **nullable(FREE),
                "description": "The input of every execution it starts, checked against the"
                " workflow's input_schema now and at every start (422 naming input.<key>).",
            },
            "overlap": {
                **nullable({"type": "string", "enum": list(OVERLAPS)}),
                "description": "When a time comes while the execution it started last still"
                " runs: skip (the default) starts nothing and counts the time in skipped_runs;"
                " allow starts it anyway.",
            },
            "catchup_limit": {
                **nullable({"type": "integer", "minimum": 0, "maximum": MAX_CATCHUP_LIMIT}),
                "description": "How many of the times missed while no engine ran start when one"
                " comes back: the latest ones; the others are skipped. Absent: 1.",
            },
            "priority": {
                **nullable({"type": "integer", "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY}),
                "description": "Of the executions it starts, in the step queue: 1 first, 5"
                " last. Absent: the engine's default (3).",
            },
            "paused": {**nullable(BOOL), "description": "Created paused: starts nothing."},
        },
        optional=("timezone", "input", "overlap", "catchup_limit", "priority", "paused"),
    ),
    "Schedule": obj(
        {
            "schedule_id": STRING,
            "workflow_id": STRING,
            "cron": STRING,
            "timezone": STRING,
            "input": FREE,
            "overlap": {"type": "string", "enum": list(OVERLAPS)},
            "catchup_limit": INT,
            "priority": {**nullable(INT), "description": "null: the engine's default."},
            "paused": BOOL,
            "next_run_time": {
                **nullable(TIME),
                "description": "When it starts an execution next; null while paused.",
            },
            "last_run_time": {
                **nullable(TIME),
                "description": "The time of the last execution it started.",
            },
            "last_execution_id": nullable(STRING),
            "created_at": TIME,
            "runs": {**INT, "description": "Executions it started."},
            "skipped_runs": {
                **INT,
                "description": "Times that started nothing: overlap, catch-up limit, paused,"
                " or a start refused (a quota).",
            },
        }
    ),
    "ScheduleList": obj(
        {
            "schedules": {"type": "array", "items": ref("Schedule")},
            "next_page_token": nullable(STRING),
        }
    ),
    "WorkflowList": obj(
        {
            "workflows": {"type": "array", "items": ref("Workflow")},
            "next_page_token": nullable(STRING),
        }
    ),
    "WorkflowVersionList": obj(
        {
            "versions": {"type": "array", "items": ref("Workflow")},
            "next_page_token": nullable(STRING),
        }
    ),
    "StepsListing": obj(
        {
            "execution_id": STRING,
            "steps": {
                "type": "array",
                "items": obj(
                    {
                        "id": STRING,
                        "name": STRING,
                        "handler": STRING,
                        "order": INT,
                        "state": {"type": "string", "enum": STEP_STATES},
                        "after": {"type": "array", "items": STRING},
                        "attempts": {"type": "array", "items": ref("HistoryEntry")},
                    }
                ),
            },
        }
    ),
    "SseEvent": {
        "type": "object",
        "description": (
            "One event of the stream: `id` is its seq (absent on a final error), `data` one"
            " legacy event message as JSON (the snapshot first, unless resuming)."
        ),
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "event": {"type": "string", "const": "message"},
            "data": {"type": "string", "contentMediaType": "application/json"},
            "retry": {"type": "integer"},
        },
        "required": ["data"],
    },
    "QueueDepth": obj(
        {
            "handler": STRING,
            "ready": {**INT, "description": "Attempts waiting for a runner."},
            "oldest_queued_at": {
                **nullable(TIME),
                "description": "When the oldest of them entered the queue.",
            },
            "oldest_wait_seconds": {
                **nullable(NUMBER),
                "description": "How long the oldest has waited, as of the answer.",
            },
        }
    ),
    "QueueRunner": obj(
        {
            "runner_id": STRING,
            "handlers": {"type": "array", "items": STRING},
            "free_slots": {**INT, "description": "The free slots it last asked work for."},
            "last_poll_at": nullable(TIME),
        }
    ),
    "StepQueue": obj(
        {
            "tenant": {
                "type": "array",
                "items": ref("QueueDepth"),
                "description": "The caller's tenant, by handler.",
            },
            "total": {
                "type": "array",
                "items": ref("QueueDepth"),
                "description": "Every tenant together, by handler (no tenant named).",
            },
            "runners": {
                "type": "array",
                "items": ref("QueueRunner"),
                "description": "Runners that polled in the last minutes.",
            },
        }
    ),
    "Health": obj(
        {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "engine": {"type": "string", "enum": ["serving", "unavailable"]},
            "streams": {**INT, "description": "Live WebSocket and SSE streams held."},
        }
    ),
}

# PUT /workflows/{workflow_id}: the current version after the call, and whether it made it.
SCHEMAS["WorkflowUpdated"] = obj(
    {
        **SCHEMAS["Workflow"]["properties"],
        "changed": {
            **BOOL,
            "description": "False when the body equalled the current version: none was made.",
        },
    }
)

ERRORS = {
    "400": "Malformed JSON, duplicate keys, nesting too deep, a bad query parameter.",
    "401": "No token, or one that is expired, forged or malformed (WWW-Authenticate: Bearer);"
    " or a step report without X-Attempt-Token.",
    "403": "The token's role may not do this (a runner starting runs, a client reporting"
    " steps, a non-admin creating workflows).",
    "404": "Unknown workflow, execution, schedule or step; the same shape for each.",
    "409": "An idempotency key reused for another request, a stale attempt token, an"
    " execution in the wrong state, a workflow name the tenant has for another definition.",
    "413": "The body is larger than the cap (64 MiB by default), counted after inflating"
    " gzip or deflate; refused before reading when Content-Length says so.",
    "415": "A Content-Type other than JSON, or a Content-Encoding other than gzip/deflate.",
    "422": "A field with a wrong type or value, or unknown; `details.field` names it.",
    "429": "Too many live streams, or the engine is shedding load.",
    "503": "The engine is unavailable; retry.",
}


def _error(description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": ref("Error")}}}


def _json(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def responses(ok: dict[str, Schema], *errors: str) -> dict[str, Schema]:
    answer = dict(ok)
    for status in errors:
        answer[status] = _error(ERRORS[status])
    answer["default"] = _error("Any other failure, with the same error body.")
    return answer


def body(schema: Schema, *, required: bool = True) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def path_param(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
    }


EXECUTION_ID = path_param("execution_id", "The execution's id.")
WORKFLOW_ID = path_param("workflow_id", "The workflow's id.")
STEP_NAME = path_param("step_name", "The step's name in the workflow.")
SCHEDULE_ID = path_param("schedule_id", "The schedule's id.")
IDEMPOTENCY_KEY: Schema = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "The same key with the same request returns the same execution; with another"
        " request it is 409."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_CHARS},
}
ATTEMPT_TOKEN: Schema = {
    "name": "X-Attempt-Token",
    "in": "header",
    "required": True,
    "description": (
        "The attempt token the step runner got with the attempt (PollStepAttempts, the pull"
        " route or a webhook push). Alone, without Authorization, it admits this one report:"
        " a pushed HTTP runner holds no other credential."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_TOKEN_CHARS},
}
AFTER_SEQ: Schema = {
    "name": "after_seq",
    "in": "query",
    "required": False,
    "description": "Resume after this seq (0 to the execution's last seq).",
    "schema": {"type": "integer", "minimum": 0, "maximum": 10**MAX_SEQ_DIGITS - 1},
}


def _links(key: str, *operations: str) -> dict[str, Schema]:
    return {
        operation: {
            "operationId": operation,
            "parameters": {key: f"$response.body#/{key}"},
        }
        for operation in operations
    }


PAGE_TOKEN_PARAM: Schema = {
    "name": "page_token",
    "in": "query",
    "required": False,
    "description": "The next_page_token of the previous page.",
    "schema": {"type": "string", "pattern": PAGE_TOKEN.pattern},
}


EXECUTION_LINKS = _links(
    "execution_id", "getStatus", "listSteps", "streamEvents", "advance", "cancel", "retry"
)
WORKFLOW_VERSION: Schema = {
    "name": "version",
    "in": "query",
    "required": False,
    "description": "One version of the workflow (GET /workflows/{workflow_id}/versions);"
    " absent or 0: the current one.",
    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_WORKFLOW_VERSION},
}
WORKFLOW_LINKS = _links("workflow_id", "getWorkflow", "executeAsync")
SCHEDULE_LINKS = _links(
    "schedule_id", "getSchedule", "pauseSchedule", "resumeSchedule", "deleteSchedule"
)
ACCEPTED = {
    "202": {
        **_json("Started; follow it at tracking_url or websocket_url.", ref("Accepted")),
        "headers": {"Location": {"schema": STRING}},
        "links": EXECUTION_LINKS,
    }
}
START_ERRORS = ("400", "404", "409", "413", "415", "422", "429", "503")


SECURITY_SCHEMES: Schema = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "Authorization: Bearer <token>; its role says what it may do.",
    },
    "accessToken": {
        "type": "apiKey",
        "in": "query",
        "name": "access_token",
        "description": "The WebSocket and SSE routes only, for browsers: a watch token.",
    },
}
# What an operation that needs a token may also answer.
AUTH_ERRORS = ("401", "403")


def spec() -> Schema:
    return _with_auth_errors(_spec())


def _with_auth_errors(described: Schema) -> Schema:
    for operations in described["paths"].values():
        for operation in operations.values():
            if operation.get("security") != []:
                for status in AUTH_ERRORS:
                    operation["responses"].setdefault(status, _error(ERRORS[status]))
    return described


def _spec() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Discovery gateway (legacy REST API)",
            "version": "1.0.0",
            "description": (
                "Long document workflows run in the background; follow them by polling"
                " /executions/{id}/status, over the WebSocket /ws/{id}, or as Server-Sent"
                " Events at /executions/{id}/events. Errors are"
                ' {"error": {"code", "message", "details"}}. Times are ISO 8601 UTC with Z.'
                " Every operation but the public ones takes a bearer token; a deployment may"
                " also admit requests without one, as one client of one tenant"
                " (GATEWAY_ANONYMOUS_ACCESS; `make run` does, on loopback). A request that"
                " sends a token is judged by it alone."
            ),
        },
        "paths": {
            "/workflows/{workflow_id}/execute-async": {
                "post": {
                    "operationId": "executeAsync",
                    "summary": "Start an execution; the body is the input document.",
                    "parameters": [WORKFLOW_ID, IDEMPOTENCY_KEY],
                    "requestBody": body(ref("Document"), required=False),
                    "responses": responses(ACCEPTED, *START_ERRORS),
                }
            },
            "/execute-async/": {
                "post": {
                    "operationId": "executeAsyncLegacy",
                    "summary": "Start an execution (legacy form).",
                    "parameters": [IDEMPOTENCY_KEY],
                    "requestBody": body(ref("ExecuteRequest")),
                    "responses": responses(ACCEPTED, *START_ERRORS),
                }
            },
            "/execute/": {
                "post": {
                    "operationId": "executeSync",
                    "summary": "Start an execution and wait for its end, within a bound.",
                    "parameters": [IDEMPOTENCY_KEY],
                    "requestBody": body(ref("ExecuteRequest")),
                    "responses": responses(
                        {
                            "200": _json("Ended: the final status.", ref("StatusDocument")),
                            "202": {
                                **_json(
                                    "Still running at the bound; watch from last_seq.",
                                    ref("StillRunning"),
                                ),
                                "headers": {"Location": {"schema": STRING}},
                                "links": EXECUTION_LINKS,
                            },
                        },
                        *START_ERRORS,
                    ),
                }
            },
            "/executions": {
                "get": {
                    "operationId": "listExecutions",
                    "summary": "The most recent executions, newest first, without history;"
                    " every filter given applies, and an unknown query parameter is a 400.",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "description": f"How many (default {DEFAULT_EXECUTIONS_LIMIT}).",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                        },
                        PAGE_TOKEN_PARAM,
                        {
                            "name": "status",
                            "in": "query",
                            "required": False,
                            "description": "Only these statuses (repeat it, or separate them"
                            " with commas).",
                            "schema": {"type": "string", "enum": EXECUTION_STATUSES},
                        },
                        {
                            "name": "workflow_id",
                            "in": "query",
                            "required": False,
                            "description": "Only this workflow's executions.",
                            "schema": {"type": "string", "maxLength": MAX_ID_CHARS},
                        },
                        *(
                            {
                                "name": name,
                                "in": "query",
                                "required": False,
                                "description": f"Only executions created {when} this time"
                                " (ISO 8601 with a time zone).",
                                "schema": {"type": "string", "format": "date-time"},
                            }
                            for name, when in (
                                ("created_after", "at or after"),
                                ("created_before", "before"),
                            )
                        ),
                        {
                            "name": "name",
                            "in": "query",
                            "required": False,
                            "description": "Only executions whose workflow's name contains"
                            " it, whatever the case.",
                            "schema": {"type": "string", "maxLength": MAX_ID_CHARS},
                        },
                    ],
                    "responses": responses(
                        {"200": _json("Newest first.", ref("ExecutionList"))}, "400", "503"
                    ),
                }
            },
            "/executions/{execution_id}/status": {
                "get": {
                    "operationId": "getStatus",
                    "parameters": [EXECUTION_ID],
                    "responses": responses(
                        {"200": _json("The status document.", ref("StatusDocument"))},
                        "404",
                        "503",
                    ),
                }
            },
            "/executions/{execution_id}/steps": {
                "get": {
                    "operationId": "listSteps",
                    "parameters": [EXECUTION_ID],
                    "responses": responses(
                        {"200": _json("Every step and every attempt.", ref("StepsListing"))},
                        "404",
                        "503",
                    ),
                }
            },
            "/executions/{execution_id}/events": {
                "get": {
                    "operationId": "streamEvents",
                    "security": [{"bearer": []}, {"accessToken": []}],
                    "summary": "The execution's events as Server-Sent Events.",
                    "description": (
                        "Without Last-Event-ID (or after_seq) the first event is the snapshot"
                        " (a big one as on the WebSocket: with `status_url` and `omitted`)."
                        " Each event has `id: <seq>` and `data: <legacy event JSON>`."
                    ),
                    "parameters": [
                        EXECUTION_ID,
                        AFTER_SEQ,
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "pattern": SEQ_PATTERN},
                        },
                    ],
                    "responses": responses(
                        {
                            "200": {
                                "description": "The event stream, until the terminal event.",
                                "content": {"text/event-stream": {"schema": ref("SseEvent")}},
                            },
                            "204": {"description": "Nothing after that seq: the run is over."},
                        },
                        "400",
                        "404",
                        "429",
                        "503",
                    ),
                }
            },
            "/executions/{execution_id}/steps/{step_name}/progress": {
                "post": {
                    "operationId": "reportProgress",
                    # A bearer, or the attempt token alone (services/gateway/auth.py).
                    "security": [{"bearer": []}, {}],
                    "summary": "A step runner over HTTP reports progress (also its heartbeat).",
                    "parameters": [EXECUTION_ID, STEP_NAME, ATTEMPT_TOKEN],
                    "requestBody": body(ref("ProgressRequest"), required=False),
                    "responses": responses(
                        {"200": _json("Recorded.", ref("ProgressReply"))},
                        "400",
                        "401",
                        "404",
                        "409",
                        "413",
                        "415",
                        "422",
                        "503",
                    ),
                }
            },
            "/executions/{execution_id}/steps/{step_name}/complete": {
                "post": {
                    "operationId": "completeStep",
                    # A bearer, or the attempt token alone (services/gateway/auth.py).
                    "security": [{"bearer": []}, {}],
                    "summary": "A step runner over HTTP reports the attempt's result.",
                    "parameters": [EXECUTION_ID, STEP_NAME, ATTEMPT_TOKEN],
                    "requestBody": body(ref("CompletionRequest")),
                    "responses": responses(
                        {"200": _json("Recorded, or a repeat of it.", ref("CompletionReply"))},
                        "400",
                        "401",
                        "404",
                        "409",
                        "413",
                        "415",
                        "422",
                        "503",
                    ),
                }
            },
            "/executions/{execution_id}/watch-token": {
                "post": {
                    "operationId": "watchToken",
                    "summary": "A fresh 15-minute token that may watch this execution only.",
                    "description": (
                        "For browsers: open /ws/{id} or /executions/{id}/events with"
                        " ?access_token=<watch_token> instead of a long-lived key."
                    ),
                    "parameters": [EXECUTION_ID],
                    "responses": responses(
                        {"200": _json("The token.", ref("WatchToken"))}, "400", "404", "503"
                    ),
                }
            },
            "/executions/{execution_id}/advance": {
                "post": {
                    "operationId": "advance",
                    "summary": "Manual mode: let the waiting execution run its next step.",
                    "parameters": [EXECUTION_ID],
                    "requestBody": body(ref("AdvanceRequest"), required=False),
                    "responses": responses(
                        {"200": _json("The status after advancing.", ref("StatusDocument"))},
                        "400",
                        "404",
                        "409",
                        "413",
                        "415",
                        "422",
                        "503",
                    ),
                }
            },
            "/executions/{execution_id}/retry": {
                "post": {
                    "operationId": "retry",
                    "summary": "Run a failed or cancelled execution again from its failed step"
                    " (or from_step): the same execution and event log go on; the steps before"
                    " keep their outputs and do not run again.",
                    "parameters": [EXECUTION_ID],
                    "requestBody": body(ref("RetryRequest"), required=False),
                    "responses": responses(
                        {"200": _json("The status after the retry.", ref("StatusDocument"))},
                        "400",
                        "404",
                        "409",
                        "413",
                        "415",
                        "422",
                        "503",
                    ),
                }
            },
            "/executions/{execution_id}/cancel": {
                "post": {
                    "operationId": "cancel",
                    "parameters": [EXECUTION_ID],
                    "requestBody": body(ref("CancelRequest"), required=False),
                    "responses": responses(
                        {"200": _json("The status after cancelling.", ref("StatusDocument"))},
                        "400",
                        "404",
                        "409",
                        "413",
                        "415",
                        "422",
                        "503",
                    ),
                }
            },
            "/ws/{execution_id}": {
                "get": {
                    "operationId": "websocket",
                    "security": [{"bearer": []}, {"accessToken": []}],
                    "summary": "WebSocket of live events (see the description).",
                    "description": (
                        "Upgrade to a WebSocket. Each message is one legacy event JSON with"
                        " event, execution_id, seq and timestamp; without after_seq the first"
                        " is {event: snapshot, seq, status}; a snapshot over"
                        " GATEWAY_STREAM_SNAPSHOT_BYTES leaves the status's big fields out"
                        " (listed in `omitted`) and adds `status_url`, the GET that has them."
                        " Closes 1000 after the terminal"
                        " event, 1013 for a client too slow for its queue, 4404 for an"
                        " unknown execution (after an error message)."
                    ),
                    "parameters": [EXECUTION_ID, AFTER_SEQ],
                    "responses": responses(
                        {"101": {"description": "Switching to the WebSocket protocol."}},
                        "400",
                        "429",
                        "503",
                    )
                    | {"426": _error("Not a WebSocket handshake.")},
                }
            },
            "/workflows": {
                "post": {
                    "operationId": "createWorkflow",
                    "description": (
                        "A name is one workflow's in a tenant. Sent again with the same"
                        " definition, the workflow of that name is the answer (201, as when it"
                        " was created); with another definition, 409 WORKFLOW_NAME_TAKEN:"
                        " PUT /workflows/{workflow_id} changes a definition."
                    ),
                    "requestBody": body(ref("WorkflowDefinition")),
                    "responses": responses(
                        {
                            "201": {
                                **_json("Created, with its workflow_id.", ref("Workflow")),
                                "headers": {"Location": {"schema": STRING}},
                                "links": WORKFLOW_LINKS,
                            }
                        },
                        "400",
                        "409",
                        "413",
                        "415",
                        "422",
                        "503",
                    ),
                },
                "get": {
                    "operationId": "listWorkflows",
                    "parameters": [
                        {
                            "name": "page_size",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                        },
                        PAGE_TOKEN_PARAM,
                    ],
                    "responses": responses(
                        {"200": _json("Oldest first.", ref("WorkflowList"))}, "400", "422", "503"
                    ),
                },
            },
            "/workflows/{workflow_id}": {
                "get": {
                    "operationId": "getWorkflow",
                    "parameters": [WORKFLOW_ID, WORKFLOW_VERSION],
                    "responses": responses(
                        {"200": _json("The definition.", ref("Workflow"))}, "400", "404", "503"
                    ),
                },
                "put": {
                    "operationId": "updateWorkflow",
                    "summary": "Changes a workflow: a new version, when the body differs.",
                    "description": (
                        "The body as POST /workflows takes it, with the workflow's own name. A"
                        " definition other than the current version's becomes the next version"
                        " (changed: true), which the executions started from now on run;"
                        " those already started run the version they started with to their"
                        " end. The same definition makes none (changed: false). A step keeps"
                        " its id while it keeps its name. Admins only."
                    ),
                    "parameters": [WORKFLOW_ID],
                    "requestBody": body(ref("WorkflowDefinition")),
                    "responses": responses(
                        {
                            "200": _json(
                                "The current version after the call.", ref("WorkflowUpdated")
                            )
                        },
                        "400",
                        "404",
                        "413",
                        "415",
                        "422",
                        "503",
                    ),
                },
            },
            "/workflows/{workflow_id}/versions": {
                "get": {
                    "operationId": "listWorkflowVersions",
                    "parameters": [
                        WORKFLOW_ID,
                        {
                            "name": "page_size",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                        },
                        PAGE_TOKEN_PARAM,
                    ],
                    "responses": responses(
                        {"200": _json("Every version, newest first.", ref("WorkflowVersionList"))},
                        "400",
                        "404",
                        "422",
                        "503",
                    ),
                }
            },
            "/workflows/{workflow_id}/schedules": {
                "post": {
                    "operationId": "createSchedule",
                    "summary": "Run the workflow on a cron schedule.",
                    "description": (
                        "Every time of the cron expression starts one execution with the"
                        " schedule's input, however many engines run; schedules survive engine"
                        " restarts. The start is a client's start: the tenant's quotas apply."
                    ),
                    "parameters": [WORKFLOW_ID],
                    "requestBody": body(ref("ScheduleRequest")),
                    "responses": responses(
                        {
                            "201": {
                                **_json("Created, with its schedule_id.", ref("Schedule")),
                                "headers": {"Location": {"schema": STRING}},
                                "links": SCHEDULE_LINKS,
                            }
                        },
                        "400",
                        "404",
                        "413",
                        "415",
                        "422",
                        "503",
                    ),
                }
            },
            "/schedules": {
                "get": {
                    "operationId": "listSchedules",
                    "parameters": [
                        {
                            "name": "workflow_id",
                            "in": "query",
                            "required": False,
                            "description": "Only this workflow's schedules.",
                            "schema": {"type": "string", "maxLength": MAX_ID_CHARS},
                        },
                        {
                            "name": "page_size",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                        },
                        PAGE_TOKEN_PARAM,
                    ],
                    "responses": responses(
                        {"200": _json("Oldest first.", ref("ScheduleList"))}, "400", "422", "503"
                    ),
                }
            },
            "/schedules/{schedule_id}": {
                "get": {
                    "operationId": "getSchedule",
                    "parameters": [SCHEDULE_ID],
                    "responses": responses(
                        {"200": _json("The schedule.", ref("Schedule"))}, "404", "503"
                    ),
                },
                "delete": {
                    "operationId": "deleteSchedule",
                    "parameters": [SCHEDULE_ID],
                    "responses": responses(
                        {"204": {"description": "Deleted; the executions it started are kept."}},
                        "404",
                        "503",
                    ),
                },
            },
            "/schedules/{schedule_id}/pause": {
                "post": {
                    "operationId": "pauseSchedule",
                    "summary": "Start nothing until resumed; the times passed meanwhile are"
                    " skipped.",
                    "parameters": [SCHEDULE_ID],
                    "responses": responses(
                        {"200": _json("The schedule, paused.", ref("Schedule"))}, "404", "503"
                    ),
                }
            },
            "/schedules/{schedule_id}/resume": {
                "post": {
                    "operationId": "resumeSchedule",
                    "summary": "Run again from the first time after now.",
                    "parameters": [SCHEDULE_ID],
                    "responses": responses(
                        {"200": _json("The schedule, running.", ref("Schedule"))}, "404", "503"
                    ),
                }
            },
            "/queue": {
                "get": {
                    "operationId": "getQueue",
                    "summary": "The step queue: ready attempts by handler, and the runners.",
                    "responses": responses(
                        {"200": _json("The queue now.", ref("StepQueue"))}, "503"
                    ),
                }
            },
            "/step-queue/poll": {
                "post": {
                    "operationId": "pollStepAttempts",
                    "summary": "Long poll for step attempts, for runners that speak only HTTP.",
                    "description": (
                        "A runner's token. Waits up to wait_seconds for ready attempts of the"
                        " named handlers and answers at most max_attempts of them, each already"
                        " taken for this runner (its timeout and heartbeat timeout run from"
                        " now); an empty list means nothing came: poll again. Report with"
                        " X-Attempt-Token to report_urls: progress (also the heartbeat; its"
                        " answer says cancel_requested) and complete. Ask only for what you can"
                        " start at once: an attempt taken and dropped, or taken for a client"
                        " that closed the connection mid-poll, is retried only after its"
                        " heartbeat timeout."
                    ),
                    "requestBody": body(ref("StepQueuePoll")),
                    "responses": responses(
                        {"200": _json("The attempts taken, maybe none.", ref("StepAttempts"))},
                        "400",
                        "401",
                        "403",
                        "413",
                        "415",
                        "422",
                        "503",
                    ),
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "security": [],
                    "responses": {
                        "200": _json("The engine answers.", ref("Health")),
                        "503": _json("The engine does not answer.", ref("Health")),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "security": [],
                    "responses": {"200": _json("This description.", FREE)},
                }
            },
        },
        "components": {"schemas": SCHEMAS, "securitySchemes": SECURITY_SCHEMES},
        # Every operation needs a token unless it says otherwise (services/gateway/auth.py).
        "security": [{"bearer": []}],
    }


if __name__ == "__main__":
    print(json.dumps(spec(), indent=1))
