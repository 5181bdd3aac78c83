"""Cron schedules: what a schedule is, when its times come, and what one round of the
scheduler does with the times that are due (which start, which are skipped, when the next
one is). Pure: the loop that asks the database and starts executions is scheduler.py.

Cron expressions are five fields read in an IANA zone by `cronsim`, which follows Debian's
cron, daylight saving included: a time that a spring-forward skips runs when the clock
jumps (02:30 on a night that goes from 02:00 to 03:00 runs at 03:00), and a time that a
fall-back repeats runs once, for jobs at a fixed hour; jobs that run every minute or hour
run in both hours of a repeated one. Times are kept in UTC, cut to the millisecond like
every time the engine stores.

A time is *on time* when the scheduler reaches it within ON_TIME of it; later, it was missed
(no engine ran, or none could start it), and the schedule's catch-up limit says how many of
the missed times start: the latest ones, the others are skipped. Overlap SKIP starts nothing
while the execution the schedule started last has not ended, and at most one execution per
round (the first would still run when the second started).
"""

from __future__ import annotations

import dataclasses
import functools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from services.engine.domain.errors import InvalidArgument

OVERLAP_SKIP = "skip"
OVERLAP_ALLOW = "allow"
OVERLAPS = (OVERLAP_SKIP, OVERLAP_ALLOW)
# Missed times that start when an engine comes back, unless the schedule says otherwise.
DEFAULT_CATCHUP_LIMIT = 1
MAX_CATCHUP_LIMIT = 100
# Reached this long after its time, a time was missed rather than run late by the loop.
ON_TIME = timedelta(seconds=30)
# Times one round counts one by one (7 days of a schedule that runs every minute); after a
# longer outage the count of skipped times stops there.
MAX_COUNTED = 10_000
MAX_CRON_CHARS = 200
MAX_TIMEZONE_CHARS = 100
UTC_NAME = "UTC"
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Cron:
    """A checked cron expression in its zone."""

    expression: str
    zone: ZoneInfo

    def after(self, moment: datetime) -> datetime:
        """The first time strictly after `moment` (aware), in UTC. Raises InvalidArgument
        naming `cron` for an expression that names none in the 50 years after it."""
        local = moment.astimezone(self.zone)
        try:
            found = next(iter(CronSim(self.expression, local)))
        except StopIteration:
            raise InvalidArgument("cron", "names no time in the next 50 years") from None
        return _millis(found.astimezone(UTC))

    def latest(self, until: datetime, count: int) -> list[datetime]:
        """Up to `count` times at or before `until`, oldest first, in UTC."""
        if count <= 0:
            return []
        # cronsim's reverse iteration starts strictly before its start.
        start = (until + timedelta(seconds=1)).astimezone(self.zone).replace(microsecond=0)
        found: list[datetime] = []
        for moment in CronSim(self.expression, start, reverse=True):
            utc = _millis(moment.astimezone(UTC))
            if utc <= until:
                found.append(utc)
            if len(found) == count:
                break
        return found[::-1]

    def times(self, first: datetime, until: datetime) -> Iterator[datetime]:
        """`first` (itself a time of the cron) and every time after it up to `until`."""
        moment = first
        while moment <= until:
            yield moment
            moment = self.after(moment)


def parse_cron(expression: str, timezone: str) -> Cron:
    """Raises InvalidArgument naming `cron` or `timezone` (an expression that names no time
    at all is refused by `Cron.after`, the first time it is asked for one)."""
    zone = parse_zone(timezone)
    if not expression.strip():
        raise InvalidArgument("cron", "required, e.g. '0 3 * * *'")
    if len(expression) > MAX_CRON_CHARS:
        raise InvalidArgument("cron", f"at most {MAX_CRON_CHARS} characters")
    fields = expression.split()
    if len(fields) != 5:
        # cronsim also takes a sixth field (seconds); a schedule's unit is the minute.
        raise InvalidArgument(
            "cron",
            f"five fields (minute hour day-of-month month day-of-week), got {len(fields)}",
        )
    normal = " ".join(fields)
    try:
        # Any start will do: the fields are parsed when the iterator is made.
        CronSim(normal, _EPOCH.astimezone(zone))
    except (CronSimError, ValueError, IndexError) as exc:
        raise InvalidArgument("cron", f"not a cron expression: {exc or 'bad field'}") from None
    return Cron(normal, zone)


def parse_zone(name: str) -> ZoneInfo:
    """An IANA zone ("Europe/Madrid"); empty is UTC. Raises InvalidArgument naming
    `timezone`."""
    if not name:
        return ZoneInfo(UTC_NAME)
    if len(name) > MAX_TIMEZONE_CHARS:
        raise InvalidArgument("timezone", f"at most {MAX_TIMEZONE_CHARS} characters")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # ValueError: a path-like name ("../x"), which zoneinfo refuses to look up.
        raise InvalidArgument(
            "timezone", f"{name!r} is not an IANA time zone (e.g. Europe/Madrid, UTC)"
        ) from None


@dataclass(frozen=True)
class Schedule:
    schedule_id: str
    tenant_id: str
    workflow_id: str
    cron: str
    # The IANA zone the expression is read in; "" is UTC.
    timezone: str
    input: dict[str, Any]
    overlap: str
    # Of the times missed, how many start when an engine comes back: the latest ones.
    catchup_limit: int
    # 0: the engine's default.
    priority: int
    created_at: datetime
    paused: bool = False
    # None while paused.
    next_run_time: datetime | None = None
    # While paused: the time it would have run next, from which resuming counts the skipped.
    paused_next_run_time: datetime | None = None
    last_run_time: datetime | None = None
    last_execution_id: str | None = None
    runs: int = 0
    skipped_runs: int = 0
    # Every change moves it on: a write is made only over the version it was decided on.
    version: int = 0

    @functools.cached_property
    def parsed(self) -> Cron:
        return parse_cron(self.cron, self.timezone)

    def request_id(self, time: datetime) -> str:
        """The start's idempotency key for one of its times: every engine that starts that
        time asks for the same execution, and only one is ever made."""
        return f"schedule:{self.schedule_id}:{time.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def new_schedule(
    *,
    schedule_id: str,
    tenant_id: str,
    workflow_id: str,
    cron: str,
    timezone: str,
    input: dict[str, Any],
    overlap: str,
    catchup_limit: int | None,
    priority: int,
    paused: bool,
    now: datetime,
) -> Schedule:
    """A checked schedule, its first time computed from `now` (`catchup_limit` None: the
    default). Raises InvalidArgument naming the field."""
    parsed = parse_cron(cron, timezone)
    if overlap not in OVERLAPS:
        raise InvalidArgument("overlap", f"one of {', '.join(OVERLAPS)}")
    if catchup_limit is not None and not 0 <= catchup_limit <= MAX_CATCHUP_LIMIT:
        raise InvalidArgument("catchup_limit", f"must be 0 to {MAX_CATCHUP_LIMIT} (unset: 1)")
    upcoming = parsed.after(now)
    return Schedule(
        schedule_id=schedule_id,
        tenant_id=tenant_id,
        workflow_id=workflow_id,
        cron=parsed.expression,
        timezone=timezone,
        input=input,
        overlap=overlap,
        catchup_limit=DEFAULT_CATCHUP_LIMIT if catchup_limit is None else catchup_limit,
        priority=priority,
        created_at=now,
        paused=paused,
        next_run_time=None if paused else upcoming,
        paused_next_run_time=upcoming if paused else None,
    )


@dataclass(frozen=True)
class Round:
    """What one round does with a due schedule."""

    # The times to start, oldest first.
    start: tuple[datetime, ...]
    # Times that passed without a start.
    skipped: int
    next_run_time: datetime


def plan_round(schedule: Schedule, now: datetime, *, last_running: bool) -> Round:
    """The times of `schedule` due by `now` (from its next_run_time on), and what becomes of
    them. `last_running`: the execution it started last has not ended (overlap SKIP)."""
    assert schedule.next_run_time is not None, "a paused schedule has no round"
    cron = schedule.parsed
    keep = schedule.catchup_limit + 1  # the missed ones that may start, and one on time
    latest: deque[datetime] = deque(maxlen=keep)
    due = 0
    for moment in cron.times(schedule.next_run_time, now):
        latest.append(moment)
        due += 1
        if due == MAX_COUNTED:
            # More than can be counted: only the latest may start; the count stops here.
            latest = deque(cron.latest(now, keep), maxlen=keep)
            break
    on_time = [latest.pop()] if latest and now - latest[-1] <= ON_TIME else []
    missed = list(latest)[-schedule.catchup_limit :] if schedule.catchup_limit else []
    start = missed + on_time
    if schedule.overlap == OVERLAP_SKIP:
        start = [] if last_running else start[-1:]
    return Round(tuple(start), due - len(start), cron.after(now))


def fired(schedule: Schedule, done: Round, started: list[tuple[datetime, str]]) -> Schedule:
    """The schedule after a round that started `started` (time, execution id) of
    `done.start`; a time that could not start counts as skipped."""
    last = started[-1] if started else None
    return dataclasses.replace(
        schedule,
        next_run_time=done.next_run_time,
        last_run_time=last[0] if last else schedule.last_run_time,
        last_execution_id=last[1] if last else schedule.last_execution_id,
        runs=schedule.runs + len(started),
        skipped_runs=schedule.skipped_runs + done.skipped + len(done.start) - len(started),
        version=schedule.version + 1,
    )


def paused(schedule: Schedule) -> Schedule:
    """Starts nothing until resumed; what it would have run next is kept, to count from."""
    if schedule.paused:
        return schedule
    return dataclasses.replace(
        schedule,
        paused=True,
        next_run_time=None,
        paused_next_run_time=schedule.next_run_time,
        version=schedule.version + 1,
    )


def resumed(schedule: Schedule, now: datetime) -> Schedule:
    """Runs again from the first time after `now`; the times passed while paused are
    skipped (counted, up to MAX_COUNTED), none of them starts."""
    if not schedule.paused:
        return schedule
    cron = schedule.parsed
    skipped = 0
    if schedule.paused_next_run_time is not None:
        for _ in cron.times(schedule.paused_next_run_time, now):
            skipped += 1
            if skipped == MAX_COUNTED:
                break
    return dataclasses.replace(
        schedule,
        paused=False,
        next_run_time=cron.after(now),
        paused_next_run_time=None,
        skipped_runs=schedule.skipped_runs + skipped,
        version=schedule.version + 1,
    )


def _millis(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
