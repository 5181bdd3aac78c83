"""One table from domain errors to gRPC status codes, and the interceptor that applies it.

Every non-OK status carries google.rpc.ErrorInfo with a stable reason; INVALID_ARGUMENT also
carries google.rpc.BadRequest naming the field (every field, for an input that does not match
its workflow's input_schema), and a quota refusal google.rpc.QuotaFailure naming the quota.
An unexpected exception is logged with a correlation id and answered as INTERNAL without
internals: UNKNOWN never reaches a client.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_interceptor.server import AsyncServerInterceptor
from grpc_status import rpc_status

from services.auth import AuthError
from services.engine.domain import errors as e
from services.grpc_auth import CODES as AUTH_CODES
from services.grpc_auth import auth_status

log = logging.getLogger(__name__)

DOMAIN = "discovery.engine"

CODES: dict[type[e.DiscoveryError], grpc.StatusCode] = {
    e.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    e.NotFound: grpc.StatusCode.NOT_FOUND,
    e.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    e.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    e.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def code_for(error: e.DiscoveryError) -> grpc.StatusCode:
    for kind in type(error).__mro__:
        if kind in CODES:
            return CODES[kind]
    return grpc.StatusCode.INTERNAL


def status_for(error: Exception) -> status_pb2.Status:
    if isinstance(error, AuthError):  # a watch outliving its token
        return auth_status(error, DOMAIN)
    if not isinstance(error, e.DiscoveryError):
        correlation = uuid.uuid4().hex[:12]
        log.error("unexpected error [%s]", correlation, exc_info=error)
        error = e.DiscoveryError(f"internal error (correlation id {correlation})")
        code = grpc.StatusCode.INTERNAL
        reason = "INTERNAL"
    else:
        code = code_for(error)
        reason = error.reason
    return _status_of(error, code, reason)


def code_and_reason(error: Exception) -> tuple[grpc.StatusCode, str]:
    """What `status_for` answers `error` with: its code and ErrorInfo reason."""
    if isinstance(error, AuthError):
        return AUTH_CODES.get(type(error), grpc.StatusCode.UNAUTHENTICATED), error.reason
    if not isinstance(error, e.DiscoveryError):
        return grpc.StatusCode.INTERNAL, "INTERNAL"
    return code_for(error), error.reason


def _status_of(error: e.DiscoveryError, code: grpc.StatusCode, reason: str) -> status_pb2.Status:
    details = [error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=error.metadata)]
    if isinstance(error, e.InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=field, description=text)
                    for field, text in error.violations
                ]
            )
        )
    if isinstance(error, e.QuotaExceeded):
        violation = error_details_pb2.QuotaFailure.Violation(
            subject=error.subject,
            description=error.message,
            quota_id=error.quota,
            quota_value=error.limit,
        )
        details.append(error_details_pb2.QuotaFailure(violations=[violation]))
    return _status(code, error.message, details)


def _status(code: grpc.StatusCode, message: str, details: list[Any]) -> status_pb2.Status:
    packed = []
    for detail in details:
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=packed)


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: Exception) -> NoReturn:
    status = rpc_status.to_status(status_for(error))
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("abort returned")  # pragma: no cover


class ErrorInterceptor(AsyncServerInterceptor):
    def __init__(self, on_error: Callable[[str, str], None] | None = None) -> None:
        """`on_error(code, reason)` for every call it answers with an error (metrics)."""
        self._on_error = on_error

    async def _abort(self, context: grpc.aio.ServicerContext[Any, Any], error: Exception) -> None:
        if self._on_error is not None:
            code, reason = code_and_reason(error)
            self._on_error(code.name, reason)
        await abort(context, error)

    async def intercept(
        self,
        method: Callable[..., Any],
        request_or_iterator: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method_name: str,
    ) -> Any:
        try:
            response = method(request_or_iterator, context)
            if hasattr(response, "__aiter__"):
                return self._stream(response, context)
            return await response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await self._abort(context, exc)

    async def _stream(
        self, responses: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            async for response in responses:
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await self._abort(context, exc)
