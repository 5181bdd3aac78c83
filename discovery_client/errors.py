"""What a failed call to the engine raises: one exception, read from the gRPC status and the
google.rpc details the engine attaches (ErrorInfo: a stable reason and metadata; BadRequest:
the fields at fault). Callers never see a grpc exception.

    EngineError           the engine refused (code, reason, metadata, violations)
    └── EngineUnreachable UNAVAILABLE / DEADLINE_EXCEEDED with no reason: nobody answered
    ConfigError           a setting (environment variable, argument) that cannot be used
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class ConfigError(ValueError):
    """A setting holds a value the client (or a service) cannot use; the message names it."""


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class EngineError(Exception):
    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
        target: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # The engine's ErrorInfo reason (EXECUTION_NOT_FOUND, WATCHER_TOO_SLOW…); the code's
        # name when it gave none.
        self.reason = reason or code.name
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)
        self.target = target

    @classmethod
    def from_rpc(cls, error: grpc.RpcError, target: str = "") -> EngineError:
        """Reads the status a failed call ended with, its details included."""
        code: grpc.StatusCode = error.code()
        message: str = error.details() or code.name
        reason = ""
        metadata: dict[str, str] = {}
        violations: list[FieldViolation] = []
        try:
            status = rpc_status.from_call(error)
        except ValueError:  # details that disagree with the status: keep the plain status
            status = None
        for detail in status.details if status is not None else ():
            info = error_details_pb2.ErrorInfo()
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(info):
                reason = info.reason
                metadata = dict(info.metadata)
            elif detail.Unpack(bad):
                violations.extend(
                    FieldViolation(v.field, v.description) for v in bad.field_violations
                )
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and not reason:
            # No ErrorInfo: gRPC itself gave up, the engine never answered.
            return EngineUnreachable(code, target, message)
        return cls(
            code, message, reason=reason, metadata=metadata, violations=violations, target=target
        )

    def describe(self) -> str:
        """One line for a person: the message, the fields it does not name yet, the reason."""
        text = self.message
        for violation in self.violations:
            if violation.field not in text:
                text += f"; {violation.field}: {violation.description}"
        return f"{text} [{self.reason}]"


class EngineUnreachable(EngineError):
    def __init__(self, code: grpc.StatusCode, target: str, detail: str) -> None:
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            message = f"the engine at {target} did not answer in time"
        else:
            message = f"cannot reach the engine at {target} ({detail})"
        super().__init__(code, message, target=target)
        # What gRPC said (addresses, the socket error): for logs, not for a public answer.
        self.detail = detail

    def describe(self) -> str:
        return self.message
