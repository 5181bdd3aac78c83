"""Workflow definitions: a name and steps, each with its handler, bounds and retries, run in
order or as a graph of dependencies (`after`)."""

from __future__ import annotations

import functools
import heapq
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.engine.domain.errors import InvalidArgument
from services.engine.domain.input_schema import InputSchema

MAX_STEPS = 100
MAX_ATTEMPTS = 20
DEFAULT_MAX_PARALLEL_STEPS = 10
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
    # The names of the steps that must succeed before it starts, as the definition gave
    # them (none given anywhere: each step waits for the one before it, see `needs`).
    after: tuple[str, ...] = ()


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
    # The most steps of one execution queued or running at once.
    max_parallel_steps: int = DEFAULT_MAX_PARALLEL_STEPS
    # 1 when created, one more at each update that changes the definition (versions.py);
    # `updated_at` is when this version was made (None: when the workflow was created).
    version: int = 1
    updated_at: datetime | None = None

    @functools.cached_property
    def needs(self) -> tuple[frozenset[int], ...]:
        """For each step (by index), the indexes of the steps it waits for. A workflow none
        of whose steps names any dependency is the legacy straight line: each step waits for
        the one before it."""
        if not any(step.after for step in self.steps):
            return tuple(frozenset({i - 1} if i else ()) for i in range(len(self.steps)))
        index = {step.name: i for i, step in enumerate(self.steps)}
        return tuple(frozenset(index[name] for name in step.after) for step in self.steps)

    @functools.cached_property
    def dependents(self) -> tuple[frozenset[int], ...]:
        """For each step, every step that waits for it, directly or not."""
        direct: list[set[int]] = [set() for _ in self.steps]
        for i, needs in enumerate(self.needs):
            for need in needs:
                direct[need].add(i)
        closure: list[frozenset[int]] = [frozenset()] * len(self.steps)
        for i in reversed(self.topological_order):
            reached = set(direct[i])
            for after in direct[i]:
                reached |= closure[after]
            closure[i] = frozenset(reached)
        return tuple(closure)

    @functools.cached_property
    def topological_order(self) -> tuple[int, ...]:
        """Step indexes with every step after the steps it waits for (by order among
        equals). The definition was checked acyclic when it was made."""
        order = _topological(self.needs)
        assert order is not None
        return order

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
    max_parallel_steps: int = 0,
) -> Workflow:
    """Validates a definition as a client sent it and gives it its ids.

    `steps` items: {"name", "handler", "timeout_seconds", "heartbeat_timeout_seconds",
    "schedule_to_start_timeout_seconds", "after": [step names], "retry": {"max_attempts",
    "initial_backoff_seconds", "backoff_multiplier", "max_backoff_seconds"}}; a 0 or missing
    number takes the default (for the schedule-to-start timeout: none). `input_schema`: a JSON
    Schema, or None. `max_parallel_steps`: 0 takes the default.
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
                after=_after(raw.get("after"), where),
            )
        )
    _check_dependencies(built)
    if not 0 <= max_parallel_steps <= MAX_STEPS:
        raise InvalidArgument("max_parallel_steps", f"must be 1 to {MAX_STEPS} (0: the default)")
    return Workflow(
        workflow_id=str(uuid.uuid4()),
        name=name,
        description=description,
        steps=tuple(built),
        created_at=created_at,
        updated_at=created_at,
        tenant_id=tenant_id,
        input_schema=None if input_schema is None else InputSchema.parse(input_schema),
        max_parallel_steps=max_parallel_steps or DEFAULT_MAX_PARALLEL_STEPS,
    )


def _after(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple) or not all(isinstance(n, str) for n in raw):
        raise InvalidArgument(f"{where}.after", "a list of step names")
    if len(set(raw)) != len(raw):
        raise InvalidArgument(f"{where}.after", "names a step twice")
    return tuple(raw)


def _check_dependencies(steps: list[StepDefinition]) -> None:
    """Every name a step waits for is a step of the workflow, and no step waits, directly or
    through others, for itself."""
    index = {step.name: i for i, step in enumerate(steps)}
    for i, step in enumerate(steps):
        unknown = [name for name in step.after if name not in index]
        if unknown:
            raise InvalidArgument(
                f"steps[{i}].after", f"names no step of this workflow: {', '.join(unknown)}"
            )
        if step.name in step.after:
            raise InvalidArgument(f"steps[{i}].after", f"step {step.name!r} waits for itself")
    needs = tuple(frozenset(index[name] for name in step.after) for step in steps)
    if _topological(needs) is None:
        cycle = [steps[i].name for i in _cycle(needs)]
        raise InvalidArgument(
            "steps", "the steps wait for each other in a cycle: " + " -> ".join(cycle)
        )


def _topological(needs: tuple[frozenset[int], ...]) -> tuple[int, ...] | None:
    """Kahn's order, the lowest index first among the steps ready together; None when the
    dependencies hold a cycle."""
    waiting = [len(n) for n in needs]
    dependents: list[list[int]] = [[] for _ in needs]
    for i, n in enumerate(needs):
        for need in n:
            dependents[need].append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for after in dependents[i]:
            waiting[after] -= 1
            if waiting[after] == 0:
                heapq.heappush(ready, after)
    return tuple(order) if len(order) == len(needs) else None


def _cycle(needs: tuple[frozenset[int], ...]) -> list[int]:
    """One cycle of the dependencies, as step indexes, its first step repeated at its end
    (there is one: _topological found none)."""
    state = [0] * len(needs)  # 0 unseen, 1 on the current path, 2 done
    path: list[int] = []

    def visit(i: int) -> list[int] | None:
        state[i] = 1
        path.append(i)
        for need in sorted(needs[i]):
            if state[need] == 1:
                return [*path[path.index(need) :], need]
            if state[need] == 0 and (found := visit(need)) is not None:
                return found
        path.pop()
        state[i] = 2
        return None

    for i in range(len(needs)):
        if state[i] == 0 and (found := visit(i)) is not None:
            return found
    return []  # pragma: no cover - only called on a cyclic graph
