"""Who may do what on the engine: every method closed without a token, each role to its own
methods, each tenant to its own executions, a watch token to its one execution."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import execution_service_pb2_grpc as es_grpc
from discovery.engine.v1 import step_report_service_pb2 as sr
from discovery.engine.v1 import workflow_service_pb2 as ws
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status

from services.auth import ADMIN, CLIENT, ENGINE, RUNNER, WATCHER, TokenAuthority
from services.engine.rpc.auth import PERMISSIONS
from services.engine.rpc.server import SERVICE_NAMES
from services.grpc_auth import HEALTH, REFLECTION, BearerToken, bearer_interceptors
from services.token_keys import AuthKeys, SigningKey
from tests.stack import AUTH_KEYS, Client, Stack, token

SLEEP = {"handler": "sleep", "heartbeat_timeout_seconds": 5}
SERVED = (
    *SERVICE_NAMES,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name,
)


def served_methods() -> list[MethodDescriptor]:
    pool = descriptor_pool.Default()
    return [m for name in SERVED for m in pool.FindServiceByName(name).methods]


def path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


async def call_raw(channel: grpc.aio.Channel, method: MethodDescriptor) -> grpc.StatusCode:
    """Calls `method` with an empty request, whatever its shape; the status it ends with."""
    empty = b""
    identity: Any = lambda raw: raw  # noqa: E731  # bytes in, bytes out
    try:
        if method.client_streaming:
            requests = iter([empty])
            if method.server_streaming:
                call: Any = channel.stream_stream(path(method), identity, identity)(requests)
                async for _ in call:
                    pass
            else:
                await channel.stream_unary(path(method), identity, identity)(requests, timeout=5)
        elif method.server_streaming:
            async for _ in channel.unary_stream(path(method), identity, identity)(empty, timeout=5):
                pass
        else:
            await channel.unary_unary(path(method), identity, identity)(empty, timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_every_served_method_has_a_decision() -> None:
    """A method added to a proto is closed (default deny); this says someone must decide."""
    decided = set(PERMISSIONS) | HEALTH
    served = {path(m) for m in served_methods()}
    assert served - decided == set()
    assert set(PERMISSIONS) - served == set(), "a permission for a method nobody serves"
    assert REFLECTION in served


async def test_without_a_token_every_method_but_health_is_unauthenticated(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.client.target) as anonymous:
        for method in served_methods():
            code = await call_raw(anonymous, method)
            if path(method) in HEALTH:
                # Check answers; Watch streams on until the call's deadline.
                assert code in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED)
            else:
                assert code == grpc.StatusCode.UNAUTHENTICATED, path(method)


@pytest.mark.parametrize(
    "bad",
    [
        "Bearer not-a-jwt",
        "Basic dXNlcjpwYXNz",
        "Bearer " + token(ttl_seconds=-120),  # expired, past the leeway
        # Signed with another deployment's key.
        "Bearer "
        + TokenAuthority(AuthKeys((), SigningKey.of(Ed25519PrivateKey.generate()))).mint(
            subject="mallory", role=ADMIN, tenant="default", ttl_seconds=60
        ),
        # HS256 under our key's id, as the old scheme signed: the algorithm is never the
        # token's to choose.
        "Bearer "
        + jwt.encode(
            {"sub": "m", "role": "admin", "tenant": "default", "exp": 2**40, "jti": "j"},
            "x" * 32,
            algorithm="HS256",
            headers={"kid": AUTH_KEYS.trusted[0].kid},
        ),
        # `alg: none`: never accepted, whatever the token says.
        "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
        "eyJzdWIiOiJtIiwicm9sZSI6ImFkbWluIiwidGVuYW50IjoiZGVmYXVsdCJ9.",
    ],
)
async def test_a_bad_token_is_unauthenticated_and_says_why(stack: Stack, bad: str) -> None:
    async with grpc.aio.insecure_channel(stack.client.target) as channel:
        stub = channel.unary_unary(
            "/discovery.engine.v1.WorkflowService/ListWorkflows",
            ws.ListWorkflowsRequest.SerializeToString,
            ws.ListWorkflowsResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub(ws.ListWorkflowsRequest(), metadata=(("authorization", bad),), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Traceback" not in (refused.value.details() or "")
    status = rpc_status.from_call(refused.value)
    assert status is not None and status.details, "an ErrorInfo with the reason"


@pytest.fixture
async def as_role(stack: Stack) -> AsyncIterator[dict[str, Client]]:
    clients = {role: Client(stack.client.target, token(role)) for role in (CLIENT, RUNNER, ENGINE)}
    try:
        yield clients
    finally:
        for client in clients.values():
            await client.close()


async def test_each_role_is_held_to_its_own_methods(
    stack: Stack, as_role: dict[str, Client]
) -> None:
    workflow = await stack.client.create_workflow("roles", {"name": "nap", **SLEEP})
    client, runner, engine = as_role[CLIENT], as_role[RUNNER], as_role[ENGINE]

    async def code_of(call: Any) -> grpc.StatusCode:
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    denied = grpc.StatusCode.PERMISSION_DENIED
    # A client drives executions but defines no workflows and reports no steps.
    started = await client.start(workflow.workflow_id, {"seconds": 5})
    assert (await client.get(started.execution_id)).execution_id == started.execution_id
    assert await code_of(client.create_workflow("nope", {"name": "a", **SLEEP})) == denied
    report = sr.ReportStepProgressRequest(
        execution_id=started.execution_id, step_name="nap", attempt_token="whatever"
    )
    assert await code_of(client.executions.GetExecution(es.GetExecutionRequest())) != denied
    client_reports = Client(stack.client.target, token(CLIENT))
    try:
        # The Client class sends reports with a runner token; a client's own token is refused.
        stub = client_reports.channel.unary_unary(
            "/discovery.engine.v1.StepReportService/ReportStepProgress",
            sr.ReportStepProgressRequest.SerializeToString,
            sr.ReportStepProgressResponse.FromString,
        )
        assert await code_of(stub(report, timeout=5)) == denied
    finally:
        await client_reports.close()
    # A runner reports steps and nothing else.
    assert await code_of(runner.start(workflow.workflow_id, {})) == denied
    assert await code_of(runner.get(started.execution_id)) == denied
    assert await code_of(runner.reports.ReportStepProgress(report, timeout=5)) == (
        grpc.StatusCode.FAILED_PRECONDITION  # let in, then refused for its attempt token
    )
    # The engine's own role is for calling pioneer, not for the engine's API.
    assert await code_of(engine.get(started.execution_id)) == denied
    await stack.client.executions.CancelExecution(
        es.CancelExecutionRequest(execution_id=started.execution_id), timeout=5
    )


async def _refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    return refused.value.code(), refused.value.details() or ""


async def test_another_tenants_execution_looks_exactly_like_a_missing_one(stack: Stack) -> None:
    workflow = await stack.client.create_workflow("tenant a's", {"name": "nap", **SLEEP})
    mine = await stack.client.start(workflow.workflow_id, {"seconds": 5}, request_id="k-1")
    other = Client(stack.client.target, token(CLIENT, tenant="tenant-b"))
    missing = "00000000-0000-4000-8000-000000000000"
    try:
        for execution_id in (mine.execution_id, missing):
            for call in (
                other.get(execution_id),
                other.executions.ListExecutionSteps(
                    es.ListExecutionStepsRequest(execution_id=execution_id), timeout=5
                ),
                other.executions.CancelExecution(
                    es.CancelExecutionRequest(execution_id=execution_id), timeout=5
                ),
                other.executions.AdvanceExecution(
                    es.AdvanceExecutionRequest(execution_id=execution_id), timeout=5
                ),
                other.events(execution_id),
            ):
                code, details = await _refusal(call)
                assert code == grpc.StatusCode.NOT_FOUND
                assert details == f"execution {execution_id!r} not found"
        # Its workflows are not theirs either, and the lists show only their own.
        code, _ = await _refusal(other.start(workflow.workflow_id, {}))
        assert code == grpc.StatusCode.NOT_FOUND
        listed = await other.executions.ListExecutions(es.ListExecutionsRequest(), timeout=5)
        assert mine.execution_id not in {e.execution_id for e in listed.executions}
        workflows = await other.workflows.ListWorkflows(ws.ListWorkflowsRequest(), timeout=5)
        assert workflow.workflow_id not in {w.workflow_id for w in workflows.workflows}
        # An idempotency key is the tenant's own: the same key elsewhere is another request.
        admin_b = Client(stack.client.target, token(ADMIN, tenant="tenant-b"))
        try:
            theirs_wf = await admin_b.create_workflow("tenant b's", {"name": "nap", **SLEEP})
            again = await admin_b.start(theirs_wf.workflow_id, {"seconds": 0}, request_id="k-1")
            assert again.execution_id != mine.execution_id
        finally:
            await admin_b.close()
        # And the execution is untouched by all of it.
        assert (await stack.client.get(mine.execution_id)).status != 0
    finally:
        await other.close()
        await stack.client.executions.CancelExecution(
            es.CancelExecutionRequest(execution_id=mine.execution_id), timeout=5
        )


async def test_a_watch_token_sees_its_execution_and_nothing_else(stack: Stack) -> None:
    workflow = await stack.client.create_workflow("watched", {"name": "nap", **SLEEP})
    response = await stack.client.executions.StartExecution(
        es.StartExecutionRequest(workflow_id=workflow.workflow_id), timeout=5
    )
    watched = response.execution.execution_id
    neighbour = (await stack.client.start(workflow.workflow_id, {})).execution_id
    watcher = Client(stack.client.target, response.watch_token)
    try:
        assert (await watcher.get(watched)).execution_id == watched
        events = await watcher.events(watched)
        assert events[-1].seq == (await stack.client.get(watched)).last_seq
        code, _ = await _refusal(watcher.get(neighbour))
        assert code == grpc.StatusCode.NOT_FOUND
        code, _ = await _refusal(
            watcher.executions.CancelExecution(
                es.CancelExecutionRequest(execution_id=watched), timeout=5
            )
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        code, _ = await _refusal(watcher.start(workflow.workflow_id, {}))
        assert code == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await watcher.close()


async def test_a_watch_ends_when_its_token_does(stack: Stack) -> None:
    workflow = await stack.client.create_workflow("long", {"name": "nap", **SLEEP})
    started = await stack.client.start(workflow.workflow_id, {"seconds": 30})
    short = token(WATCHER, ttl_seconds=2, execution_id=started.execution_id)
    channel = grpc.aio.insecure_channel(
        stack.client.target, interceptors=bearer_interceptors(BearerToken(short))
    )
    try:
        stream = es_grpc.ExecutionServiceStub(channel).WatchExecution(
            es.WatchExecutionRequest(execution_id=started.execution_id), timeout=60
        )
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async with asyncio.timeout(30):
                async for _ in stream:
                    pass
        assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "after_seq=" in (ended.value.details() or "")
    finally:
        await channel.close()
        await stack.client.executions.CancelExecution(
            es.CancelExecutionRequest(execution_id=started.execution_id), timeout=5
        )
