"""What runners report about the attempts they took: progress (also their heartbeat),
completion, and the blobs a step reads and writes. A report names its attempt by the attempt
token; one of an attempt that is not the execution's running one is refused (StaleAttempt)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from services.engine.actors import Actors, RunnerSettings
from services.engine.domain import events as ev
from services.engine.domain import execution as ex
from services.engine.domain.errors import (
    EventLimitReached,
    ExecutionNotFound,
    InvalidArgument,
    NotFound,
    StaleAttempt,
)
from services.engine.domain.payload import check_payload, check_progress
from services.engine.routing import Commands
from services.engine.store.repository import BlobRef, ExecutionStore


class Reports:
    def __init__(
        self, actors: Actors, commands: Commands, store: ExecutionStore, settings: RunnerSettings
    ) -> None:
        self._actors = actors
        self._commands = commands
        self.store = store
        self._settings = settings

    async def report_progress(
        self,
        execution_id: str,
        step_name: str,
        token: str,
        reports: list[dict[str, Any]],
        *,
        tenant: str | None = None,
    ) -> bool:
        """Logs the progress reports, in order (none: only notes the heartbeat); True when
        the step should stop. A runner of one `tenant` reports only that tenant's steps."""
        self._actors.heard(execution_id, token)
        for report in reports:
            check_progress(report, self._settings.max_custom_data_bytes)
        cancelled = False

        def produce(state: ex.ExecutionState, now: datetime) -> list[ev.NewEvent]:
            nonlocal cancelled
            attempt = _reporting_attempt(state, step_name, token, tenant)
            if attempt.status == ex.ATTEMPT_CANCELLED:
                cancelled = True
                return []
            if attempt.status != ex.ATTEMPT_RUNNING or not state.is_current(attempt):
                raise StaleAttempt(
                    f"attempt {attempt.attempt} of {step_name!r} is {attempt.status}",
                    metadata={"execution_id": execution_id, "step": step_name},
                )
            attempt.heartbeat_at = now  # a refused report is still a sign of life
            events = _progress_events(attempt, reports)
            limit = self._settings.max_progress_events
            if events and state.progress_events + len(events) > limit:
                raise EventLimitReached(
                    f"execution {execution_id} has logged {state.progress_events} progress"
                    f" reports, the most one execution may ({limit}); its steps go on,"
                    " their further progress is not logged",
                    metadata={"execution_id": execution_id, "limit": str(limit)},
                )
            return events

        await self._commands.command(execution_id, produce, tenant)
        return cancelled

    async def complete_step(
        self,
        execution_id: str,
        step_name: str,
        token: str,
        success: bool,
        result: dict[str, Any],
        error: dict[str, Any] | None,
        *,
        progress: list[dict[str, Any]] | None = None,
        tenant: str | None = None,
    ) -> None:
        """Logs the attempt's end, after the progress it reported last (in the same commit)."""
        self._actors.heard(execution_id, token)
        check_payload(result, "result", self._settings.max_result_bytes)
        for report in progress or ():
            check_progress(report, self._settings.max_custom_data_bytes)

        def produce(state: ex.ExecutionState, now: datetime) -> list[ev.NewEvent]:
            attempt = _reporting_attempt(state, step_name, token, tenant)
            if attempt.status != ex.ATTEMPT_RUNNING:
                if attempt.same_outcome(success, result):
                    return []  # a retried report of what is already logged
                raise StaleAttempt(
                    f"attempt {attempt.attempt} of {step_name!r} already ended {attempt.status}",
                    metadata={"execution_id": execution_id, "step": step_name},
                )
            if not state.is_current(attempt):
                raise StaleAttempt(f"attempt {attempt.attempt} of {step_name!r} is not current")
            # A completion is never refused: what its progress would log past the limit goes.
            room = max(self._settings.max_progress_events - state.progress_events, 0)
            events = _progress_events(attempt, progress or [])[:room]
            if success:
                end = ev.step_finished(attempt, ex.ATTEMPT_SUCCESS, output=result, now=now)
                return [*events, end]
            failure = {"reason": "step_failed", "type": "", "message": "", **(error or {})}
            # A runner that enforced the step's timeout itself says so; it is the same outcome
            # as the engine's own timeout.
            status = ex.ATTEMPT_TIMED_OUT if failure["reason"] == "timeout" else ex.ATTEMPT_FAILED
            end = ev.step_finished(attempt, status, output=result, error=failure, now=now)
            return [*events, end]

        await self._commands.command(execution_id, produce, tenant)

    async def _running_attempt(self, execution_id: str, token: str, tenant: str | None) -> None:
        # The attempt token is what binds the runner to this execution.
        state = await self.store.load_execution(execution_id) if execution_id else None
        if state is None or tenant not in (None, state.workflow.tenant_id):
            raise ExecutionNotFound(execution_id)
        attempt = state.attempt_by_token(token) if token else None
        if attempt is None or attempt.status != ex.ATTEMPT_RUNNING:
            raise StaleAttempt("the attempt token is not a running attempt's")

    async def read_blob(
        self, execution_id: str, token: str, blob_id: str, *, tenant: str | None = None
    ) -> AsyncIterator[bytes]:
        await self._running_attempt(execution_id, token, tenant)
        return await self.store.read_blob(execution_id, blob_id)

    async def write_blob(
        self,
        execution_id: str,
        token: str,
        chunks: AsyncIterator[bytes],
        *,
        tenant: str | None = None,
    ) -> BlobRef:
        await self._running_attempt(execution_id, token, tenant)
        parts: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > self._settings.max_blob_bytes:
                raise InvalidArgument(
                    "chunk", f"a blob may hold at most {self._settings.max_blob_bytes} bytes"
                )
            parts.append(chunk)
        return await self.store.put_blob(execution_id, b"".join(parts))


def _progress_events(attempt: ex.Attempt, reports: list[dict[str, Any]]) -> list[ev.NewEvent]:
    """The reports as events of the attempt, leaving out any that would take its percentage
    back (reports can arrive out of order when retried, and progress never goes back) and
    any that repeats the one before it (a retried report says nothing new)."""
    events = []
    previous = attempt.last_progress
    latest = (previous or {}).get("percentage", 0.0)
    for report in reports:
        percentage = report.get("percentage", 0.0)
        if percentage < latest or report == previous:
            continue
        latest = percentage
        previous = report
        events.append(ev.step_progress(attempt, report))
    return events


def _reporting_attempt(
    state: ex.ExecutionState, step_name: str, token: str, tenant: str | None
) -> ex.Attempt:
    if tenant not in (None, state.workflow.tenant_id):
        # A runner of another tenant: the execution is as missing as to its clients.
        raise ExecutionNotFound(state.execution_id)
    if state.workflow.step_named(step_name) is None:
        raise NotFound(
            f"execution {state.execution_id} has no step {step_name!r}",
            metadata={"step": step_name},
        )
    attempt = state.attempt_by_token(token) if token else None
    if attempt is None or attempt.step_name != step_name:
        raise StaleAttempt(
            f"the token is not an attempt of {step_name!r}",
            metadata={"execution_id": state.execution_id, "step": step_name},
        )
    return attempt
