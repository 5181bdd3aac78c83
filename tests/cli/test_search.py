"""`discovery executions list`: the failed runs of the last hour, and the like."""

from __future__ import annotations

import json

import pytest

from tests.cli.cli import assert_readable_error, call_main
from tests.stack import Stack


async def test_lists_the_failed_runs_of_the_last_hour(
    stack: Stack, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    c = stack.client
    fine = await c.create_workflow("intake", {"name": "read", "handler": "echo"})
    doomed = await c.create_workflow(
        "rejects", {"name": "refuse", "handler": "fail", "retry": {"max_attempts": 1}}
    )
    done = (await c.start(fine.workflow_id, {})).execution_id
    failed = (await c.start(doomed.workflow_id, {})).execution_id
    for execution_id in (done, failed):
        await c.wait_terminal(execution_id, 30)
    engine = ["--engine", target]

    result = await call_main(
        capsys, [*engine, "executions", "list", "--status", "failed", "--since", "1h", "--json"]
    )
    assert result.code == 0, result
    listed = json.loads(result.out)["executions"]
    assert [e["execution_id"] for e in listed] == [failed]

    result = await call_main(capsys, [*engine, "executions", "list", "--workflow", "intake"])
    assert result.code == 0, result
    assert done in result.out and failed not in result.out
    assert "completed" in result.out and "intake" in result.out

    result = await call_main(
        capsys, [*engine, "executions", "list", "--status", "completed", "--name", "REJ"]
    )
    assert result.code == 0 and result.out == "", result
    assert "no executions match" in result.err


async def test_a_bad_time_is_a_usage_error(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = await call_main(
        capsys, ["--engine", target, "executions", "list", "--since", "last tuesday"]
    )
    assert_readable_error(result)
    assert "--since" in result.err
