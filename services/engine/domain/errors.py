"""The engine's error tree. Every error a client can see derives from DiscoveryError.

    DiscoveryError
    ├── InvalidArgument        a bad field, named
    │   └── InputSchemaViolation   an input that does not match its workflow's input_schema
    ├── NotFound
    │   ├── WorkflowNotFound
    │   │   └── WorkflowVersionNotFound
    │   ├── ExecutionNotFound
    │   ├── ScheduleNotFound
    │   └── BlobNotFound
    ├── AlreadyExists
    │   ├── IdempotencyConflict
    │   └── WorkflowNameTaken  another definition has the name in the tenant
    ├── FailedPrecondition
    │   ├── StaleAttempt       a report from an attempt that is not the current one
    │   ├── AlreadyTerminal
    │   ├── NotWaiting
    │   └── NotRetryable       a retry of an execution that did not fail or was not cancelled
    ├── ResourceExhausted
    │   ├── WatcherTooSlow
    │   ├── RateLimited        a principal going faster than its rate
    │   └── QuotaExceeded      a tenant (or a shared pool) holding all it may hold
    └── Unavailable
        ├── StoreUnavailable
        ├── PioneerUnavailable
        └── NotOwner           another engine replica holds the execution (internal: a
            ├── Fenced             call is forwarded to the holder, never answered with it)
            └── HeldElsewhere

Each carries a stable `reason` (sent as google.rpc.ErrorInfo.reason) and optional metadata.
"""

from __future__ import annotations


class DiscoveryError(Exception):
    reason = "DISCOVERY_ERROR"

    def __init__(self, message: str, *, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata or {}


class InvalidArgument(DiscoveryError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", metadata={"field": field})
        self.field = field
        self.description = message
        # Every bad field, each (field, description): one, unless a subclass names more.
        self.violations: list[tuple[str, str]] = [(field, message)]


class InputSchemaViolation(InvalidArgument):
    reason = "INPUT_SCHEMA_VIOLATION"

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        field, description = violations[0]
        super().__init__(field, description)
        more = len(violations) - 1
        self.message = "the input does not match the workflow's input_schema: " + (
            f"{field}: {description}" + (f" (and {more} more)" if more else "")
        )
        self.args = (self.message,)
        self.metadata["violations"] = str(len(violations))
        self.violations = list(violations)


class NotFound(DiscoveryError):
    reason = "NOT_FOUND"


class WorkflowNotFound(NotFound):
    reason = "WORKFLOW_NOT_FOUND"

    def __init__(self, workflow_id: str) -> None:
        super().__init__(
            f"workflow {workflow_id!r} not found", metadata={"workflow_id": workflow_id}
        )


class WorkflowVersionNotFound(WorkflowNotFound):
    reason = "WORKFLOW_VERSION_NOT_FOUND"

    def __init__(self, workflow_id: str, version: int) -> None:
        super().__init__(workflow_id)
        self.message = f"workflow {workflow_id!r} has no version {version}"
        self.args = (self.message,)
        self.metadata["version"] = str(version)


class ExecutionNotFound(NotFound):
    reason = "EXECUTION_NOT_FOUND"

    def __init__(self, execution_id: str) -> None:
        super().__init__(
            f"execution {execution_id!r} not found", metadata={"execution_id": execution_id}
        )


class ScheduleNotFound(NotFound):
    reason = "SCHEDULE_NOT_FOUND"

    def __init__(self, schedule_id: str) -> None:
        super().__init__(
            f"schedule {schedule_id!r} not found", metadata={"schedule_id": schedule_id}
        )


class BlobNotFound(NotFound):
    reason = "BLOB_NOT_FOUND"


class AlreadyExists(DiscoveryError):
    reason = "ALREADY_EXISTS"


class IdempotencyConflict(AlreadyExists):
    reason = "IDEMPOTENCY_CONFLICT"


class WorkflowNameTaken(AlreadyExists):
    """A create under a name the tenant's workflow `workflow_id` has, with another
    definition: names are unique per tenant, and a definition changes by an update."""

    reason = "WORKFLOW_NAME_TAKEN"

    def __init__(self, name: str, workflow_id: str) -> None:
        super().__init__(
            f"a workflow named {name!r} exists already ({workflow_id}) with another"
            f" definition; UpdateWorkflow (PUT /workflows/{workflow_id}) changes it",
            metadata={"name": name, "workflow_id": workflow_id},
        )


class FailedPrecondition(DiscoveryError):
    reason = "FAILED_PRECONDITION"


class StaleAttempt(FailedPrecondition):
    reason = "STALE_ATTEMPT"


class AlreadyTerminal(FailedPrecondition):
    reason = "EXECUTION_TERMINAL"


class NotWaiting(FailedPrecondition):
    reason = "EXECUTION_NOT_WAITING"


class NotRetryable(FailedPrecondition):
    reason = "EXECUTION_NOT_RETRYABLE"


class ResourceExhausted(DiscoveryError):
    reason = "RESOURCE_EXHAUSTED"


class EventLimitReached(ResourceExhausted):
    """The execution logged as many progress reports as one execution may: a runner should
    not retry, and the step goes on (its heartbeats and completion are still taken)."""

    reason = "EVENT_LIMIT_REACHED"


class WatcherTooSlow(ResourceExhausted):
    reason = "WATCHER_TOO_SLOW"


class RateLimited(ResourceExhausted):
    reason = "RATE_LIMITED"

    def __init__(self, what: str, retry_after: float) -> None:
        super().__init__(
            f"{what}; retry in {retry_after:.2f} s",
            metadata={"retry_after_seconds": f"{retry_after:.3f}"},
        )


class QuotaExceeded(ResourceExhausted):
    """`quota` names what is full (services/engine/quotas.py); `subject` whose it is
    (`tenant:<name>`, or the shared pool's name), as google.rpc.QuotaFailure says it."""

    reason = "QUOTA_EXCEEDED"

    def __init__(
        self, quota: str, subject: str, message: str, *, limit: int, retry_after: float = 1.0
    ) -> None:
        metadata = {
            "quota": quota,
            "limit": str(limit),
            "retry_after_seconds": f"{retry_after:.3f}",
        }
        if subject.startswith("tenant:"):
            metadata["tenant"] = subject.removeprefix("tenant:")
        super().__init__(message, metadata=metadata)
        self.quota = quota
        self.subject = subject
        self.limit = limit


class Unavailable(DiscoveryError):
    reason = "UNAVAILABLE"


class StoreUnavailable(Unavailable):
    reason = "STORE_UNAVAILABLE"


class PioneerUnavailable(Unavailable):
    reason = "PIONEER_UNAVAILABLE"


class NotOwner(Unavailable):
    reason = "NOT_OWNER"


class Fenced(NotOwner):
    """Another engine fenced this one's lease: it may write nothing it decided under it."""

    reason = "FENCED"


class HeldElsewhere(NotOwner):
    """Another engine, alive, holds the execution: the call goes to it (rpc/forward.py)."""

    reason = "HELD_ELSEWHERE"

    def __init__(self, execution_id: str, address: str) -> None:
        super().__init__(
            f"execution {execution_id} is held by the engine at {address}",
            metadata={"execution_id": execution_id},
        )
        self.execution_id = execution_id
        self.address = address
