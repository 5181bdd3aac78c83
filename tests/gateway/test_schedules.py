"""Cron schedules through the REST API: create, read, list, pause, resume and delete, in JSON
with the names the other routes use; a bad cron expression or time zone is a 422 naming the
field. (Firing is the engine's: tests/engine/test_schedules.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway.harness import Api, sleep_step

# Far from any test's clock: these schedules must not fire while the session's engine runs.
YEARLY = "0 0 1 1 *"


async def test_create_read_list_pause_resume_and_delete(api: Api) -> None:
    workflow_id = await api.workflow(sleep_step())
    status, created = await api.call(
        "POST",
        f"/workflows/{workflow_id}/schedules",
        {
            "cron": YEARLY,
            "timezone": "Europe/Madrid",
            "input": {"seconds": 1},
            "overlap": "allow",
            "catchup_limit": 3,
            "priority": 2,
        },
    )
    assert status == 201, created
    schedule_id = created["schedule_id"]
    assert created == {
        "schedule_id": schedule_id,
        "workflow_id": workflow_id,
        "cron": YEARLY,
        "timezone": "Europe/Madrid",
        "input": {"seconds": 1},
        "overlap": "allow",
        "catchup_limit": 3,
        "priority": 2,
        "paused": False,
        "next_run_time": created["next_run_time"],
        "last_run_time": None,
        "last_execution_id": None,
        "created_at": created["created_at"],
        "runs": 0,
        "skipped_runs": 0,
    }
    # New Year's midnight in Madrid is 23:00 UTC the day before.
    assert created["next_run_time"].endswith("-12-31T23:00:00.000Z")
    try:
        assert await api.call("GET", f"/schedules/{schedule_id}") == (200, created)
        status, listed = await api.call("GET", f"/schedules?workflow_id={workflow_id}")
        assert (status, listed) == (200, {"schedules": [created], "next_page_token": None})

        status, stopped = await api.call("POST", f"/schedules/{schedule_id}/pause")
        assert status == 200 and stopped["paused"] and stopped["next_run_time"] is None
        status, back = await api.call("POST", f"/schedules/{schedule_id}/resume")
        assert status == 200 and not back["paused"]
        assert back["next_run_time"] == created["next_run_time"]
    finally:
        assert (await api.call("DELETE", f"/schedules/{schedule_id}"))[0] == 204
    status, missing = await api.call("GET", f"/schedules/{schedule_id}")
    assert status == 404 and missing["error"]["code"] == "SCHEDULE_NOT_FOUND"
    status, listed = await api.call("GET", f"/schedules?workflow_id={workflow_id}")
    assert listed == {"schedules": [], "next_page_token": None}


async def test_defaults_are_said(api: Api) -> None:
    workflow_id = await api.workflow(sleep_step())
    status, created = await api.call(
        "POST", f"/workflows/{workflow_id}/schedules", {"cron": YEARLY}
    )
    assert status == 201, created
    try:
        assert (created["timezone"], created["overlap"], created["catchup_limit"]) == (
            "UTC",
            "skip",
            1,
        )
        assert (created["priority"], created["input"]) == (None, {})
        assert created["next_run_time"].endswith("-01-01T00:00:00.000Z")
    finally:
        await api.call("DELETE", f"/schedules/{created['schedule_id']}")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron": "every day at three"}, "cron"),  # refused by the engine
        ({"cron": "0 3 * *"}, "cron"),
        ({"cron": YEARLY, "timezone": "Nowhere/Town"}, "timezone"),  # by the engine
        ({}, "cron"),
        ({"cron": 3}, "cron"),
        ({"cron": YEARLY, "catchup_limit": 101}, "catchup_limit"),
        ({"cron": YEARLY, "overlap": "sometimes"}, "overlap"),
        ({"cron": YEARLY, "priority": 0}, "priority"),
        ({"cron": YEARLY, "input": "seconds=1"}, "input"),
        ({"cron": YEARLY, "paused": "yes"}, "paused"),
        ({"cron": YEARLY, "colour": "blue"}, "colour"),
    ],
)
async def test_a_bad_field_is_422_naming_it(api: Api, body: dict[str, Any], field: str) -> None:
    workflow_id = await api.workflow(sleep_step())
    status, refused = await api.call("POST", f"/workflows/{workflow_id}/schedules", body)
    assert status == 422, refused
    assert refused["error"]["details"]["field"] == field
    _, listed = await api.call("GET", f"/schedules?workflow_id={workflow_id}")
    assert listed["schedules"] == []


async def test_unknown_ids_and_parameters(api: Api) -> None:
    status, body = await api.call("POST", "/workflows/no-such-workflow/schedules", {"cron": YEARLY})
    assert (status, body["error"]["code"]) == (404, "WORKFLOW_NOT_FOUND")
    for method in ("GET", "DELETE"):
        status, body = await api.call(method, "/schedules/no-such-schedule")
        assert (status, body["error"]["code"]) == (404, "SCHEDULE_NOT_FOUND")
    for action in ("pause", "resume"):
        status, body = await api.call("POST", f"/schedules/no-such-schedule/{action}")
        assert (status, body["error"]["code"]) == (404, "SCHEDULE_NOT_FOUND")
    status, body = await api.call("GET", "/schedules?colour=blue")
    assert (status, body["error"]["details"]["field"]) == (400, "colour")
