"""Who may call which engine method (services/grpc_auth.py applies it to every call).

What a principal may see inside a permitted method (its tenant, its one execution) is the
servicers' check.
"""

from __future__ import annotations

from services.auth import ADMIN, CLIENT, ENGINE, RUNNER, WATCHER
from services.grpc_auth import REFLECTION

_WORKFLOWS = "/discovery.engine.v1.WorkflowService/"
_EXECUTIONS = "/discovery.engine.v1.ExecutionService/"
_REPORTS = "/discovery.engine.v1.StepReportService/"
_QUEUE = "/discovery.engine.v1.StepQueueService/"
_TOKENS = "/discovery.engine.v1.TokenService/"
_SCHEDULES = "/discovery.engine.v1.ScheduleService/"

_DRIVERS = frozenset({CLIENT, ADMIN})
_READERS = frozenset({CLIENT, ADMIN, WATCHER})
_RUNNERS = frozenset({RUNNER})

PERMISSIONS: dict[str, frozenset[str]] = {
    _WORKFLOWS + "CreateWorkflow": frozenset({ADMIN}),
    _WORKFLOWS + "GetWorkflow": _DRIVERS,
    _WORKFLOWS + "ListWorkflows": _DRIVERS,
    _WORKFLOWS + "UpdateWorkflow": frozenset({ADMIN}),
    _WORKFLOWS + "ListWorkflowVersions": _DRIVERS,
    _EXECUTIONS + "StartExecution": _DRIVERS,
    _EXECUTIONS + "ExecuteWorkflow": _DRIVERS,
    _EXECUTIONS + "ListExecutions": _DRIVERS,
    _EXECUTIONS + "CancelExecution": _DRIVERS,
    _EXECUTIONS + "AdvanceExecution": _DRIVERS,
    _EXECUTIONS + "RetryExecution": _DRIVERS,
    _EXECUTIONS + "GetExecution": _READERS,
    _EXECUTIONS + "ListExecutionSteps": _READERS,
    _EXECUTIONS + "WatchExecution": _READERS,
    _REPORTS + "ReportStepProgress": _RUNNERS,
    _REPORTS + "CompleteStep": _RUNNERS,
    _REPORTS + "ReadBlob": _RUNNERS,
    _REPORTS + "WriteBlob": _RUNNERS,
    _QUEUE + "PollStepAttempts": _RUNNERS,
    _QUEUE + "GetStepQueue": _DRIVERS,
    # An engine taking, for a runner that polled it, an attempt another engine holds.
    _QUEUE + "TakeStepAttempt": frozenset({ENGINE}),
    # A schedule starts executions later in its creator's tenant, as StartExecution does
    # now: whoever may start and cancel runs may schedule them (each start still counts
    # against the tenant's quotas), and stop a schedule another member of the tenant made.
    _SCHEDULES + "CreateSchedule": _DRIVERS,
    _SCHEDULES + "GetSchedule": _DRIVERS,
    _SCHEDULES + "ListSchedules": _DRIVERS,
    _SCHEDULES + "PauseSchedule": _DRIVERS,
    _SCHEDULES + "ResumeSchedule": _DRIVERS,
    _SCHEDULES + "DeleteSchedule": _DRIVERS,
    _TOKENS + "RevokeToken": frozenset({ADMIN}),
    # The gateway, which verifies its streams' tokens itself, asks with its runner token.
    _TOKENS + "ListRevokedTokens": frozenset({ADMIN, RUNNER}),
    REFLECTION: frozenset({CLIENT, ADMIN, RUNNER}),
    # Check and Watch are open (services/grpc_auth.py); the list of every service is not.
    "/grpc.health.v1.Health/List": frozenset({ADMIN}),
}
