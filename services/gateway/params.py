"""What a request holds outside its body, checked before anything is sent to the engine:
ids in the path, counts and page tokens in the query, the idempotency key and the attempt
token in headers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from services.gateway.errors import BadRequest, NotFound, Unauthorized, ValidationFailed

# The engine's ids are UUIDs and it refuses anything over 200 characters.
MAX_ID_CHARS = 200
MAX_IDEMPOTENCY_KEY_CHARS = 128
MAX_TOKEN_CHARS = 512
MAX_SEQ_DIGITS = 18


def resource_id(value: str, kind: str) -> str:
    """An id from the path. One that cannot exist is unknown, answered like any unknown id."""
    if not value or len(value) > MAX_ID_CHARS:
        code = "WORKFLOW_NOT_FOUND" if kind == "workflow" else "EXECUTION_NOT_FOUND"
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
