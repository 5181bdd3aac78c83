"""What a token may do depends on who signed it: each service's key signs only what that
service needs, and a runner token bound to one tenant takes and reports only that tenant's
steps (issue 14, finding 5)."""

from __future__ import annotations

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import step_queue_service_pb2_grpc as sq_grpc
from discovery.engine.v1 import step_report_service_pb2 as sr
from discovery.engine.v1 import step_report_service_pb2_grpc as sr_grpc
from discovery.engine.v1 import workflow_service_pb2 as ws
from discovery.engine.v1 import workflow_service_pb2_grpc as ws_grpc

from services.auth import ADMIN, CLIENT, RUNNER, WATCHER
from services.grpc_auth import BearerToken, bearer_interceptors
from tests.stack import Client, Stack, error_info, signed_by, token

HANDLER = "scoped"


def _channel(stack: Stack, bearer: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        stack.client.target, interceptors=bearer_interceptors(BearerToken(bearer))
    )


async def _complete(runner: grpc.aio.Channel, task: sq.StepTask) -> None:
    await sr_grpc.StepReportServiceStub(runner).CompleteStep(
        sr.CompleteStepRequest(
            execution_id=task.execution_id,
            step_name=task.step_name,
            attempt_token=task.attempt_token,
            success=True,
        ),
        timeout=5,
    )


@pytest.mark.parametrize(
    ("signer", "role", "tenant"),
    [
        ("gateway", ADMIN, "default"),  # a compromised gateway
        ("gateway", CLIENT, "acme"),
        ("pioneer", ADMIN, "default"),  # a compromised pioneer, after a hostile PDF
        ("engine", CLIENT, "default"),
        ("runner-acme", RUNNER, "default"),  # a runner key of one tenant, for another
    ],
)
async def test_a_services_key_cannot_sign_beyond_its_grants(
    stack: Stack, signer: str, role: str, tenant: str
) -> None:
    async with _channel(stack, signed_by(signer, role, tenant)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ws_grpc.WorkflowServiceStub(channel).ListWorkflows(
                ws.ListWorkflowsRequest(), timeout=5
            )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    reason, _, _ = error_info(refused.value)
    assert reason == "KEY_NOT_ALLOWED"
    assert f"may not sign {role!r} tokens for tenant {tenant!r}" in (refused.value.details() or "")


async def test_service_keys_sign_what_their_services_need(stack: Stack) -> None:
    workflow = await stack.client.create_workflow("watched", {"name": "s", "handler": "echo"})
    started = await stack.client.start(workflow.workflow_id, {})
    watch = signed_by("gateway", WATCHER, "default", execution_id=started.execution_id)
    watcher = Client(stack.client.target, token=watch)
    try:
        assert (await watcher.get(started.execution_id)).execution_id == started.execution_id
    finally:
        await watcher.close()
    async with _channel(stack, signed_by("pioneer", RUNNER, "*")) as channel:
        polled = await sq_grpc.StepQueueServiceStub(channel).PollStepAttempts(
            sq.PollStepAttemptsRequest(runner_id="p", handlers=["nothing"], max_attempts=1),
            timeout=5,
        )
    assert list(polled.tasks) == []


async def test_a_runner_of_one_tenant_takes_and_reports_only_that_tenants_steps(
    stack: Stack,
) -> None:
    acme_runner = _channel(stack, signed_by("runner-acme", RUNNER, "acme"))
    any_runner = _channel(stack, token(RUNNER, "*"))
    acme_admin = Client(stack.client.target, token=token(ADMIN, "acme"))
    try:
        acme_queue = sq_grpc.StepQueueServiceStub(acme_runner)
        any_queue = sq_grpc.StepQueueServiceStub(any_runner)

        def poll(wait: float) -> sq.PollStepAttemptsRequest:
            return sq.PollStepAttemptsRequest(
                runner_id="r", handlers=[HANDLER], max_attempts=10, wait_seconds=wait
            )

        # The engine takes a workflow only with handlers some runner has offered.
        await acme_queue.PollStepAttempts(poll(0.01), timeout=5)
        step = {"name": "only", "handler": HANDLER}
        ours = await acme_admin.create_workflow("acme's", step)
        theirs = await stack.client.create_workflow("default's", step)
        mine = await acme_admin.start(ours.workflow_id, {})
        other = await stack.client.start(theirs.workflow_id, {})

        taken = await acme_queue.PollStepAttempts(poll(2), timeout=10)
        assert [t.execution_id for t in taken.tasks] == [mine.execution_id]
        again = await acme_queue.PollStepAttempts(poll(0.3), timeout=10)
        assert list(again.tasks) == [], "tenant default's attempt went to acme's runner"

        others = await any_queue.PollStepAttempts(poll(2), timeout=10)
        assert [t.execution_id for t in others.tasks] == [other.execution_id]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _complete(acme_runner, others.tasks[0])
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(refused.value)[0] == "EXECUTION_NOT_FOUND"

        await _complete(acme_runner, taken.tasks[0])
        final = await acme_admin.wait_terminal(mine.execution_id, 20)
        assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    finally:
        await acme_admin.close()
        await acme_runner.close()
        await any_runner.close()
