"""Pioneer's exception tree: what a step, the runner and the server can raise.

```
PioneerError                 every error pioneer raises on purpose; carries a stable `reason`
├── NotInStep                an SDK call outside a running step, or for another step
├── StepCancelled            the engine cancelled the attempt; the step should stop
├── StaleAttempt             the engine refused the attempt's token: another attempt owns the step
├── EngineUnavailable        the engine did not answer within the retry budget
├── ReportRejected           the engine refused a report for another reason (e.g. INVALID_ARGUMENT)
├── WorkflowRejected         the engine refused a built-in workflow definition
├── StepFailure              raised by a step to fail on purpose
│   └── InvalidInput         the step's input can never succeed: reported as `invalid_input`
├── UnknownHandler           StartStep named a handler this pioneer does not have
├── RunnerFull               StartStep over max_concurrent_steps
└── InvalidAttempt           StartStep with a missing or malformed field
```

A bad environment variable raises services.envconfig.ConfigError, shared by every service.
"""

from __future__ import annotations


class PioneerError(Exception):
    """Base of pioneer's errors. `reason` is stable and machine-readable."""

    reason = "PIONEER_ERROR"


class NotInStep(PioneerError):
    reason = "NOT_IN_STEP"


class StepCancelled(PioneerError):
    reason = "CANCELLED"


class StaleAttempt(PioneerError):
    reason = "STALE_ATTEMPT"


class EngineUnavailable(PioneerError):
    reason = "ENGINE_UNAVAILABLE"


class ReportRejected(PioneerError):
    reason = "REPORT_REJECTED"


class WorkflowRejected(PioneerError):
    reason = "WORKFLOW_REJECTED"


class StepFailure(PioneerError):
    reason = "STEP_FAILED"
    # The `reason` of the StepError the runner reports when a step raises this.
    step_error_reason = "step_failed"


class InvalidInput(StepFailure):
    """The input is wrong (a corrupt or encrypted document, bad base64…): running the step
    again cannot help. The message is for the user who sent the input, so it says what to fix.
    """

    reason = "INVALID_INPUT"
    step_error_reason = "invalid_input"


class UnknownHandler(PioneerError):
    reason = "UNKNOWN_HANDLER"

    def __init__(self, handler: str) -> None:
        super().__init__(f"this pioneer has no handler named {handler!r}")
        self.handler = handler


class RunnerFull(PioneerError):
    reason = "RUNNER_FULL"


class InvalidAttempt(PioneerError):
    reason = "INVALID_ATTEMPT"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
