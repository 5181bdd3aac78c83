"""What callers ask of cron schedules (rpc/schedules.py): create, read, list, pause, resume
and delete, each within the caller's tenant (another tenant's schedule looks missing). Firing
them is scheduler.py's.

A pause or a resume is written over the version it was decided on, like a round of the
scheduler: when a round moves the schedule on at the same moment, the change is decided again
on what the round wrote.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.engine.clock import utc_now
from services.engine.domain import execution as ex
from services.engine.domain.errors import InvalidArgument, ScheduleNotFound, StoreUnavailable
from services.engine.domain.payload import check_payload
from services.engine.domain.schedule import Schedule, new_schedule, paused, resumed
from services.engine.runner import Runner
from services.engine.store.repository import Page, ScheduleStore

# A schedule's input is kept in its document and given to every run: a few documents' worth
# (a large file belongs in a blob a step reads, not in a schedule).
MAX_INPUT_BYTES = 1024 * 1024
# Tries of a pause or resume that keeps coming second to the scheduler's rounds.
MAX_TRIES = 5


@dataclass(frozen=True)
class NewSchedule:
    """A schedule as a caller asks for it (Schedule in schedule_service.proto)."""

    workflow_id: str
    cron: str
    timezone: str = ""
    input: dict[str, Any] | None = None
    overlap: str = "skip"
    # None: the default (domain/schedule.py).
    catchup_limit: int | None = None
    # 0: the engine's default.
    priority: int = 0
    paused: bool = False


class Schedules:
    def __init__(
        self, store: ScheduleStore, runner: Runner, on_change: Callable[[], None] = lambda: None
    ) -> None:
        """`on_change()` after a schedule is created or resumed (the scheduler looks again)."""
        self._store = store
        self._runner = runner
        self._on_change = on_change

    async def create(self, asked: NewSchedule, *, tenant: str) -> Schedule:
        """Raises InvalidArgument naming the field (cron, timezone, overlap, catchup_limit,
        priority, input: also against the workflow's input_schema), WorkflowNotFound."""
        if asked.priority and asked.priority not in ex.PRIORITIES:
            raise InvalidArgument(
                "priority", f"must be {ex.PRIORITIES[0]} to {ex.PRIORITIES[-1]} (0: the default)"
            )
        document = asked.input or {}
        schedule = new_schedule(
            schedule_id=str(uuid.uuid4()),
            tenant_id=tenant,
            workflow_id=asked.workflow_id,
            cron=asked.cron,
            timezone=asked.timezone,
            input=document,
            overlap=asked.overlap,
            catchup_limit=asked.catchup_limit,
            priority=asked.priority,
            paused=asked.paused,
            now=utc_now(),
        )
        workflow = await self._runner.workflows.get(asked.workflow_id, tenant=tenant)
        check_payload(document, "input", MAX_INPUT_BYTES)
        if workflow.input_schema is not None:
            # Checked again at every start: a workflow may change meanwhile.
            workflow.input_schema.check(document)
        await self._store.create_schedule(schedule)
        self._on_change()
        return schedule

    async def get(self, schedule_id: str, *, tenant: str) -> Schedule:
        schedule = await self._store.get_schedule(tenant, schedule_id)
        if schedule is None:
            raise ScheduleNotFound(schedule_id)
        return schedule

    async def list(
        self, *, tenant: str, page_size: int, page_token: str, workflow_id: str
    ) -> Page[Schedule]:
        """Oldest first; only `workflow_id`'s, when given."""
        return await self._store.list_schedules(tenant, page_size, page_token, workflow_id)

    async def pause(self, schedule_id: str, *, tenant: str) -> Schedule:
        return await self._change(schedule_id, tenant, paused)

    async def resume(self, schedule_id: str, *, tenant: str) -> Schedule:
        schedule = await self._change(schedule_id, tenant, lambda s: resumed(s, utc_now()))
        self._on_change()
        return schedule

    async def delete(self, schedule_id: str, *, tenant: str) -> None:
        """The executions it started are kept."""
        if not await self._store.delete_schedule(tenant, schedule_id):
            raise ScheduleNotFound(schedule_id)

    async def _change(
        self, schedule_id: str, tenant: str, change: Callable[[Schedule], Schedule]
    ) -> Schedule:
        for _ in range(MAX_TRIES):
            before = await self.get(schedule_id, tenant=tenant)
            after = change(before)
            if after is before or await self._store.save_schedule(after):
                return after
        raise StoreUnavailable(f"schedule {schedule_id} keeps changing under this call; retry")
