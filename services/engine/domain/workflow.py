"""Workflow definitions: a name and ordered steps, each with its handler, bounds and retries."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.engine.domain.errors import InvalidArgument
from services.engine.domain.input_schema import InputSchema

MAX_STEPS = 100
MAX_ATTEMPTS = 20
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0
_NAME = re.compile(r"^[^\x00-\x1f/]{1,200}$")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    initial_backoff_seconds: float = 1.0
    backoff_multiplier: float = 2.0
    max_backoff_seconds: float = 60.0

    def backoff(self, failed_attempt: int) -> float:
        """Delay before the attempt that follows `failed_attempt` (1-based)."""
        delay = self.initial_backoff_seconds * self.backoff_multiplier ** (failed_attempt - 1)
        return float(min(delay, self.max_backoff_seconds))


@dataclass(frozen=True)
class StepDefinition:
    step_id: str
    name: str
    handler: str
    timeout_seconds: float = 3600.0
    heartbeat_timeout_seconds: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # How long an attempt may wait in the step queue; None: as long as it takes.
    schedule_to_start_timeout_seconds: float | None = None


@dataclass(frozen=True)
class Workflow:
    workflow_id: str
    name: str
    description: str
    steps: tuple[StepDefinition, ...]
    created_at: datetime
    # The tenant that owns the definition and every execution started from it.
    tenant_id: str
    # What every execution's input must match; None: any input.
    input_schema: InputSchema | None = None

    def step_named(self, name: str) -> tuple[int, StepDefinition] | None:
        for index, step in enumerate(self.steps):
            if step.name == name:
                return index, step
        return None


def _positive(value: float, default: float, field_name: str, upper: float) -> float:
    if value == 0:
        return default
    if not value > 0 or value > upper:
        raise InvalidArgument(field_name, f"must be > 0 and <= {upper:g}, got {value!r}")
    return float(value)


def _optional_positive(value: float, field_name: str, upper: float) -> float | None:
    return None if value == 0 else _positive(value, 0.0, field_name, upper)


def new_workflow(
    name: str,
    description: str,
    steps: list[dict[str, Any]],
    created_at: datetime,
    *,
    tenant_id: str,
    input_schema: dict[str, Any] | None = None,
) -> Workflow:
    """Validates a definition as a client sent it and gives it its ids.

    `steps` items: {"name", "handler", "timeout_seconds", "heartbeat_timeout_seconds",
    "schedule_to_start_timeout_seconds", "retry": {"max_attempts", "initial_backoff_seconds",
    "backoff_multiplier", "max_backoff_seconds"}}; a 0 or missing number takes the default
    (for the schedule-to-start timeout: none). `input_schema`: a JSON Schema, or None.
    """
    if not _NAME.match(name or ""):
        raise InvalidArgument("name", "required, 1 to 200 printable characters")
    if len(description) > 10_000:
        raise InvalidArgument("description", "at most 10000 characters")
    if not steps:
        raise InvalidArgument("steps", "a workflow needs at least one step")
    if len(steps) > MAX_STEPS:
        raise InvalidArgument("steps", f"at most {MAX_STEPS} steps")
    seen: set[str] = set()
    built: list[StepDefinition] = []
    for i, raw in enumerate(steps):
        where = f"steps[{i}]"
        step_name = str(raw.get("name") or "")
        if not _NAME.match(step_name):
            raise InvalidArgument(f"{where}.name", "required, 1 to 200 printable characters")
        if step_name in seen:
            raise InvalidArgument(f"{where}.name", f"duplicate step name {step_name!r}")
        seen.add(step_name)
        handler = str(raw.get("handler") or "")
        if not _NAME.match(handler):
            raise InvalidArgument(f"{where}.handler", "required")
        retry_raw: dict[str, Any] = raw.get("retry") or {}
        max_attempts = int(retry_raw.get("max_attempts") or 0) or RetryPolicy.max_attempts
        if not 1 <= max_attempts <= MAX_ATTEMPTS:
            raise InvalidArgument(f"{where}.retry.max_attempts", f"must be 1 to {MAX_ATTEMPTS}")
        multiplier = float(retry_raw.get("backoff_multiplier") or 0) or 2.0
        if not 1.0 <= multiplier <= 10.0:
            raise InvalidArgument(f"{where}.retry.backoff_multiplier", "must be 1 to 10")
        retry = RetryPolicy(
            max_attempts=max_attempts,
            initial_backoff_seconds=_positive(
                float(retry_raw.get("initial_backoff_seconds") or 0),
                1.0,
                f"{where}.retry.initial_backoff_seconds",
                3600.0,
            ),
            backoff_multiplier=multiplier,
            max_backoff_seconds=_positive(
                float(retry_raw.get("max_backoff_seconds") or 0),
                60.0,
                f"{where}.retry.max_backoff_seconds",
                24 * 3600.0,
            ),
        )
        built.append(
            StepDefinition(
                step_id=str(uuid.uuid4()),
                name=step_name,
                handler=handler,
                timeout_seconds=_positive(
                    float(raw.get("timeout_seconds") or 0),
                    3600.0,
                    f"{where}.timeout_seconds",
                    MAX_TIMEOUT_SECONDS,
                ),
                heartbeat_timeout_seconds=_positive(
                    float(raw.get("heartbeat_timeout_seconds") or 0),
                    30.0,
                    f"{where}.heartbeat_timeout_seconds",
                    MAX_TIMEOUT_SECONDS,
                ),
                retry=retry,
                schedule_to_start_timeout_seconds=_optional_positive(
                    float(raw.get("schedule_to_start_timeout_seconds") or 0),
                    f"{where}.schedule_to_start_timeout_seconds",
                    MAX_TIMEOUT_SECONDS,
                ),
            )
        )
    return Workflow(
        workflow_id=str(uuid.uuid4()),
        name=name,
        description=description,
        steps=tuple(built),
        created_at=created_at,
        tenant_id=tenant_id,
        input_schema=None if input_schema is None else InputSchema.parse(input_schema),
    )
