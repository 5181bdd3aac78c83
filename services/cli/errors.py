"""Every error the CLI reports, and the exit code each one ends the process with.

    CliError                 exit 2   a readable one-line message, never a traceback
    ├── UsageError                    a bad argument, file or JSON given on the command line
    └── EngineError                   the engine refused or could not be reached; carries the
        │                             gRPC code, the google.rpc.ErrorInfo reason and the
        │                             BadRequest field violations
        └── EngineUnreachable         UNAVAILABLE / DEADLINE_EXCEEDED: nobody answered

An execution that ends failed or cancelled is not an error of the CLI: `watch` reports it
and exits 1 (see __main__.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

EXIT_OK = 0
EXIT_EXECUTION_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def describe(self) -> str:
        return self.message


class UsageError(CliError):
    pass


class Interrupted(CliError):
    """Ctrl-C while following: the execution goes on; say how to pick it up again."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, execution_id: str, last_seq: int | None) -> None:
        resume = f" --after-seq {last_seq}" if last_seq is not None else ""
        super().__init__(
            f"stopped watching {execution_id}; it goes on. "
            f"Follow it again with: discovery watch {execution_id}{resume}"
        )


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class EngineError(CliError):
    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason or code.name
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)

    @classmethod
    def from_rpc(cls, error: grpc.RpcError, target: str) -> EngineError:
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
        return cls(code, message, reason=reason, metadata=metadata, violations=violations)

    def describe(self) -> str:
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
        super().__init__(code, message)
        self.target = target

    def describe(self) -> str:
        return self.message
