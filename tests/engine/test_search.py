"""Finding executions: ListExecutions narrowed by status, workflow, creation time and the
workflow's name, all of them together, paged, newest first."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es

from tests.stack import Client, Stack, error_info

FAILED = ex_pb.EXECUTION_STATUS_FAILED
COMPLETED = ex_pb.EXECUTION_STATUS_COMPLETED
WAITING = ex_pb.EXECUTION_STATUS_WAITING


async def listed(c: Client, **filters: Any) -> list[ex_pb.Execution]:
    """Every page of ListExecutions with these filters, two at a time."""
    found: list[ex_pb.Execution] = []
    token = ""
    while True:
        response: es.ListExecutionsResponse = await c.executions.ListExecutions(
            es.ListExecutionsRequest(page_size=2, page_token=token, **filters), timeout=10
        )
        found.extend(response.executions)
        token = response.next_page_token
        if not token:
            return found


async def ids(c: Client, **filters: Any) -> set[str]:
    return {e.execution_id for e in await listed(c, **filters)}


async def wait_status(c: Client, execution_id: str, status: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while (await c.get(execution_id)).status != status:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)


async def test_executions_are_found_by_status_workflow_time_and_name(stack: Stack) -> None:
    c = stack.client
    intake = await c.create_workflow("Invoice Intake", {"name": "read", "handler": "echo"})
    rejects = await c.create_workflow(
        "invoice rejects", {"name": "refuse", "handler": "fail", "retry": {"max_attempts": 1}}
    )
    contracts = await c.create_workflow("contracts", {"name": "file", "handler": "echo"})
    done = [(await c.start(intake.workflow_id, {})).execution_id for _ in range(3)]
    failed = [(await c.start(rejects.workflow_id, {})).execution_id for _ in range(3)]
    waiting = (await c.start(contracts.workflow_id, {}, manual=True)).execution_id
    for execution_id in done + failed:
        await c.wait_terminal(execution_id, 30)
    await wait_status(c, waiting, WAITING)

    assert await ids(c, statuses=[FAILED]) == set(failed)
    assert await ids(c, statuses=[COMPLETED, FAILED]) == set(done + failed)
    assert await ids(c, statuses=[WAITING]) == {waiting}
    assert await ids(c, workflow_id=contracts.workflow_id) == {waiting}
    # Part of the name, whatever the case; not a pattern.
    assert await ids(c, workflow_name_contains="INVOICE") == set(done + failed)
    assert await ids(c, workflow_name_contains="voice rej") == set(failed)
    assert await ids(c, workflow_name_contains=".") == set()
    # All filters at once.
    assert await ids(c, statuses=[FAILED], workflow_id=intake.workflow_id) == set()
    assert await ids(c, statuses=[FAILED], workflow_name_contains="rejects") == set(failed)

    # Newest first, across pages; a time range cuts it where asked.
    everything = await listed(c)
    assert {e.execution_id for e in everything} == {*done, *failed, waiting}
    times = [e.create_time.ToDatetime() for e in everything]
    assert times == sorted(times, reverse=True)
    first_failed = min((e for e in everything if e.execution_id in failed), key=_created)
    later = await ids(c, created_after=first_failed.create_time)
    assert later == {e.execution_id for e in everything if _created(e) >= _created(first_failed)}
    assert failed[0] in later and not later & set(done)
    earlier = await ids(c, created_before=first_failed.create_time)
    assert earlier == set(done)


def _created(execution: ex_pb.Execution) -> float:
    return execution.create_time.ToNanoseconds() / 1e9


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"statuses": [ex_pb.EXECUTION_STATUS_UNSPECIFIED]}, "statuses[0]"),
        ({"statuses": [FAILED, 42]}, "statuses[1]"),
        ({"workflow_name_contains": "x" * 201}, "workflow_name_contains"),
    ],
)
async def test_a_bad_filter_is_refused_naming_it(
    stack: Stack, filters: dict[str, Any], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stack.client.executions.ListExecutions(
            es.ListExecutionsRequest(**filters), timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(refused.value)[2] == [field]


async def test_a_time_range_that_ends_before_it_begins_is_refused(stack: Stack) -> None:
    request = es.ListExecutionsRequest()
    request.created_after.FromSeconds(2_000_000_000)
    request.created_before.FromSeconds(1_000_000_000)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stack.client.executions.ListExecutions(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(refused.value)[2] == ["created_before"]
