"""What a request holds outside its body, checked before anything is sent to the engine:
ids in the path, counts, page tokens and listing filters in the query, the idempotency key
and the attempt token in headers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from discovery.engine.v1 import execution_pb2 as ex_pb
from multidict import MultiMapping

from discovery_client.requests import EXECUTION_STATUSES
from services.gateway.errors import BadRequest, NotFound, Unauthorized, ValidationFailed

# The engine's ids are UUIDs and it refuses anything over 200 characters.
MAX_ID_CHARS = 200
MAX_IDEMPOTENCY_KEY_CHARS = 128
MAX_TOKEN_CHARS = 512
MAX_SEQ_DIGITS = 18


def resource_id(value: str, kind: str) -> str:
    """An id from the path. One that cannot exist is unknown, answered like any unknown id."""
    if not value or len(value) > MAX_ID_CHARS:
        code = f"{kind.upper()}_NOT_FOUND"  # the engine's reason for an unknown one
        raise NotFound(f"{kind} not found", code=code, details={f"{kind}_id": value[:64]})
    return value


def step_name(value: str) -> str:
    if not value or len(value) > MAX_ID_CHARS:
        raise NotFound("step not found", details={"step": value[:64]})
    return value


def sequence_number(raw: str | None, field: str) -> int | None:
    """`after_seq` / `Last-Event-ID`: a non-negative integer, or absent."""
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit() or not text.isascii() or len(text) > MAX_SEQ_DIGITS:
        raise BadRequest(
            f"{field} must be a non-negative integer, got {raw[:32]!r}",
            code="INVALID_ARGUMENT",
            details={"field": field},
        )
    return int(text)


def idempotency_key(headers: Mapping[str, str]) -> str:
    key = headers.get("Idempotency-Key")
    if key is None:
        return ""
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise ValidationFailed(
            "Idempotency-Key",
            f"1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable characters",
        )
    return key


ATTEMPT_TOKEN_HEADER = "X-Attempt-Token"


def attempt_token(headers: Mapping[str, str]) -> str:
    """The attempt's capability, from `X-Attempt-Token`: what the runner got with the attempt
    (PollStepAttempts). Without it a report proves nothing, so it is refused before the engine."""
    token = headers.get(ATTEMPT_TOKEN_HEADER, "").strip()
    if not token:
        raise Unauthorized(
            "a step report needs the attempt's token in the X-Attempt-Token header",
            code="MISSING_ATTEMPT_TOKEN",
        )
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized("the attempt token is not valid", code="INVALID_ATTEMPT_TOKEN")
    return token


# The engine's own bound on a page of a List RPC.
MAX_PAGE_SIZE = 1000
DEFAULT_EXECUTIONS_LIMIT = 20


def _count(raw: str | None, field: str, default: int) -> int:
    if raw is None:
        return default
    text = raw.strip()
    if not text.isdigit() or not text.isascii() or not 1 <= int(text) <= MAX_PAGE_SIZE:
        raise BadRequest(
            f"{field} must be an integer from 1 to {MAX_PAGE_SIZE}",
            code="INVALID_ARGUMENT",
            details={"field": field},
        )
    return int(text)


def page_size(raw: str | None) -> int:
    return _count(raw, "page_size", MAX_PAGE_SIZE)


def limit(raw: str | None) -> int:
    """`GET /executions?limit=N`: how many of the newest executions."""
    return _count(raw, "limit", DEFAULT_EXECUTIONS_LIMIT)


# Workflow.version is an int32.
MAX_WORKFLOW_VERSION = 2**31 - 1


def workflow_version(raw: str | None) -> int:
    """`GET /workflows/{id}?version=N`: one version of the workflow; absent or 0: the
    current one."""
    if raw is None:
        return 0
    text = raw.strip()
    if not text.isdigit() or not text.isascii() or int(text) > MAX_WORKFLOW_VERSION:
        raise BadRequest(
            f"version must be an integer from 0 to {MAX_WORKFLOW_VERSION}",
            code="INVALID_ARGUMENT",
            details={"field": "version"},
        )
    return int(text)


PAGE_TOKEN = re.compile(r"^[A-Za-z0-9_=-]{0,1000}$")


def page_token(raw: str | None) -> str:
    """A token from a previous page: what the engine gives is URL-safe base64."""
    if raw is None:
        return ""
    if not PAGE_TOKEN.match(raw):
        raise BadRequest(
            "page_token is not a token this server gave",
            code="INVALID_ARGUMENT",
            details={"field": "page_token"},
        )
    return raw


# What `GET /executions` takes; anything else is refused rather than silently ignored.
EXECUTION_LISTING_PARAMS = frozenset(
    {"limit", "page_token", "status", "workflow_id", "created_after", "created_before", "name"}
)


@dataclass(frozen=True)
class ExecutionListing:
    """`GET /executions`'s filters, as ListExecutions takes them."""

    workflow_id: str = ""
    statuses: tuple[ex_pb.ExecutionStatus, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    workflow_name_contains: str = ""


def execution_listing(query: MultiMapping[str]) -> ExecutionListing:
    """`status` (repeated or comma-separated: pending, running, waiting, completed, failed,
    cancelled), `workflow_id`, `created_after` / `created_before` (ISO 8601 with a time zone)
    and `name` (part of the workflow's name, any case). A bad or unknown one is a 400 naming
    it."""
    for key in query:
        if key not in EXECUTION_LISTING_PARAMS:
            raise BadRequest(
                f"unknown query parameter {key[:64]!r}; known: "
                + ", ".join(sorted(EXECUTION_LISTING_PARAMS)),
                code="INVALID_ARGUMENT",
                details={"field": key[:64]},
            )
    statuses: list[ex_pb.ExecutionStatus] = []
    for value in query.getall("status", []):
        for name in (part.strip().lower() for part in value.split(",")):
            if name not in EXECUTION_STATUSES:
                raise BadRequest(
                    f"status {name[:32]!r} is not one of " + ", ".join(EXECUTION_STATUSES),
                    code="INVALID_ARGUMENT",
                    details={"field": "status"},
                )
            statuses.append(EXECUTION_STATUSES[name])
    after, before = _time(query, "created_after"), _time(query, "created_before")
    if after is not None and before is not None and before <= after:
        raise BadRequest(
            "created_before must be later than created_after",
            code="INVALID_ARGUMENT",
            details={"field": "created_before"},
        )
    return ExecutionListing(
        workflow_id=_single(query, "workflow_id"),
        statuses=tuple(dict.fromkeys(statuses)),
        created_after=after,
        created_before=before,
        workflow_name_contains=_single(query, "name"),
    )


def _single(query: MultiMapping[str], field: str) -> str:
    values = query.getall(field, [])
    if len(values) > 1:
        raise BadRequest(
            f"{field} is given {len(values)} times; once at most",
            code="INVALID_ARGUMENT",
            details={"field": field},
        )
    value = values[0] if values else ""
    if len(value) > MAX_ID_CHARS:
        raise BadRequest(
            f"{field} is at most {MAX_ID_CHARS} characters",
            code="INVALID_ARGUMENT",
            details={"field": field},
        )
    return value


def _time(query: MultiMapping[str], field: str) -> datetime | None:
    if field not in query:
        return None
    raw = _single(query, field)
    try:
        value: datetime | None = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)  # out of range there (year 1 at +01:00): refused
    except (ValueError, OverflowError):
        value = None
    if value is None or value.tzinfo is None:
        raise BadRequest(
            f"{field} must be an ISO 8601 time with a time zone "
            f"(2026-11-29T10:00:00Z), got {raw[:40]!r}",
            code="INVALID_ARGUMENT",
            details={"field": field},
        )
    return value
