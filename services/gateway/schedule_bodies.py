"""Cron schedules in JSON: the body of `POST /workflows/{id}/schedules`, checked before
anything is sent to the engine, and a schedule as every schedule route answers it.

The body's shape is checked here (422 naming the field); what only the engine can judge (the
cron expression, the time zone, the input against the workflow's input_schema) it refuses
naming the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from discovery.engine.v1 import schedule_service_pb2 as ss

from discovery_client.requests import OVERLAP_POLICIES
from services.gateway.body_fields import body_object, boolean, integer, known, string
from services.gateway.errors import ValidationFailed
from services.gateway.legacy_values import iso, plain_struct
from services.gateway.route_bodies import MAX_PRIORITY, MIN_PRIORITY

SCHEDULE_FIELDS = frozenset(
    {"cron", "timezone", "input", "overlap", "catchup_limit", "priority", "paused"}
)
OVERLAPS = ("skip", "allow")
MAX_CRON_CHARS = 200
MAX_TIMEZONE_CHARS = 100
MAX_CATCHUP_LIMIT = 100
_OVERLAP_NAMES = {number: name for name, number in OVERLAP_POLICIES.items() if name}


@dataclass(frozen=True)
class ScheduleRequest:
    cron: str
    timezone: str
    input: dict[str, Any]
    # "" the default (skip).
    overlap: str
    # None: the default (1).
    catchup_limit: int | None
    # 0: the engine's default.
    priority: int
    paused: bool


def schedule_request(body: object) -> ScheduleRequest:
    """`{"cron", "timezone", "input", "overlap", "catchup_limit", "priority", "paused"}`:
    only `cron` is required."""
    value = body_object(body)
    known(value, SCHEDULE_FIELDS, "")
    overlap = string(value.get("overlap"), "overlap", max_chars=10)
    if overlap and overlap not in OVERLAPS:
        raise ValidationFailed("overlap", f"one of {', '.join(OVERLAPS)}")
    catchup_limit = None
    if value.get("catchup_limit") is not None:
        catchup_limit = integer(
            value["catchup_limit"], "catchup_limit", low=0, high=MAX_CATCHUP_LIMIT
        )
    priority = 0
    if value.get("priority") is not None:
        priority = integer(value["priority"], "priority", low=MIN_PRIORITY, high=MAX_PRIORITY)
    document = value.get("input")
    return ScheduleRequest(
        cron=string(value.get("cron"), "cron", max_chars=MAX_CRON_CHARS, required=True),
        timezone=string(value.get("timezone"), "timezone", max_chars=MAX_TIMEZONE_CHARS),
        input={} if document is None else body_object(document, "input"),
        overlap=overlap,
        catchup_limit=catchup_limit,
        priority=priority,
        paused=False if value.get("paused") is None else boolean(value["paused"], "paused"),
    )


def schedule(message: ss.Schedule) -> dict[str, Any]:
    return {
        "schedule_id": message.schedule_id,
        "workflow_id": message.workflow_id,
        "cron": message.cron,
        # The zone the expression is read in.
        "timezone": message.timezone or "UTC",
        "input": plain_struct(message.input),
        "overlap": _OVERLAP_NAMES.get(message.overlap, "skip"),
        "catchup_limit": message.catchup_limit,
        # null: the engine's default.
        "priority": message.priority or None,
        "paused": message.paused,
        # null while paused.
        "next_run_time": iso(message.next_run_time),
        "last_run_time": iso(message.last_run_time),
        "last_execution_id": message.last_execution_id or None,
        "created_at": iso(message.create_time),
        "runs": message.runs,
        "skipped_runs": message.skipped_runs,
    }
