"""Per-tenant quotas (issue 14, finding 2): one tenant holding what it may hold of the engine
leaves the other tenants and the step runners working; each refusal is RESOURCE_EXHAUSTED
naming its quota (google.rpc ErrorInfo and QuotaFailure), and a refused start or blob write
stores nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import step_report_service_pb2 as sr
from discovery.engine.v1 import workflow_service_pb2 as ws
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from pymongo import AsyncMongoClient

from tests.stack import Client, Stack, error_info, running_attempt_token, start_stack, token

T = TypeVar("T")

Stream: TypeAlias = "grpc.aio.UnaryStreamCall[es.WatchExecutionRequest, es.WatchExecutionResponse]"


def quota_of(exc: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    """The quota a refusal names, and its ErrorInfo metadata; checks the QuotaFailure too."""
    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (exc.code(), exc.details())
    reason, metadata, _ = error_info(exc)
    assert reason == "QUOTA_EXCEEDED", reason
    status = rpc_status.from_call(exc)
    assert status is not None
    failures = []
    for detail in status.details:
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            failure = error_details_pb2.QuotaFailure()
            detail.Unpack(failure)
            failures.extend(failure.violations)
    assert [v.quota_id for v in failures] == [metadata["quota"]]
    return metadata["quota"], metadata


async def watch_held(client: Client, execution_id: str) -> Stream:
    """A watch stream that holds its call: its first message (the snapshot) has come."""
    stream: Stream = client.executions.WatchExecution(
        es.WatchExecutionRequest(execution_id=execution_id), timeout=60
    )
    await stream.read()
    return stream


async def refused_watch(client: Client, execution_id: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await watch_held(client, execution_id)
    return refused.value


@pytest.fixture
async def tight_stack(mongo_server: str, database: str) -> AsyncIterator[Stack]:
    # Small pools, the global cap above their sum (5 + 8 + 2 < 20).
    stack = await start_stack(
        mongo_server,
        database,
        max_concurrent_rpcs=20,
        tenant_max_long_calls=3,
        client_max_calls=5,
        runner_max_calls=8,
        health_max_calls=2,
    )
    try:
        yield stack
    finally:
        await stack.stop()


async def test_a_tenant_holding_its_streams_stops_neither_other_tenants_nor_runners(
    tight_stack: Stack,
) -> None:
    abuser = Client(tight_stack.client.target, token(tenant="abuser"))
    good = Client(tight_stack.client.target, token(tenant="good"))
    third = Client(tight_stack.client.target, token(tenant="third"))
    held: list[Stream] = []
    try:
        waiting = await abuser.create_workflow("held", {"name": "e", "handler": "echo"})
        parked = await abuser.start(waiting.workflow_id, {}, manual=True)
        # The abuser holds its three long calls; the fourth, and a sync ExecuteWorkflow (a
        # long call too), are refused naming the tenant's quota.
        held += [await watch_held(abuser, parked.execution_id) for _ in range(3)]
        quota, metadata = quota_of(await refused_watch(abuser, parked.execution_id))
        assert (quota, metadata["tenant"], metadata["limit"]) == (
            "tenant_long_calls",
            "abuser",
            "3",
        )
        with pytest.raises(grpc.aio.AioRpcError) as sync:
            await abuser.executions.ExecuteWorkflow(
                es.ExecuteWorkflowRequest(workflow_id=waiting.workflow_id, wait_seconds=1),
                timeout=10,
            )
        assert quota_of(sync.value)[0] == "tenant_long_calls"
        # Its unary calls have a budget of their own.
        assert (await abuser.get(parked.execution_id)).execution_id == parked.execution_id

        # Another tenant runs a workflow, and follows it live.
        steps = await good.create_workflow(
            "steps",
            *(
                {"name": f"s{i}", "handler": "sleep", "heartbeat_timeout_seconds": 5}
                for i in (1, 2)
            ),
        )
        run = await good.start(steps.workflow_id, {"seconds": 0.3})
        following = await watch_held(good, run.execution_id)
        held.append(following)
        # A third tenant takes the last client call: the clients' pool is now full ...
        theirs = await third.create_workflow("t", {"name": "e", "handler": "echo"})
        other = await third.start(theirs.workflow_id, {}, manual=True)
        held.append(await watch_held(third, other.execution_id))
        assert quota_of(await refused_watch(third, other.execution_id))[0] == "client_calls"
        with pytest.raises(grpc.aio.AioRpcError) as full:
            await good.get(run.execution_id)
        assert quota_of(full.value)[0] == "client_calls"
        # ... and the runner still polls, heartbeats and completes both steps of the run.
        last = None
        async for item in following:
            last = item.event.type
        assert last == ex_pb.EVENT_TYPE_WORKFLOW_COMPLETED
        # The finished stream gave its call back.
        assert (await good.get(run.execution_id)).status == ex_pb.EXECUTION_STATUS_COMPLETED
    finally:
        for stream in held:
            stream.cancel()
        for client in (abuser, good, third):
            await client.close()
    # Cancelled streams give their calls back too.
    again = Client(tight_stack.client.target, token(tenant="abuser"))
    try:
        for attempt in range(100):
            try:
                streams = [await watch_held(again, parked.execution_id) for _ in range(3)]
                break
            except grpc.aio.AioRpcError:  # a cancellation not yet seen by the server
                if attempt == 99:
                    raise
                await asyncio.sleep(0.05)
        for stream in streams:
            stream.cancel()
    finally:
        await again.close()


async def test_health_checks_without_credentials_share_a_small_budget(tight_stack: Stack) -> None:
    async with grpc.aio.insecure_channel(tight_stack.client.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(2)]
        try:
            for watch in watches:
                await watch.read()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert quota_of(refused.value)[0] == "health_calls"
            # Clients are not in that budget.
            listed = await tight_stack.client.workflows.ListWorkflows(
                ws.ListWorkflowsRequest(), timeout=5
            )
            assert list(listed.workflows) == []
        finally:
            for watch in watches:
                watch.cancel()


async def test_a_start_over_the_running_executions_quota_is_refused(
    mongo_server: str, database: str
) -> None:
    stack = await start_stack(mongo_server, database, tenant_max_running_executions=2)
    other = Client(stack.client.target, token(tenant="other"))
    try:
        c = stack.client
        workflow = await c.create_workflow("manual", {"name": "e", "handler": "echo"})
        first = await c.start(workflow.workflow_id, {}, manual=True, request_id="one")
        await c.start(workflow.workflow_id, {}, manual=True)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await c.start(workflow.workflow_id, {}, manual=True)
        quota, metadata = quota_of(refused.value)
        assert (quota, metadata["tenant"], metadata["limit"]) == (
            "running_executions",
            "default",
            "2",
        )
        assert refused.value.details() == ("tenant 'default' has 2 running executions (limit 2)"), (
            refused.value.details()
        )
        listed = await c.executions.ListExecutions(es.ListExecutionsRequest(), timeout=10)
        assert len(listed.executions) == 2, "nothing was stored"
        # Parked while they wait (no engine holds their lease), they still count.
        db: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server)
        try:
            async with asyncio.timeout(20):
                while await db[database]["executions"].count_documents({"parked": True}) < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        finally:
            await db.close()
        await asyncio.sleep(1.5)  # past REFRESH_SECONDS: the refusal below counts afresh
        with pytest.raises(grpc.aio.AioRpcError) as still:
            await c.start(workflow.workflow_id, {}, manual=True)
        assert quota_of(still.value)[0] == "running_executions"
        # A retried start of one that exists is still answered with it.
        again = await c.start(workflow.workflow_id, {}, manual=True, request_id="one")
        assert again.execution_id == first.execution_id
        # Another tenant has its own count.
        theirs = await other.create_workflow("theirs", {"name": "e", "handler": "echo"})
        assert (await other.start(theirs.workflow_id, {}, manual=True)).execution_id
        # An execution that ends makes room.
        await c.executions.CancelExecution(
            es.CancelExecutionRequest(execution_id=first.execution_id), timeout=10
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                assert (await c.start(workflow.workflow_id, {}, manual=True)).execution_id
                break
            except grpc.aio.AioRpcError as exc:
                assert quota_of(exc)[0] == "running_executions"
                assert time.monotonic() < deadline, "the ended execution still counts"
                await asyncio.sleep(0.1)
    finally:
        await other.close()
        await stack.stop()


async def test_a_retry_over_the_running_executions_quota_is_refused(
    mongo_server: str, database: str
) -> None:
    stack = await start_stack(mongo_server, database, tenant_max_running_executions=1)
    try:
        c = stack.client
        workflow = await c.create_workflow("waits", {"name": "e", "handler": "echo"})
        first = await c.start(workflow.workflow_id, {}, manual=True)
        await _cancel(c, first.execution_id)
        second = await _when_admitted(lambda: c.start(workflow.workflow_id, {}, manual=True))

        # The second one waits (and counts): no room to run the first one again.
        retry = es.RetryExecutionRequest(execution_id=first.execution_id, request_id="r")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await c.executions.RetryExecution(retry, timeout=10)
        assert quota_of(refused.value)[0] == "running_executions"
        assert (await c.get(first.execution_id)).status == ex_pb.EXECUTION_STATUS_CANCELLED

        await _cancel(c, second.execution_id)
        retried = await _when_admitted(lambda: c.executions.RetryExecution(retry, timeout=10))
        assert retried.execution.status == ex_pb.EXECUTION_STATUS_WAITING
        # It counts now, over the quota or not: the same retry asked again is answered.
        again = await c.executions.RetryExecution(retry, timeout=10)
        assert (again.execution.execution_id, again.execution.retries) == (
            first.execution_id,
            1,
        )
    finally:
        await stack.stop()


async def _cancel(c: Client, execution_id: str) -> None:
    await c.executions.CancelExecution(
        es.CancelExecutionRequest(execution_id=execution_id), timeout=10
    )


async def _when_admitted(call: Callable[[], Awaitable[T]]) -> T:
    """The call, once the tenant's count has the execution that ended."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            assert quota_of(exc)[0] == "running_executions"
            assert time.monotonic() < deadline, "an ended execution still counts"
            await asyncio.sleep(0.1)


async def test_a_start_or_blob_write_over_the_stored_bytes_quota_is_refused(
    mongo_server: str, database: str
) -> None:
    stack = await start_stack(mongo_server, database, tenant_max_stored_bytes=300_000)
    mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_server)
    try:
        c = stack.client
        napping = await c.create_workflow(
            "nap", {"name": "nap", "handler": "sleep", "heartbeat_timeout_seconds": 5}
        )
        run = await c.start(napping.workflow_id, {"seconds": 30})
        manual = await c.create_workflow("doc", {"name": "e", "handler": "echo"})
        await c.start(manual.workflow_id, {"base64": "A" * 200_000}, manual=True)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await c.start(manual.workflow_id, {"base64": "B" * 150_000}, manual=True)
        quota, metadata = quota_of(refused.value)
        assert (quota, metadata["tenant"], metadata["limit"]) == (
            "stored_bytes",
            "default",
            "300000",
        )
        listed = await c.executions.ListExecutions(es.ListExecutionsRequest(), timeout=10)
        assert len(listed.executions) == 2, "nothing was stored"
        blobs = mongo[stack.database]["blobs"]
        assert await blobs.count_documents({}) == 1, "the refused input left no blob"

        # A step's blob write counts against its execution's tenant.
        attempt = await running_attempt_token(stack, run.execution_id)

        async def write(size: int) -> sr.WriteBlobResponse:
            header = sr.WriteBlobHeader(execution_id=run.execution_id, attempt_token=attempt)
            requests = [sr.WriteBlobRequest(header=header)]
            requests += [sr.WriteBlobRequest(chunk=b"x" * 50_000) for _ in range(size // 50_000)]
            reply: sr.WriteBlobResponse = await c.reports.WriteBlob(iter(requests), timeout=10)
            return reply

        with pytest.raises(grpc.aio.AioRpcError) as too_big:
            await write(150_000)
        assert quota_of(too_big.value)[0] == "stored_bytes"
        assert await blobs.count_documents({}) == 1, "the refused blob was not stored"
        assert (await write(50_000)).size_bytes == 50_000
    finally:
        await mongo.close()
        await stack.stop()
