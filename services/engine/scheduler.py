"""The scheduler: every engine runs one, and each time of each schedule starts one execution
at most, however many engines run and however often they stop.

A round asks the database for the schedules whose next_run_time is due or comes within
SCAN_SECONDS (one range on one indexed field), starts what the due ones plan
(domain/schedule.py: catch-up, overlap), and sleeps until the soonest next time it saw, or
SCAN_SECONDS at most, to see schedules created or resumed on other engines; a schedule created
or resumed here wakes it at once (`poke`).

Once per time, across engines and restarts:
- Each time is started with the request_id `schedule:<id>:<time>`, through the engine's
  ordinary start (starts.py: the tenant's quotas, the workflow's input schema). Two engines
  that start the same time get the same execution: the second one's insert is refused by the
  unique (tenant_id, request_id) index, and it answers with the first one's execution.
- Then the schedule is moved on (next_run_time, counts) over the version it was read at: of
  engines that started the same round, one write goes in; the others' executions were that
  one's anyway. An engine that dies between the start and the write leaves the time due, and
  whichever engine comes next starts it again, which gives back the same execution.
So a time is started at least once while an engine runs, and the database keeps it to once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from services.engine.clock import utc_now
from services.engine.domain import execution as ex
from services.engine.domain.errors import DiscoveryError, ExecutionNotFound, Unavailable
from services.engine.domain.schedule import OVERLAP_SKIP, Round, Schedule, fired, plan_round
from services.engine.metrics import EngineMetrics
from services.engine.quotas import TenantUsage
from services.engine.runner import Runner
from services.engine.starts import start_within_quotas
from services.engine.store.repository import ScheduleStore

log = logging.getLogger(__name__)

# How long a schedule created or resumed on another engine may go unseen: a round looks this
# far ahead, so a time is missed only when it was set less than this before it comes.
SCAN_SECONDS = 2.0
# Schedules one round takes; a full round is followed by another at once.
BATCH = 100
# Schedules fired at once: each costs a few round trips to the database.
CONCURRENT_FIRES = 8
# After a round the database failed.
RETRY_SECONDS = 1.0


class Scheduler:
    def __init__(
        self,
        store: ScheduleStore,
        runner: Runner,
        usage: TenantUsage,
        metrics: EngineMetrics,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._runner = runner
        self._usage = usage
        self._metrics = metrics
        self._clock = clock
        self._wake = asyncio.Event()
        self._fires = asyncio.Semaphore(CONCURRENT_FIRES)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        """A round cut short writes nothing for the schedules it had not moved on: the next
        engine to look starts their times (the same executions, if they were started)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def poke(self) -> None:
        """A schedule was created or resumed here: look again now."""
        self._wake.set()

    async def round(self) -> float:
        """Fires every schedule due now; the seconds until the next round is wanted."""
        now = self._clock()
        found = await self._store.due_schedules(now + timedelta(seconds=SCAN_SECONDS), BATCH)
        due = [s for s in found if s.next_run_time is not None and s.next_run_time <= now]
        if due:
            moved = await asyncio.gather(*(self._fire(s, now) for s in due))
            if len(found) == BATCH and any(moved):
                return 0.0  # more may be due
        upcoming = [s.next_run_time for s in found if s.next_run_time and s.next_run_time > now]
        if not upcoming:
            return SCAN_SECONDS
        return min(SCAN_SECONDS, max((min(upcoming) - self._clock()).total_seconds(), 0.0))

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                wait = await self.round()
            except Unavailable as exc:
                log.warning("schedules not read; the next round tries again: %s", exc)
                wait = RETRY_SECONDS
            except Exception:  # the loop must outlive any one round
                log.exception("scheduler round failed; the next one tries again")
                wait = RETRY_SECONDS
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _fire(self, schedule: Schedule, now: datetime) -> bool:
        """Whether the schedule was moved on (here or by another engine)."""
        async with self._fires:
            try:
                await self._fire_one(schedule, now)
                return True
            except Unavailable as exc:
                # Nothing written: the schedule stays due, and its times are started again
                # (the same executions, for those started) by the next round.
                log.warning(
                    "schedule not fired; the next round tries again: %s",
                    exc,
                    extra={"schedule_id": schedule.schedule_id},
                )
            except Exception:
                log.exception(
                    "schedule not fired; the next round tries again",
                    extra={"schedule_id": schedule.schedule_id},
                )
            return False

    async def _fire_one(self, schedule: Schedule, now: datetime) -> None:
        last_running = schedule.overlap == OVERLAP_SKIP and await self._last_running(schedule)
        planned = plan_round(schedule, now, last_running=last_running)
        started: list[tuple[datetime, str]] = []
        for time in planned.start:
            execution_id = await self._start(schedule, time)
            if execution_id is not None:
                started.append((time, execution_id))
        if not await self._store.save_schedule(fired(schedule, planned, started)):
            # Another engine moved it on first (its starts of these times were these very
            # executions), or it was paused or deleted meanwhile.
            log.debug(
                "schedule moved on by another engine, or changed, first",
                extra={"schedule_id": schedule.schedule_id},
            )
            return
        self._counted(schedule, planned, started, last_running)

    async def _last_running(self, schedule: Schedule) -> bool:
        if not schedule.last_execution_id:
            return False
        try:
            last = await self._runner.get(schedule.last_execution_id, tenant=schedule.tenant_id)
        except ExecutionNotFound:  # deleted by retention: long ended
            return False
        return not last.is_terminal

    async def _start(self, schedule: Schedule, time: datetime) -> str | None:
        """The execution started for `time`, or None when the start was refused for good
        (the tenant's quotas, an input its workflow no longer takes): that time is skipped.
        Raises Unavailable when it could not be told (the database away)."""
        try:
            # A task of its own: a start binds its execution to the task's log lines.
            state = await asyncio.ensure_future(
                start_within_quotas(
                    self._runner,
                    self._usage,
                    tenant=schedule.tenant_id,
                    workflow_id=schedule.workflow_id,
                    document=schedule.input,
                    manual=False,
                    request_id=schedule.request_id(time),
                    priority=schedule.priority or ex.DEFAULT_PRIORITY,
                    # As a client's start is charged its input as sent: about its JSON size.
                    input_bytes=len(json.dumps(schedule.input, separators=(",", ":"))),
                )
            )
        except Unavailable:
            raise
        except DiscoveryError as exc:
            log.warning(
                "scheduled run not started: %s",
                exc.message,
                extra={
                    "schedule_id": schedule.schedule_id,
                    "reason": exc.reason,
                    "scheduled_time": time.isoformat(),
                },
            )
            return None
        return state.execution_id

    def _counted(
        self,
        schedule: Schedule,
        planned: Round,
        started: list[tuple[datetime, str]],
        last_running: bool,
    ) -> None:
        """Counted by the engine whose write went in, so each time is counted once."""
        skipped = planned.skipped + len(planned.start) - len(started)
        self._metrics.scheduled(started=len(started), skipped=skipped)
        for time, execution_id in started:
            log.info(
                "scheduled run started",
                extra={
                    "schedule_id": schedule.schedule_id,
                    "execution_id": execution_id,
                    "scheduled_time": time.isoformat(),
                },
            )
        if skipped:
            log.info(
                "scheduled times skipped",
                extra={
                    "schedule_id": schedule.schedule_id,
                    "skipped": skipped,
                    "overlap": last_running,
                    "next_run_time": planned.next_run_time.isoformat(),
                },
            )
