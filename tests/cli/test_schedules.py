"""`discovery schedules list|create|pause|resume|delete` against a real engine."""

from __future__ import annotations

import pytest
from discovery.engine.v1 import workflow_pb2 as wf_pb

from tests.cli.cli import assert_readable_error, call_main, run_cli


async def test_create_list_pause_resume_and_delete(
    target: str, two_naps: wf_pb.Workflow, capsys: pytest.CaptureFixture[str]
) -> None:
    created = await run_cli(
        target,
        "schedules",
        "create",
        "two naps",  # by name, as `run` takes it
        "--cron",
        "0 3 * * *",
        "--timezone",
        "Europe/Madrid",
        "--input",
        '{"seconds": 1}',
        "--overlap",
        "allow",
        "--catchup",
        "3",
    )
    assert created.code == 0, created
    schedule_id = created.out.strip()
    assert "scheduled 'two naps' at '0 3 * * *' (Europe/Madrid); next run 20" in created.err

    listed = await call_main(capsys, ["--engine", target, "schedules", "list"])
    assert listed.code == 0, listed
    assert schedule_id in listed.out and "two naps" in listed.out
    assert "0 3 * * * Europe/Madrid" in listed.out

    as_json = await call_main(
        capsys,
        ["schedules", "list", "--workflow", two_naps.workflow_id, "--json", "--engine", target],
    )
    [only] = as_json.json_lines()[0]["schedules"]
    assert (only["schedule_id"], only["workflow_id"]) == (schedule_id, two_naps.workflow_id)
    assert (only["overlap"], only["catchup_limit"], only["input"]) == (
        "OVERLAP_POLICY_ALLOW",
        3,
        {"seconds": 1},
    )

    paused = await call_main(capsys, ["--engine", target, "schedules", "pause", schedule_id])
    assert paused.code == 0 and "paused" in paused.out, paused
    resumed = await call_main(capsys, ["--engine", target, "schedules", "resume", schedule_id])
    assert resumed.code == 0 and "paused" not in resumed.out, resumed
    assert only["next_run_time"].replace("T", " ") in resumed.out  # 03:00 in Madrid, in UTC
    deleted = await call_main(capsys, ["--engine", target, "schedules", "delete", schedule_id])
    assert deleted.code == 0 and "deleted schedule" in deleted.err, deleted
    empty = await call_main(capsys, ["--engine", target, "schedules", "list"])
    assert empty.code == 0 and "no schedules" in empty.err, empty


async def test_refusals_are_one_readable_line(
    target: str, two_naps: wf_pb.Workflow, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--engine", target, "schedules"]
    bad_cron = await call_main(
        capsys, [*base, "create", two_naps.workflow_id, "--cron", "every day"]
    )
    assert_readable_error(bad_cron)
    assert "invalid schedule" in bad_cron.err and "cron" in bad_cron.err
    bad_zone = await call_main(
        capsys,
        [*base, "create", two_naps.workflow_id, "--cron", "0 3 * * *", "--timezone", "Mars/Base"],
    )
    assert_readable_error(bad_zone)
    assert "timezone" in bad_zone.err
    bad_input = await call_main(
        capsys, [*base, "create", two_naps.workflow_id, "--cron", "0 3 * * *", "--input", "[1]"]
    )
    assert_readable_error(bad_input)
    assert "--input" in bad_input.err
    missing = await call_main(capsys, [*base, "pause", "no-such-schedule"])
    assert_readable_error(missing)
    assert "no-such-schedule" in missing.err
