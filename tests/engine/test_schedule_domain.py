"""Cron schedules as the domain decides them (services/engine/domain/schedule.py), without a
database or a clock: when times come in a zone across daylight saving, which missed times
start after downtime, what overlap skips, and what a pause skips."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from services.engine.domain.errors import InvalidArgument
from services.engine.domain.schedule import (
    MAX_COUNTED,
    ON_TIME,
    OVERLAP_ALLOW,
    OVERLAP_SKIP,
    Schedule,
    fired,
    new_schedule,
    parse_cron,
    paused,
    plan_round,
    resumed,
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def schedule(cron: str, now: datetime, **given: Any) -> Schedule:
    asked: dict[str, Any] = {
        "schedule_id": "s-1",
        "tenant_id": "acme",
        "workflow_id": "w-1",
        "cron": cron,
        "timezone": "",
        "input": {},
        "overlap": OVERLAP_SKIP,
        "catchup_limit": None,
        "priority": 0,
        "paused": False,
        "now": now,
    }
    return new_schedule(**{**asked, **given})


def times(cron: str, zone: str, after: datetime, count: int) -> list[str]:
    parsed = parse_cron(cron, zone)
    found, moment = [], after
    for _ in range(count):
        moment = parsed.after(moment)
        found.append(moment.strftime("%Y-%m-%dT%H:%MZ"))
    return found


# --- times in a zone -------------------------------------------------------------------------


def test_a_daily_time_in_madrid_keeps_its_local_hour_across_both_changes_of_the_clock() -> None:
    # 2026-03-29: 02:00 CET becomes 03:00 CEST; 2026-10-25: 03:00 CEST becomes 02:00 CET.
    assert times("0 9 * * *", "Europe/Madrid", at("2026-03-27T12:00:00Z"), 4) == [
        "2026-03-28T08:00Z",  # 09:00 CET
        "2026-03-29T07:00Z",  # 09:00 CEST
        "2026-03-30T07:00Z",
        "2026-03-31T07:00Z",
    ]
    assert times("0 9 * * *", "Europe/Madrid", at("2026-10-24T12:00:00Z"), 2) == [
        "2026-10-25T08:00Z",  # 09:00 CET again
        "2026-10-26T08:00Z",
    ]


def test_a_time_the_spring_forward_skips_runs_when_the_clock_jumps() -> None:
    # 02:30 does not exist in Madrid on 2026-03-29: it runs at 03:00 CEST (01:00Z), once.
    assert times("30 2 * * *", "Europe/Madrid", at("2026-03-27T12:00:00Z"), 3) == [
        "2026-03-28T01:30Z",
        "2026-03-29T01:00Z",
        "2026-03-30T00:30Z",
    ]


def test_a_time_the_fall_back_repeats_runs_once() -> None:
    # 02:30 happens twice in Madrid on 2026-10-25 (CEST, then CET): a daily job runs once.
    assert times("30 2 * * *", "Europe/Madrid", at("2026-10-24T12:00:00Z"), 2) == [
        "2026-10-25T00:30Z",
        "2026-10-26T01:30Z",
    ]


def test_a_job_every_half_hour_runs_in_both_hours_of_the_fall_back() -> None:
    assert times("*/30 * * * *", "Europe/Madrid", at("2026-10-24T23:45:00Z"), 5) == [
        "2026-10-25T00:00Z",  # 02:00 CEST
        "2026-10-25T00:30Z",  # 02:30 CEST
        "2026-10-25T01:00Z",  # 02:00 CET
        "2026-10-25T01:30Z",  # 02:30 CET
        "2026-10-25T02:00Z",
    ]


def test_new_york_moves_its_utc_hour_with_its_own_dates() -> None:
    # The US changed on 2026-03-08, Europe three weeks later.
    assert times("0 9 * * 1-5", "America/New_York", at("2026-03-06T00:00:00Z"), 2) == [
        "2026-03-06T14:00Z",  # Friday 09:00 EST
        "2026-03-09T13:00Z",  # Monday 09:00 EDT
    ]


def test_no_zone_is_utc() -> None:
    assert times("15 3 * * *", "", at("2026-03-28T12:00:00Z"), 2) == [
        "2026-03-29T03:15Z",
        "2026-03-30T03:15Z",
    ]


def test_the_first_time_is_after_creation_and_strictly_so() -> None:
    created = schedule("0 * * * *", at("2026-05-01T10:00:00Z"))
    assert created.next_run_time == at("2026-05-01T11:00:00Z")
    assert created.request_id(at("2026-05-01T11:00:00Z")) == "schedule:s-1:2026-05-01T11:00:00Z"


@pytest.mark.parametrize(
    ("cron", "zone", "field"),
    [
        ("", "", "cron"),
        ("* * * *", "", "cron"),
        ("0 * * * * *", "", "cron"),  # seconds: a schedule's unit is the minute
        ("61 * * * *", "", "cron"),
        ("0 0 30 2 *", "", "cron"),  # never
        ("* * */20 * 1L", "", "cron"),  # not in the next 50 years
        ("0 3 * * *", "Mars/Olympus_Mons", "timezone"),
        ("0 3 * * *", "../../etc/passwd", "timezone"),
        ("0 3 * * *", "x" * 101, "timezone"),
    ],
)
def test_a_bad_expression_or_zone_names_its_field(cron: str, zone: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        schedule(cron, at("2026-05-01T10:00:00Z"), timezone=zone)
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("given", "field"),
    [({"catchup_limit": 101}, "catchup_limit"), ({"overlap": "sometimes"}, "overlap")],
)
def test_bad_settings_name_their_field(given: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        schedule("0 3 * * *", at("2026-05-01T10:00:00Z"), **given)
    assert refused.value.field == field


# --- rounds: on time, catch-up, overlap ---------------------------------------------------------


def test_a_time_reached_on_time_starts_and_the_next_one_is_after_now() -> None:
    hourly = schedule("0 * * * *", at("2026-05-01T09:30:00Z"))
    plan = plan_round(hourly, at("2026-05-01T10:00:00.200Z"), last_running=False)
    assert plan.start == (at("2026-05-01T10:00:00Z"),)
    assert plan.skipped == 0
    assert plan.next_run_time == at("2026-05-01T11:00:00Z")


def down_five_hours(**given: Any) -> tuple[Schedule, datetime]:
    """An hourly schedule whose engines were all down from 09:30 to 14:40: the 10:00 to 14:00
    times were missed (the latest one 40 minutes late, past ON_TIME)."""
    return schedule("0 * * * *", at("2026-05-01T09:30:00Z"), **given), at("2026-05-01T14:40:00Z")


def test_after_downtime_the_latest_missed_time_starts_by_default() -> None:
    hourly, now = down_five_hours()
    plan = plan_round(hourly, now, last_running=False)
    assert plan.start == (at("2026-05-01T14:00:00Z"),)
    assert plan.skipped == 4
    assert plan.next_run_time == at("2026-05-01T15:00:00Z")


@pytest.mark.parametrize(
    ("limit", "started"), [(0, []), (3, [12, 13, 14]), (100, [10, 11, 12, 13, 14])]
)
def test_the_catchup_limit_starts_the_latest_missed_times(limit: int, started: list[int]) -> None:
    hourly, now = down_five_hours(catchup_limit=limit, overlap=OVERLAP_ALLOW)
    plan = plan_round(hourly, now, last_running=False)
    assert plan.start == tuple(at(f"2026-05-01T{hour}:00:00Z") for hour in started)
    assert plan.skipped == 5 - len(started)


def test_a_catchup_limit_of_zero_still_starts_the_time_that_is_on_time() -> None:
    minutely = schedule("* * * * *", at("2026-05-01T09:30:00Z"), catchup_limit=0)
    now = at("2026-05-01T09:35:00Z") + ON_TIME / 2
    plan = plan_round(minutely, now, last_running=False)
    assert plan.start == (at("2026-05-01T09:35:00Z"),)
    assert plan.skipped == 4


def test_missed_times_start_with_the_one_on_time_within_the_limit() -> None:
    minutely = schedule(
        "* * * * *", at("2026-05-01T09:30:00Z"), catchup_limit=2, overlap=OVERLAP_ALLOW
    )
    plan = plan_round(minutely, at("2026-05-01T09:35:05Z"), last_running=False)
    assert plan.start == tuple(at(f"2026-05-01T09:{m}:00Z") for m in (33, 34, 35))
    assert plan.skipped == 2


def test_overlap_skip_starts_nothing_while_the_last_run_goes_on() -> None:
    hourly = schedule("0 * * * *", at("2026-05-01T09:30:00Z"))
    plan = plan_round(hourly, at("2026-05-01T10:00:01Z"), last_running=True)
    assert plan.start == ()
    assert plan.skipped == 1
    assert plan.next_run_time == at("2026-05-01T11:00:00Z")


def test_overlap_skip_catches_up_one_time_at_most() -> None:
    # The first run would still be going on when the second started.
    hourly, now = down_five_hours(catchup_limit=3)
    plan = plan_round(hourly, now, last_running=False)
    assert plan.start == (at("2026-05-01T14:00:00Z"),)
    assert plan.skipped == 4


def test_overlap_allow_starts_beside_a_run_that_goes_on() -> None:
    hourly = schedule("0 * * * *", at("2026-05-01T09:30:00Z"), overlap=OVERLAP_ALLOW)
    plan = plan_round(hourly, at("2026-05-01T10:00:01Z"), last_running=True)
    assert plan.start == (at("2026-05-01T10:00:00Z"),)


def test_a_month_of_downtime_is_decided_at_once_and_counted_up_to_a_bound() -> None:
    minutely = schedule("* * * * *", at("2026-05-01T00:00:30Z"))
    began = time.monotonic()
    plan = plan_round(minutely, at("2026-06-01T00:00:45Z"), last_running=False)
    assert time.monotonic() - began < 2.0
    assert plan.start == (at("2026-06-01T00:00:00Z"),)  # 45 s late: missed, the latest one
    assert plan.skipped == MAX_COUNTED - 1


def test_a_round_counts_what_it_started_and_what_it_could_not() -> None:
    hourly, now = down_five_hours(catchup_limit=2, overlap=OVERLAP_ALLOW)
    plan = plan_round(hourly, now, last_running=False)
    # Of the two it planned, one start was refused (a quota): that time is skipped too.
    after = fired(hourly, plan, [(plan.start[1], "e-14")])
    assert (after.runs, after.skipped_runs) == (1, 4)
    assert (after.last_run_time, after.last_execution_id) == (plan.start[1], "e-14")
    assert after.next_run_time == plan.next_run_time
    assert after.version == hourly.version + 1


# --- pause and resume --------------------------------------------------------------------------


def test_a_paused_schedule_has_no_next_time_and_resuming_skips_what_passed_meanwhile() -> None:
    hourly = schedule("0 * * * *", at("2026-05-01T09:30:00Z"))
    stopped = paused(hourly)
    assert stopped.paused and stopped.next_run_time is None
    assert paused(stopped) is stopped
    back = resumed(stopped, at("2026-05-01T13:20:00Z"))
    # 10:00, 11:00, 12:00 and 13:00 passed while paused: skipped, none starts.
    assert (back.paused, back.skipped_runs, back.runs) == (False, 4, 0)
    assert back.next_run_time == at("2026-05-01T14:00:00Z")
    assert resumed(back, at("2026-05-01T13:30:00Z")) is back
    assert back.version == hourly.version + 2


def test_created_paused_it_runs_from_the_first_time_after_its_resume() -> None:
    hourly = schedule("0 * * * *", at("2026-05-01T09:30:00Z"), paused=True)
    assert hourly.next_run_time is None
    back = resumed(hourly, at("2026-05-01T09:40:00Z"))
    assert (back.next_run_time, back.skipped_runs) == (at("2026-05-01T10:00:00Z"), 0)
