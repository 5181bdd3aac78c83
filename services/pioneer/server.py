"""Pioneer's gRPC server: the thin `StepRunnerService` servicer, health and reflection.

Errors leave with an explicit code from one table, a `google.rpc.ErrorInfo` carrying the
error's stable reason and, for a bad request, a `google.rpc.BadRequest` naming the field.
Nothing is ever answered as UNKNOWN: an unexpected exception is logged and answered INTERNAL.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from discovery.pioneer.v1 import step_runner_service_pb2 as runner_pb2
from discovery.pioneer.v1 import step_runner_service_pb2_grpc as runner_grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from services import tracing
from services.auth import ADMIN, ENGINE, TokenAuthority
from services.grpc_auth import REFLECTION, AuthInterceptor
from services.pioneer.config import Settings
from services.pioneer.errors import (
    InvalidAttempt,
    PioneerError,
    RunnerFull,
    UnknownHandler,
)
from services.pioneer.registry import StepRegistry
from services.pioneer.reporter import MESSAGE_SIZE_OPTIONS
from services.pioneer.runner import StepRunner
from services.tls import add_port

log = logging.getLogger(__name__)

SERVICE_NAME: str = runner_pb2.DESCRIPTOR.services_by_name["StepRunnerService"].full_name
ERROR_DOMAIN = "pioneer.discovery"

STATUS_BY_ERROR: dict[type[PioneerError], grpc.StatusCode] = {
    UnknownHandler: grpc.StatusCode.NOT_FOUND,
    RunnerFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    InvalidAttempt: grpc.StatusCode.INVALID_ARGUMENT,
}

_SERVICE = f"/{SERVICE_NAME}/"
# Only the engine hands out work (services/grpc_auth.py: denied by default).
PERMISSIONS: dict[str, frozenset[str]] = {
    _SERVICE + "StartStep": frozenset({ENGINE}),
    _SERVICE + "CancelStep": frozenset({ENGINE}),
    _SERVICE + "ListHandlers": frozenset({ENGINE, ADMIN}),
    REFLECTION: frozenset({ENGINE, ADMIN}),
}

Request = TypeVar("Request")
Response = TypeVar("Response")
Method = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]


def _answering_errors(method: Method[Request, Response]) -> Method[Request, Response]:
    @functools.wraps(method)
    async def wrapper(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await method(self, request, context)
        except PioneerError as error:
            await _abort(context, error)
        except Exception:
            log.exception("unexpected error", extra={"rpc": method.__name__})
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            raise  # unreachable: abort raises; keeps type checkers sure of the flow

    return wrapper


async def _abort(context: grpc.aio.ServicerContext, error: PioneerError) -> NoReturn:
    code = STATUS_BY_ERROR.get(type(error), grpc.StatusCode.INTERNAL)
    status = status_pb2.Status(code=code.value[0], message=str(error))
    details: list[Any] = [error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)]
    if isinstance(error, InvalidAttempt):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=error.problem
        )
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    await context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returned")  # it raises; this keeps NoReturn honest


class StepRunnerServicer(runner_grpc.StepRunnerServiceServicer):
    def __init__(self, registry: StepRegistry, runner: StepRunner) -> None:
        self._registry = registry
        self._runner = runner

    @_answering_errors
    async def StartStep(
        self, request: runner_pb2.StartStepRequest, context: grpc.aio.ServicerContext
    ) -> runner_pb2.StartStepResponse:
        spec = self._registry.get(request.handler)
        if spec is None:
            raise UnknownHandler(request.handler)
        self._runner.accept(request, spec.function)
        return runner_pb2.StartStepResponse()

    @_answering_errors
    async def CancelStep(
        self, request: runner_pb2.CancelStepRequest, context: grpc.aio.ServicerContext
    ) -> runner_pb2.CancelStepResponse:
        self._runner.cancel(request.execution_id, request.step_name, request.attempt_token)
        return runner_pb2.CancelStepResponse()

    @_answering_errors
    async def ListHandlers(
        self, request: runner_pb2.ListHandlersRequest, context: grpc.aio.ServicerContext
    ) -> runner_pb2.ListHandlersResponse:
        return runner_pb2.ListHandlersResponse(
            handlers=[
                runner_pb2.Handler(
                    name=spec.name, description=spec.description, input_keys=spec.input_keys
                )
                for spec in self._registry.handlers()
            ]
        )


async def build_server(
    settings: Settings, registry: StepRegistry, runner: StepRunner
) -> tuple[grpc.aio.Server, int]:
    """A server bound to settings.host:settings.port (0: any free port), not yet started.

    Returns the server and the port it is bound to. The caller owns `runner` and closes it
    after `server.stop()`."""
    server = grpc.aio.server(
        options=MESSAGE_SIZE_OPTIONS,
        interceptors=[
            *tracing.grpc_server_interceptors("pioneer"),
            AuthInterceptor(TokenAuthority(settings.auth_keys), PERMISSIONS, domain=ERROR_DOMAIN),
        ],
    )
    servicer = StepRunnerServicer(registry, runner)
    runner_grpc.add_StepRunnerServiceServicer_to_server(servicer, server)

    health_servicer = health.aio.HealthServicer()
    for service in (health.OVERALL_HEALTH, SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    port: int = add_port(server, f"{host}:{settings.port}", settings.tls)
    return server, port
