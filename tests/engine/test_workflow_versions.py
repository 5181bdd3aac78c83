"""Workflow versions (issue 16): a name is one workflow per tenant, creating it again is
idempotent, UpdateWorkflow makes numbered versions, and an execution runs the version it
started with to its end while the next starts run the new one."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import workflow_pb2 as wf
from discovery.engine.v1 import workflow_service_pb2 as ws
from google.protobuf import json_format
from pymongo import AsyncMongoClient

from services.auth import ADMIN, CLIENT
from services.engine.clock import utc_now
from services.engine.domain.versions import next_version, same_definition
from services.engine.domain.workflow import Workflow, new_workflow
from services.engine.store.schema import OLD_WORKFLOW_NAME_INDEX
from tests.stack import Client, Stack, error_info, start_stack, token

ECHO = {"handler": "echo"}
NAP = {"handler": "sleep", "heartbeat_timeout_seconds": 5}


def definition(name: str, *steps: dict[str, Any], description: str = "") -> wf.Workflow:
    message = wf.Workflow(name=name, description=description)
    for step in steps:
        json_format.ParseDict(step, message.steps.add())
    return message


async def create(c: Client, workflow: wf.Workflow) -> ws.CreateWorkflowResponse:
    response: ws.CreateWorkflowResponse = await c.workflows.CreateWorkflow(
        ws.CreateWorkflowRequest(workflow=workflow), timeout=10
    )
    return response


async def update(c: Client, workflow_id: str, workflow: wf.Workflow) -> ws.UpdateWorkflowResponse:
    response: ws.UpdateWorkflowResponse = await c.workflows.UpdateWorkflow(
        ws.UpdateWorkflowRequest(workflow_id=workflow_id, workflow=workflow), timeout=10
    )
    return response


async def get(c: Client, workflow_id: str, version: int = 0) -> wf.Workflow:
    response: ws.GetWorkflowResponse = await c.workflows.GetWorkflow(
        ws.GetWorkflowRequest(workflow_id=workflow_id, version=version), timeout=10
    )
    return response.workflow


async def versions(
    c: Client, workflow_id: str, page_size: int = 0, page_token: str = ""
) -> ws.ListWorkflowVersionsResponse:
    response: ws.ListWorkflowVersionsResponse = await c.workflows.ListWorkflowVersions(
        ws.ListWorkflowVersionsRequest(
            workflow_id=workflow_id, page_size=page_size, page_token=page_token
        ),
        timeout=10,
    )
    return response


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def advance_to_end(c: Client, execution_id: str) -> ex_pb.Execution:
    """Advances a manual execution step by step until it ends."""
    while True:
        execution = await c.get(execution_id)
        if execution.status in (
            ex_pb.EXECUTION_STATUS_COMPLETED,
            ex_pb.EXECUTION_STATUS_FAILED,
            ex_pb.EXECUTION_STATUS_CANCELLED,
        ):
            return execution
        if execution.status == ex_pb.EXECUTION_STATUS_WAITING:
            await c.executions.AdvanceExecution(
                es.AdvanceExecutionRequest(execution_id=execution_id), timeout=10
            )
        await asyncio.sleep(0.05)


def ran(execution: ex_pb.Execution) -> list[str]:
    return [a.step_name for a in execution.steps_history]


async def test_a_running_execution_keeps_its_version_and_the_next_start_runs_the_new_one(
    stack: Stack,
) -> None:
    c = stack.client
    v1 = await create(c, definition("review", {"name": "nap", **NAP}, {"name": "a", **ECHO}))
    workflow_id = v1.workflow.workflow_id
    # One waits to be advanced (parked: read back from the store when advanced), the other
    # is in its first step's nap, held in this engine's memory.
    waiting = await c.start(workflow_id, {"seconds": 0.1}, manual=True)
    napping = await c.start(workflow_id, {"seconds": 1.5})
    assert (waiting.workflow_version, napping.workflow_version) == (1, 1)

    v2 = await update(
        c, workflow_id, definition("review", {"name": "x", **ECHO}, {"name": "y", **ECHO})
    )
    assert v2.changed and v2.workflow.version == 2

    finished = [await advance_to_end(c, waiting.execution_id)]
    finished.append(await c.wait_terminal(napping.execution_id, 30))
    for execution in finished:
        assert execution.status == ex_pb.EXECUTION_STATUS_COMPLETED
        assert ran(execution) == ["nap", "a"]
        assert execution.workflow_version == 1
    steps: es.ListExecutionStepsResponse = await c.executions.ListExecutionSteps(
        es.ListExecutionStepsRequest(execution_id=waiting.execution_id), timeout=10
    )
    assert [s.name for s in steps.steps] == ["nap", "a"]

    after = await c.start(workflow_id, {})
    assert after.workflow_version == 2
    final = await c.wait_terminal(after.execution_id, 30)
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    assert (ran(final), final.workflow_version) == (["x", "y"], 2)


async def test_creating_a_name_again_is_idempotent_and_another_definition_is_refused(
    stack: Stack,
) -> None:
    c = stack.client
    first = await create(c, definition("intake", {"name": "read", **ECHO}, description="d"))
    assert first.created and first.workflow.version == 1
    # The defaults spelled out are the same definition as the defaults left out.
    spelled = {"name": "read", **ECHO, "timeout_seconds": 3600, "retry": {"max_attempts": 3}}
    again = await create(c, definition("intake", spelled, description="d"))
    assert not again.created
    assert again.workflow == first.workflow

    other = await refused(create(c, definition("intake", {"name": "read", **NAP})))
    assert other.code() == grpc.StatusCode.ALREADY_EXISTS
    reason, metadata, _ = error_info(other)
    assert reason == "WORKFLOW_NAME_TAKEN"
    assert metadata == {"name": "intake", "workflow_id": first.workflow.workflow_id}
    assert "'intake'" in (other.details() or "") and "UpdateWorkflow" in (other.details() or "")
    listed: ws.ListWorkflowsResponse = await c.workflows.ListWorkflows(
        ws.ListWorkflowsRequest(name="intake"), timeout=10
    )
    assert [w.workflow_id for w in listed.workflows] == [first.workflow.workflow_id]


async def test_names_are_unique_per_tenant_and_two_tenants_may_share_one(
    stack: Stack, mongo_server: str, database: str
) -> None:
    acme = Client(stack.client.target, token(ADMIN, tenant="acme"))
    try:
        ours = await create(stack.client, definition("nightly", {"name": "a", **ECHO}))
        theirs = await create(acme, definition("nightly", {"name": "b", **ECHO}))
        assert theirs.created
        assert theirs.workflow.workflow_id != ours.workflow.workflow_id
        # Neither sees, updates nor lists the other's versions.
        for caller, other in ((acme, ours), (stack.client, theirs)):
            missing = await refused(versions(caller, other.workflow.workflow_id))
            assert missing.code() == grpc.StatusCode.NOT_FOUND
            missing = await refused(
                update(caller, other.workflow.workflow_id, definition("", {"name": "c", **ECHO}))
            )
            assert missing.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await acme.close()
    # The store holds it too, whatever called it: a unique index on (tenant_id, name).
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server)
    try:
        indexes = {i["name"]: i async for i in await client[database]["workflows"].list_indexes()}
    finally:
        await client.close()
    [unique] = [i for i in indexes.values() if i.get("unique")]
    assert list(unique["key"]) == ["tenant_id", "name"]


async def test_an_update_with_the_same_definition_makes_no_version(stack: Stack) -> None:
    c = stack.client
    created = await create(c, definition("same", {"name": "a", **ECHO}))
    workflow_id = created.workflow.workflow_id
    # The name may be left out, or be the workflow's own.
    for name in ("", "same"):
        unchanged = await update(c, workflow_id, definition(name, {"name": "a", **ECHO}))
        assert not unchanged.changed
        assert unchanged.workflow == created.workflow
    assert [v.version for v in (await versions(c, workflow_id)).versions] == [1]


async def test_each_version_is_kept_and_read_by_its_number_newest_first(stack: Stack) -> None:
    c = stack.client
    v1 = (await create(c, definition("graded", {"name": "a", **ECHO}, description="one"))).workflow
    workflow_id = v1.workflow_id
    v2 = (
        await update(c, workflow_id, definition("", {"name": "a", **NAP}, {"name": "b", **ECHO}))
    ).workflow
    v3 = (await update(c, workflow_id, definition("", {"name": "b", **ECHO}))).workflow
    assert [v.version for v in (v1, v2, v3)] == [1, 2, 3]
    # A step keeps its id while it keeps its name; a new step gets its own.
    assert v2.steps[0].step_id == v1.steps[0].step_id
    assert v3.steps[0].step_id == v2.steps[1].step_id
    assert v2.steps[1].step_id not in {s.step_id for s in v1.steps}
    # The workflow keeps its id, name and creation time; each version says when it was made.
    assert {(v.workflow_id, v.name, v.create_time.ToDatetime()) for v in (v1, v2, v3)} == {
        (workflow_id, "graded", v1.create_time.ToDatetime())
    }
    assert v1.update_time.ToDatetime() < v2.update_time.ToDatetime() < v3.update_time.ToDatetime()

    assert await get(c, workflow_id) == v3
    for version in (v1, v2, v3):
        assert await get(c, workflow_id, version.version) == version
    missing = await refused(get(c, workflow_id, 4))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(missing)[0] == "WORKFLOW_VERSION_NOT_FOUND"

    first = await versions(c, workflow_id, page_size=2)
    assert [v.version for v in first.versions] == [3, 2] and first.next_page_token
    last = await versions(c, workflow_id, page_size=2, page_token=first.next_page_token)
    assert list(last.versions) == [v1] and not last.next_page_token
    bad = await refused(versions(c, workflow_id, page_token="nonsense"))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(bad)[2] == ["page_token"]


async def test_a_workflow_keeps_its_name_and_an_update_is_checked_as_a_create(
    stack: Stack,
) -> None:
    c = stack.client
    workflow_id = (await create(c, definition("kept", {"name": "a", **ECHO}))).workflow.workflow_id
    renamed = await refused(update(c, workflow_id, definition("other", {"name": "a", **ECHO})))
    assert renamed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(renamed)[2] == ["name"]
    assert "'kept'" in (renamed.details() or "")
    unserved = await refused(update(c, workflow_id, definition("", {"name": "a", "handler": "x"})))
    assert error_info(unserved)[2] == ["steps[0].handler"]
    empty = await refused(update(c, workflow_id, definition("")))
    assert error_info(empty)[2] == ["steps"]
    unknown = await refused(
        update(c, "00000000-0000-0000-0000-000000000000", definition("", {"name": "a", **ECHO}))
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    assert [v.version for v in (await versions(c, workflow_id)).versions] == [1]


async def test_only_an_admin_updates_and_a_client_reads_versions(stack: Stack) -> None:
    workflow_id = (
        await create(stack.client, definition("guarded", {"name": "a", **ECHO}))
    ).workflow.workflow_id
    client = Client(stack.client.target, token(CLIENT))
    try:
        denied = await refused(update(client, workflow_id, definition("", {"name": "b", **ECHO})))
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        assert [v.version for v in (await versions(client, workflow_id)).versions] == [1]
        assert (await get(client, workflow_id, 1)).version == 1
    finally:
        await client.close()


async def test_workflows_of_an_earlier_engine_become_version_1_and_their_names_unique(
    mongo_server: str, database: str
) -> None:
    """Written before versions: no version field, no kept versions, and two workflows may
    share a name, which a unique index would refuse. The oldest keeps the name."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server)
    db = client[database]
    step = {
        "step_id": "s1",
        "name": "a",
        "handler": "echo",
        "timeout_seconds": 60.0,
        "heartbeat_timeout_seconds": 30.0,
        "retry": {
            "max_attempts": 1,
            "initial_backoff_seconds": 1.0,
            "backoff_multiplier": 2.0,
            "max_backoff_seconds": 60.0,
        },
    }
    try:
        await db["workflows"].create_index([("tenant_id", 1), ("name", 1)])
        olds = []
        for n, name in enumerate(["dup", "dup", "dup (2)", "alone"]):
            olds.append(
                {
                    "_id": f"old-{n}",
                    "tenant_id": "default",
                    "name": name,
                    "description": "",
                    "created_at": await _now(),
                    "steps": [step],
                }
            )
            await db["workflows"].insert_one(olds[-1])
        stack = await start_stack(mongo_server, database)
        try:
            c = stack.client
            names = {w.workflow_id: w.name for w in await _all(c)}
            assert names == {
                "old-0": "dup",
                "old-1": "dup (3)",
                "old-2": "dup (2)",
                "old-3": "alone",
            }
            for workflow_id in names:
                assert [v.version for v in (await versions(c, workflow_id)).versions] == [1]
                assert (await get(c, workflow_id, 1)).version == 1
            changed = await update(c, "old-0", definition("", {"name": "a", **NAP}))
            assert changed.changed and changed.workflow.version == 2
            assert changed.workflow.steps[0].step_id == "s1"
            started = await c.start("old-3", {})
            assert started.workflow_version == 1
        finally:
            await stack.stop()
        indexes = [i["name"] async for i in await db["workflows"].list_indexes()]
        assert OLD_WORKFLOW_NAME_INDEX not in indexes
    finally:
        await client.close()


async def _now() -> datetime:
    # Apart by a millisecond at least (BSON's resolution): the order is the creation order.
    await asyncio.sleep(0.002)
    return utc_now()


async def _all(c: Client) -> list[wf.Workflow]:
    listed: ws.ListWorkflowsResponse = await c.workflows.ListWorkflows(
        ws.ListWorkflowsRequest(), timeout=10
    )
    return list(listed.workflows)


async def test_concurrent_creates_and_updates_make_one_workflow_and_gapless_versions(
    stack: Stack,
) -> None:
    c = stack.client
    same = await asyncio.gather(
        *(create(c, definition("raced", {"name": "a", **ECHO})) for _ in range(6))
    )
    assert sum(r.created for r in same) == 1
    assert len({r.workflow.workflow_id for r in same}) == 1
    workflow_id = same[0].workflow.workflow_id

    differing = await asyncio.gather(
        *(create(c, definition("contested", {"name": f"s{i}", **ECHO})) for i in range(6)),
        return_exceptions=True,
    )
    made = [r for r in differing if isinstance(r, ws.CreateWorkflowResponse)]
    assert len(made) == 1 and made[0].created
    assert {r.code() for r in differing if isinstance(r, grpc.aio.AioRpcError)} == {
        grpc.StatusCode.ALREADY_EXISTS
    }

    updates = await asyncio.gather(
        *(update(c, workflow_id, definition("", {"name": f"u{i}", **ECHO})) for i in range(6)),
        return_exceptions=True,
    )
    changed = [r for r in updates if isinstance(r, ws.UpdateWorkflowResponse)]
    listed = [v.version for v in (await versions(c, workflow_id)).versions]
    assert listed == list(range(len(changed) + 1, 0, -1))
    assert sorted(r.workflow.version for r in changed) == listed[:-1][::-1]
    # Those that lost every round were told to retry, nothing else.
    assert {r.code() for r in updates if isinstance(r, grpc.aio.AioRpcError)} <= {
        grpc.StatusCode.UNAVAILABLE
    }


# --- the domain alone -------------------------------------------------------------------


def _made(name: str, steps: list[dict[str, Any]], **kw: Any) -> Workflow:
    return new_workflow(name, kw.pop("description", ""), steps, utc_now(), tenant_id="t", **kw)


def test_a_definition_is_compared_without_its_ids_times_and_version() -> None:
    one = _made("w", [{"name": "a", **ECHO}])
    two = _made("w", [{"name": "a", **ECHO, "retry": {"max_attempts": 3}}])
    assert one.workflow_id != two.workflow_id and one.steps[0].step_id != two.steps[0].step_id
    assert same_definition(one, two)
    for other in (
        _made("w", [{"name": "a", **ECHO}], description="now described"),
        _made("w", [{"name": "a", **ECHO}], input_schema={"type": "object"}),
        _made("w", [{"name": "a", **ECHO}], max_parallel_steps=2),
        _made("w", [{"name": "a", **NAP}]),
        _made("w", [{"name": "a", **ECHO}, {"name": "b", **ECHO}]),
    ):
        assert not same_definition(one, other)


def test_the_next_version_keeps_the_workflow_and_the_ids_of_steps_by_name() -> None:
    current = _made("w", [{"name": "a", **ECHO}, {"name": "b", **ECHO}])
    proposed = _made("w", [{"name": "b", **NAP}, {"name": "c", **ECHO}])
    later = utc_now()
    made = next_version(current, proposed, later)
    assert (made.workflow_id, made.name, made.tenant_id, made.created_at) == (
        current.workflow_id,
        current.name,
        current.tenant_id,
        current.created_at,
    )
    assert (made.version, made.updated_at) == (2, later)
    assert [s.step_id for s in made.steps] == [current.steps[1].step_id, proposed.steps[1].step_id]
    assert same_definition(made, proposed)
