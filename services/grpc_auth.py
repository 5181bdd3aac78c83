"""Token authentication for the gRPC servers (engine and pioneer): one interceptor, each
server with its own table of who may call which method.

Denied by default: a method missing from the table is refused to everyone, so a method added
to a proto stays closed until someone decides who may call it. The health check is open
(load balancers and orchestrators probe it without credentials).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_interceptor.server import AsyncServerInterceptor
from grpc_status import rpc_status

from discovery_client.credentials import BearerToken as BearerToken
from discovery_client.credentials import Credentials as Credentials
from services.auth import AuthError, PermissionDenied, Principal, TokenAuthority, Unauthenticated

HEALTH = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"

CODES: dict[type[AuthError], grpc.StatusCode] = {
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}


def principal(context: grpc.aio.ServicerContext[Any, Any], authority: TokenAuthority) -> Principal:
    """The caller, from its `authorization` metadata (verifying is a single HMAC)."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return authority.verify_bearer(str(value))
    return authority.verify_bearer(None)


def auth_status(error: AuthError, domain: str) -> status_pb2.Status:
    code = CODES.get(type(error), grpc.StatusCode.UNAUTHENTICATED)
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=domain))
    return status_pb2.Status(
        code=getattr(code_pb2, code.name), message=error.message, details=[info]
    )


class AuthInterceptor(AsyncServerInterceptor):
    """Authenticates every call but the health check and checks its role."""

    def __init__(
        self,
        authority: TokenAuthority,
        permissions: Mapping[str, frozenset[str]],
        *,
        domain: str,
    ) -> None:
        self._authority = authority
        self._permissions = permissions
        self._domain = domain

    async def intercept(
        self,
        method: Callable[..., Any],
        request_or_iterator: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        method_name: str,
    ) -> Any:
        if method_name not in HEALTH:
            try:
                caller = principal(context, self._authority)
                roles = self._permissions.get(method_name)
                if roles is None:
                    raise PermissionDenied(f"{method_name} is not open to any role")
                caller.require(roles, f"call {method_name.rsplit('/', 1)[-1]}")
            except AuthError as exc:
                status = rpc_status.to_status(auth_status(exc, self._domain))
                await context.abort(status.code, status.details, status.trailing_metadata)
        response = method(request_or_iterator, context)
        if hasattr(response, "__aiter__"):
            return response
        return await response


class _Bearer:
    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *self._credentials.metadata())
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _UnaryUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnary(_Bearer, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _StreamStream(_Bearer, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def bearer_interceptors(credentials: Credentials) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors that send `credentials` on every call of an aio channel (grpc.aio
    files an interceptor under one kind of call only, hence one per kind)."""
    return [
        _UnaryUnary(credentials),
        _UnaryStream(credentials),
        _StreamUnary(credentials),
        _StreamStream(credentials),
    ]
