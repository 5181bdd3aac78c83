"""Every error the gateway answers, the one table from gRPC codes to HTTP, and the middleware
that turns all of them into the legacy body `{"error": {"code", "message", "details"}}`.

    GatewayError                   status   code
    ├── BadRequest                 400      malformed JSON, duplicate keys, too deep, bad query
    ├── ValidationFailed           422      a field of a body or header, named in details.field
    ├── Unauthorized               401      a step report without X-Attempt-Token
    ├── Forbidden                  403      a WebSocket from an origin not allowed
    ├── NotFound                   404      an id that cannot exist, a path that does not
    ├── PayloadTooLarge            413      a body over the cap (before or while it is read)
    ├── UnsupportedMediaType       415      a content type or content encoding not accepted
    ├── UpgradeRequired            426      /ws without a WebSocket handshake
    ├── TooManyStreams             429      the live-stream caps
    ├── quotas.QuotaExceeded       429      a tenant's live-stream quota
    ├── ShuttingDown               503      a new live stream while the gateway stops
    └── EngineRefused              from HTTP_STATUS by gRPC code; code is the engine's
                                            google.rpc.ErrorInfo reason

The engine's ErrorInfo metadata and BadRequest field violations become `details`. An
unexpected exception is logged with a correlation id and answered 500 with that id only.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from aiohttp import web

from discovery_client import EngineError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The one table from gRPC status codes to HTTP statuses. The gateway sits in front of the
# engine, so the engine's own failures (INTERNAL, UNKNOWN, DATA_LOSS) are a bad gateway
# answer (502), and an engine that cannot be reached is 503: never a 500 from the engine.
HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    # A stale attempt token, a terminal execution, one that is not waiting: the request
    # conflicts with the execution's current state.
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 503,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 502,
    grpc.StatusCode.UNKNOWN: 502,
    grpc.StatusCode.DATA_LOSS: 502,
}
# Engine answers that are safe to retry: the client is told how soon.
RETRY_AFTER_SECONDS: Mapping[int, int] = {429: 1, 503: 1}


class GatewayError(Exception):
    status = 500
    code = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = dict(details or {})
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def response(self) -> web.Response:
        headers = dict(self.headers)
        retry = RETRY_AFTER_SECONDS.get(self.status)
        if retry is not None:
            headers.setdefault("Retry-After", str(retry))
        return web.json_response(self.body(), status=self.status, headers=headers)


class BadRequest(GatewayError):
    status = 400
    code = "BAD_REQUEST"


class ValidationFailed(GatewayError):
    status = 422
    code = "INVALID_ARGUMENT"

    def __init__(self, field: str, description: str, *, code: str | None = None) -> None:
        super().__init__(
            f"{field}: {description}",
            code=code,
            details={"field": field, "description": description},
        )
        self.field = field


class Unauthorized(GatewayError):
    status = 401
    code = "UNAUTHENTICATED"


class Forbidden(GatewayError):
    status = 403
    code = "PERMISSION_DENIED"


class NotFound(GatewayError):
    status = 404
    code = "NOT_FOUND"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the request body is larger than the {limit} bytes allowed",
            details={"max_bytes": limit},
        )


class UnsupportedMediaType(GatewayError):
    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


class UpgradeRequired(GatewayError):
    status = 426
    code = "UPGRADE_REQUIRED"


class TooManyStreams(GatewayError):
    status = 429
    code = "TOO_MANY_STREAMS"


class ShuttingDown(GatewayError):
    status = 503
    code = "SHUTTING_DOWN"


class EngineRefused(GatewayError):
    """The engine's refusal (discovery_client.EngineError), with its stable reason as the
    code and its status from HTTP_STATUS."""

    def __init__(
        self,
        grpc_code: grpc.StatusCode,
        message: str,
        *,
        reason: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=reason, details=details)
        self.grpc_code = grpc_code
        self.status = HTTP_STATUS.get(grpc_code, 502)

    @property
    def reason(self) -> str:
        return self.code

    @classmethod
    def of(cls, error: EngineError) -> EngineRefused:
        details: dict[str, Any] = dict(error.metadata)
        violations = [{"field": v.field, "description": v.description} for v in error.violations]
        if violations:
            details.update(violations[0])
        if len(violations) > 1:
            details["violations"] = violations
        status_code = HTTP_STATUS.get(error.code, 502)
        if status_code >= 500:
            # What a transport failure says (addresses, file names) is not for clients.
            message = _UPSTREAM_MESSAGES.get(error.code, "the engine failed to answer")
            log.warning(
                "engine call failed", extra={"code": error.code.name, "reason": error.reason}
            )
        else:
            message = error.message
        refused = cls(error.code, message, reason=error.reason, details=details)
        wait = details.get("retry_after_seconds")
        if status_code == 429 and wait is not None:
            # The engine said how soon (a rate, a quota): tell the client, in whole seconds.
            with contextlib.suppress(ValueError):
                refused.headers["Retry-After"] = str(max(1, math.ceil(float(wait))))
        return refused


_UPSTREAM_MESSAGES: Mapping[grpc.StatusCode, str] = {
    grpc.StatusCode.UNAVAILABLE: "the engine is unavailable; retry shortly",
    grpc.StatusCode.CANCELLED: "the engine call was cancelled; retry shortly",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the engine did not answer in time",
    grpc.StatusCode.UNIMPLEMENTED: "the engine does not offer this call",
}


def http_error(status: int, code: str, message: str, **headers: str) -> GatewayError:
    """An error with a status of its own, for the few answers outside the tree."""
    error = GatewayError(message, code=code, headers=headers)
    error.status = status
    return error


# aiohttp's own refusals (routing, methods) keep their status and headers (Allow) and get
# the legacy body; these are their codes.
_HTTP_CODES: Mapping[int, str] = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except EngineError as exc:
        return EngineRefused.of(exc).response()
    except GatewayError as exc:
        response = exc.response()
        if isinstance(exc, PayloadTooLarge | UnsupportedMediaType):
            # The rest of the body is not wanted: drop the connection after answering.
            response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow",)}
        code = _HTTP_CODES.get(exc.status, "HTTP_ERROR")
        return http_error(exc.status, code, exc.reason, **headers).response()
    except Exception:
        correlation = uuid.uuid4().hex[:12]
        log.exception(
            "unexpected error",
            extra={"correlation_id": correlation, "path": request.path, "method": request.method},
        )
        return GatewayError(
            f"internal error (correlation id {correlation})",
            details={"correlation_id": correlation},
        ).response()
