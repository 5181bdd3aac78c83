"""The wire shapes an HTTP step runner sees from the engine (README, "HTTP runners: push").

The runner's contract, version 1:

    GET  {url}/v1/handlers   -> 200 {"handlers": ["name", ...], "max_concurrent": N}
    POST {url}/v1/attempts   <- the attempt JSON (`attempt_json`), -> 202 at once

and it reports through the gateway's REST routes with the attempt token.

This module holds what crosses that wire: the offer read from `GET /v1/handlers`
(`parse_offer`), the attempt JSON POSTed to `/v1/attempts` (`attempt_json`) and the report
URLs in it (`report_urls`). `services/engine/webhook_runner.py` does the pushing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from services.engine.dispatch import Assignment

CONTRACT_VERSION = "v1"
MAX_HANDLERS = 1000
# The most attempts one runner is handed at once, whatever it says.
MAX_CONCURRENT_CAP = 1000


class RunnerUnavailable(Exception):
    """The runner did not answer as the contract says; the message says how."""


@dataclass(frozen=True)
class Offer:
    """What the runner said it serves."""

    handlers: frozenset[str]
    max_concurrent: int


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def report_urls(base_url: str, execution_id: str, step_name: str) -> dict[str, str]:
    """Where the runner reports: the gateway's REST routes, absolute under `base_url`."""
    path = f"{base_url.rstrip('/')}/executions/{quote(execution_id, safe='')}/steps/"
    path += quote(step_name, safe="")
    return {"progress": f"{path}/progress", "complete": f"{path}/complete"}


def attempt_json(assignment: Assignment, base_url: str) -> dict[str, Any]:
    """The attempt as an HTTP runner reads it; the same names as the gateway's pull route
    (`POST /step-queue/poll`), plus the deadline its timeout sets."""
    deadline = (
        assignment.started_at + timedelta(seconds=assignment.timeout_seconds)
        if assignment.timeout_seconds > 0
        else None
    )
    return {
        "execution_id": assignment.execution_id,
        "step_name": assignment.step_name,
        "handler": assignment.handler,
        "attempt": assignment.attempt,
        "attempt_token": assignment.attempt_token,
        "input": assignment.input_payload,
        "timeout_seconds": assignment.timeout_seconds,
        "heartbeat_timeout_seconds": assignment.heartbeat_timeout_seconds,
        "queued_at": iso(assignment.queued_at),
        "started_at": iso(assignment.started_at),
        "deadline": iso(deadline),
        "report_urls": report_urls(base_url, assignment.execution_id, assignment.step_name),
    }


def parse_offer(value: Any) -> Offer:
    """The body of `GET /v1/handlers`, checked: anything else is the runner's mistake."""
    if not isinstance(value, Mapping):
        raise RunnerUnavailable("GET /v1/handlers did not answer a JSON object")
    handlers = value.get("handlers")
    if (
        not isinstance(handlers, list)
        or len(handlers) > MAX_HANDLERS
        or not all(isinstance(h, str) and 0 < len(h) <= 200 for h in handlers)
    ):
        raise RunnerUnavailable('GET /v1/handlers: "handlers" is not a list of names')
    slots = value.get("max_concurrent")
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise RunnerUnavailable('GET /v1/handlers: "max_concurrent" is not a positive integer')
    return Offer(frozenset(handlers), min(slots, MAX_CONCURRENT_CAP))
