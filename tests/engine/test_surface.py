"""What an operator sees of the engine: reflection, health, estimates."""

from __future__ import annotations

import asyncio

import grpc
from discovery.engine.v1 import execution_pb2 as ex_pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.stack import Stack


async def test_reflection_lists_the_contract_services(stack: Stack) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(stack.client.channel)

    async def ask() -> list[str]:
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        async for response in responses:
            return [s.name for s in response.list_services_response.service]
        return []

    names = await ask()
    for service in (
        "discovery.engine.v1.WorkflowService",
        "discovery.engine.v1.ExecutionService",
        "discovery.engine.v1.StepReportService",
        "grpc.health.v1.Health",
    ):
        assert service in names
    health = health_pb2_grpc.HealthStub(stack.client.channel)
    reply = await health.Check(
        health_pb2.HealthCheckRequest(service="discovery.engine.v1.ExecutionService")
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    pioneer = grpc.aio.insecure_channel(f"127.0.0.1:{stack.pioneer.port}")
    try:
        reply = await health_pb2_grpc.HealthStub(pioneer).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await pioneer.close()


async def test_estimate_uses_reported_eta_and_past_durations(stack: Stack) -> None:
    c = stack.client
    step = {"handler": "sleep", "heartbeat_timeout_seconds": 5}
    workflow = await c.create_workflow("eta", {"name": "a", **step}, {"name": "b", **step})
    first = await c.start(workflow.workflow_id, {"seconds": 0.4})
    # Nothing known yet about step b: no estimate rather than a wrong one.
    assert not first.progress.HasField("estimated_remaining_seconds")
    await c.wait_terminal(first.execution_id)
    second = await c.start(workflow.workflow_id, {"seconds": 0.4})
    for _ in range(50):
        running = await c.get(second.execution_id)
        if running.steps_history and running.steps_history[-1].HasField("last_progress"):
            break
        await asyncio.sleep(0.05)
    assert running.status == ex_pb.EXECUTION_STATUS_RUNNING
    eta = running.progress.estimated_remaining_seconds
    # a's own ETA (< 0.4 s) plus b's past duration (about 0.4 s).
    assert 0.3 < eta < 1.2, eta
    assert 0 < running.progress.percentage < 50
