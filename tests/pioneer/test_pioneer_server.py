"""Pioneer's gRPC surface: refusals with explicit codes, handler list, health, reflection."""

from __future__ import annotations

import grpc
import pytest
from discovery.pioneer.v1 import step_runner_service_pb2 as runner_pb2
from discovery.pioneer.v1 import step_runner_service_pb2_grpc as runner_grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from services.auth import CLIENT, RUNNER
from services.pioneer.server import SERVICE_NAME
from tests.pioneer.fake_engine import FakeEngine
from tests.pioneer.harness import MakePioneer, Pioneer
from tests.stack import authenticated

pytestmark = pytest.mark.timeout(15)


def _error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    [packed] = [d for d in status.details if d.Is(info.DESCRIPTOR)]
    packed.Unpack(info)
    return info


async def test_an_unknown_handler_is_not_found_and_named(pioneer: Pioneer) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await pioneer.start("no_such_handler")

    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no_such_handler" in (raised.value.details() or "")
    assert _error_info(raised.value).reason == "UNKNOWN_HANDLER"


async def test_a_request_without_token_is_invalid_and_names_the_field(pioneer: Pioneer) -> None:
    request = runner_pb2.StartStepRequest(
        execution_id="e", step_name="echo", handler="echo", attempt=1
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await pioneer.stub.StartStep(request, timeout=5)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(raised.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    [packed] = [d for d in status.details if d.Is(bad_request.DESCRIPTOR)]
    packed.Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["attempt_token"]


async def test_a_step_over_the_cap_is_refused_as_resource_exhausted(
    make_pioneer: MakePioneer, engine: FakeEngine
) -> None:
    pioneer = await make_pioneer(max_concurrent_steps=1)
    await pioneer.start("sleep", {"seconds": 30})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await pioneer.start("echo", {"echo": 1})

    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _error_info(raised.value).reason == "RUNNER_FULL"


async def test_list_handlers_shows_the_built_in_steps(pioneer: Pioneer) -> None:
    reply = await pioneer.stub.ListHandlers(runner_pb2.ListHandlersRequest(), timeout=5)
    handlers = {handler.name: handler for handler in reply.handlers}

    assert {"sleep", "fail", "echo"} <= set(handlers)
    assert list(handlers["sleep"].input_keys) == ["seconds"]
    assert handlers["fail"].description


async def test_health_says_serving(pioneer: Pioneer) -> None:
    health = health_pb2_grpc.HealthStub(pioneer.channel)
    for service in ("", SERVICE_NAME):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_services(pioneer: Pioneer) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(pioneer.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for reply in reflection.ServerReflectionInfo(iter([request]), timeout=5):
        names = {service.name for service in reply.list_services_response.service}
        break

    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


@pytest.mark.parametrize(
    ("role", "code"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        (RUNNER, grpc.StatusCode.PERMISSION_DENIED),
        (CLIENT, grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_only_the_engine_hands_out_steps(
    pioneer: Pioneer, role: str | None, code: grpc.StatusCode
) -> None:
    interceptors = authenticated(role) if role is not None else None
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{pioneer.port}", interceptors=interceptors
    ) as channel:
        stub = runner_grpc.StepRunnerServiceStub(channel)
        request = runner_pb2.StartStepRequest(
            execution_id="e", step_name="echo", handler="echo", attempt=1, attempt_token="t"
        )
        for call in (
            stub.StartStep(request, timeout=5),
            stub.CancelStep(runner_pb2.CancelStepRequest(attempt_token="t"), timeout=5),
            stub.ListHandlers(runner_pb2.ListHandlersRequest(), timeout=5),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code() == code
    assert pioneer.runner.running_count == 0, "nothing was started"
