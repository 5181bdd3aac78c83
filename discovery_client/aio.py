"""The asynchronous client (grpc.aio): one channel, a typed method per engine call, a
deadline on each, and `watch`, which resumes by itself.

```python
from discovery_client import AsyncClient, Settings

async with AsyncClient(Settings.from_env()) as client:
    started = await client.start_execution(workflow_id, {"document": "…"}, request_id="r-1")
    async for item in client.watch(started.execution.execution_id, after_seq=0):
        print(item.seq, item.type)
```

Every failed call raises EngineError (errors.py). Reads, and starts that carry a request_id,
are retried by gRPC itself on UNAVAILABLE, three attempts at most (channel.py).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import grpc
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import execution_service_pb2_grpc as es_grpc
from discovery.engine.v1 import schedule_service_pb2 as ss
from discovery.engine.v1 import schedule_service_pb2_grpc as ss_grpc
from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import step_queue_service_pb2_grpc as sq_grpc
from discovery.engine.v1 import step_report_service_pb2 as sr
from discovery.engine.v1 import step_report_service_pb2_grpc as sr_grpc
from discovery.engine.v1 import token_service_pb2 as ts
from discovery.engine.v1 import token_service_pb2_grpc as ts_grpc
from discovery.engine.v1 import workflow_pb2 as wf_pb
from discovery.engine.v1 import workflow_service_pb2 as ws
from discovery.engine.v1 import workflow_service_pb2_grpc as ws_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from discovery_client import requests
from discovery_client.channel import aio_channel, channel_options
from discovery_client.credentials import Anonymous, BearerToken, Credentials
from discovery_client.errors import EngineError
from discovery_client.settings import Settings
from discovery_client.watch import (
    RETRY_BUDGET_SECONDS,
    SEGMENT_SECONDS,
    Gap,
    Item,
    Resumed,
    WatchState,
)

T = TypeVar("T")


class AsyncClient:
    def __init__(
        self,
        settings: Settings,
        *,
        options: Sequence[tuple[str, Any]] | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        """`options`: the channel's, when not channel_options(). `interceptors`: the
        channel's (OpenTelemetry's client interceptors carry a caller's trace to the engine:
        `opentelemetry.instrumentation.grpc.aio_client_interceptors()`)."""
        self.target = settings.target
        self.timeout = settings.timeout_seconds
        self._start_deadline = settings.start_deadline
        self._credentials: Credentials = (
            BearerToken(settings.token) if settings.token else Anonymous()
        )
        self._channel = aio_channel(
            settings.target,
            settings.tls,
            options=channel_options() if options is None else options,
            interceptors=interceptors,
        )
        self._executions = es_grpc.ExecutionServiceStub(self._channel)
        self._workflows = ws_grpc.WorkflowServiceStub(self._channel)
        self._reports = sr_grpc.StepReportServiceStub(self._channel)
        self._queue = sq_grpc.StepQueueServiceStub(self._channel)
        self._tokens = ts_grpc.TokenServiceStub(self._channel)
        self._schedules = ss_grpc.ScheduleServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def with_credentials(self, credentials: Credentials) -> AsyncClient:
        """This client, on the same channel, with every call carrying `credentials` (a
        gateway calls in the name of each of its callers)."""
        view = copy.copy(self)
        view._credentials = credentials
        return view

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any, **kw: Any) -> T:
        kw.setdefault("timeout", self.timeout)
        try:
            return await method(request, metadata=self._credentials.metadata(), **kw)
        except grpc.aio.AioRpcError as exc:
            raise EngineError.from_rpc(exc, self.target) from None

    # --- workflows -------------------------------------------------------------------

    async def create_workflow(self, workflow: wf_pb.Workflow) -> wf_pb.Workflow:
        request = ws.CreateWorkflowRequest(workflow=workflow)
        response: ws.CreateWorkflowResponse = await self._call(
            self._workflows.CreateWorkflow, request
        )
        return response.workflow

    async def get_workflow(self, workflow_id: str, *, version: int = 0) -> wf_pb.Workflow:
        """The current version, or `version`."""
        request = ws.GetWorkflowRequest(workflow_id=workflow_id, version=version)
        response: ws.GetWorkflowResponse = await self._call(self._workflows.GetWorkflow, request)
        return response.workflow

    async def update_workflow(
        self, workflow_id: str, workflow: wf_pb.Workflow
    ) -> ws.UpdateWorkflowResponse:
        """Makes `workflow` the workflow's next version unless it equals the current one;
        the response holds the current version after the call and says which (`changed`).
        Executions already started keep their version."""
        request = ws.UpdateWorkflowRequest(workflow_id=workflow_id, workflow=workflow)
        response: ws.UpdateWorkflowResponse = await self._call(
            self._workflows.UpdateWorkflow, request
        )
        return response

    async def workflow_versions(
        self, workflow_id: str, *, page_size: int = 100, page_token: str = ""
    ) -> ws.ListWorkflowVersionsResponse:
        """Every version of one workflow, newest first."""
        request = ws.ListWorkflowVersionsRequest(
            workflow_id=workflow_id, page_size=page_size, page_token=page_token
        )
        response: ws.ListWorkflowVersionsResponse = await self._call(
            self._workflows.ListWorkflowVersions, request
        )
        return response

    async def list_workflows(
        self, *, page_size: int = 100, page_token: str = "", name: str = ""
    ) -> ws.ListWorkflowsResponse:
        request = ws.ListWorkflowsRequest(page_size=page_size, page_token=page_token, name=name)
        response: ws.ListWorkflowsResponse = await self._call(
            self._workflows.ListWorkflows, request
        )
        return response

    # --- executions ------------------------------------------------------------------

    async def start_execution(
        self,
        workflow_id: str,
        document: Mapping[str, Any],
        *,
        manual: bool = False,
        request_id: str = "",
        priority: int = 0,
    ) -> es.StartExecutionResponse:
        """The execution and a watch token for it. `request_id` makes the start idempotent
        (and retried); `priority` 1 (first) to 5 (last) in the step queue, 0 the default."""
        request = requests.start(workflow_id, document, manual, request_id, priority)
        response: es.StartExecutionResponse = await self._call(
            self._executions.StartExecution,
            request,
            timeout=self._start_deadline,
        )
        return response

    async def execute_workflow(
        self,
        workflow_id: str,
        document: Mapping[str, Any],
        *,
        wait_seconds: float,
        manual: bool = False,
        request_id: str = "",
        priority: int = 0,
    ) -> es.ExecuteWorkflowResponse:
        """Starts and waits up to `wait_seconds` for the end (`finished` says whether)."""
        request = requests.execute(
            workflow_id, document, manual, request_id, wait_seconds, priority
        )
        response: es.ExecuteWorkflowResponse = await self._call(
            self._executions.ExecuteWorkflow,
            request,
            timeout=self._start_deadline + wait_seconds,
        )
        return response

    async def get_execution(self, execution_id: str) -> ex_pb.Execution:
        request = es.GetExecutionRequest(execution_id=execution_id)
        response: es.GetExecutionResponse = await self._call(self._executions.GetExecution, request)
        return response.execution

    async def list_executions(
        self,
        *,
        workflow_id: str = "",
        statuses: Sequence[ex_pb.ExecutionStatus] = (),
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        workflow_name_contains: str = "",
        page_size: int = 100,
        page_token: str = "",
    ) -> es.ListExecutionsResponse:
        """Newest first; every filter given applies (times are aware datetimes)."""
        request = requests.list_executions(
            workflow_id,
            statuses,
            created_after,
            created_before,
            workflow_name_contains,
            page_size,
            page_token,
        )
        response: es.ListExecutionsResponse = await self._call(
            self._executions.ListExecutions, request
        )
        return response

    async def list_steps(self, execution_id: str) -> list[es.ExecutionStep]:
        request = es.ListExecutionStepsRequest(execution_id=execution_id)
        response = await self._call(self._executions.ListExecutionSteps, request)
        return list(response.steps)

    async def cancel(self, execution_id: str, reason: str = "") -> ex_pb.Execution:
        request = es.CancelExecutionRequest(execution_id=execution_id, reason=reason)
        response: es.CancelExecutionResponse = await self._call(
            self._executions.CancelExecution, request
        )
        return response.execution

    async def advance(self, execution_id: str, data: Mapping[str, Any]) -> ex_pb.Execution:
        response: es.AdvanceExecutionResponse = await self._call(
            self._executions.AdvanceExecution, requests.advance(execution_id, data)
        )
        return response.execution

    async def retry(
        self, execution_id: str, *, from_step: str = "", request_id: str = ""
    ) -> ex_pb.Execution:
        """Runs a failed or cancelled execution again from its failed step (or `from_step`);
        the same `request_id` again retries it once."""
        response: es.RetryExecutionResponse = await self._call(
            self._executions.RetryExecution, requests.retry(execution_id, from_step, request_id)
        )
        return response.execution

    async def watch(
        self,
        execution_id: str,
        after_seq: int | None = None,
        *,
        on_resume: Callable[[Resumed], None] | None = None,
        segment_seconds: float = SEGMENT_SECONDS,
        retry_budget_seconds: float = RETRY_BUDGET_SECONDS,
    ) -> AsyncGenerator[Item, None]:
        """The execution's snapshot (when `after_seq` is None), then every event after it, up
        to the terminal one, each once and in order, across disconnects and engine restarts
        (watch.py). Ends at once when the execution had ended by `after_seq`."""
        state = WatchState(execution_id, after_seq, retry_budget_seconds)
        while True:
            call = self._executions.WatchExecution(
                state.request(), timeout=segment_seconds, metadata=self._credentials.metadata()
            )
            try:
                async for response in call:
                    item = state.accept(response)
                    if item is not None:
                        yield item
                    if state.ended:
                        return
                return  # the engine ends a stream only once the execution has ended
            except grpc.aio.AioRpcError as exc:
                resumed = state.after_error(EngineError.from_rpc(exc, self.target))
            except Gap:
                resumed = state.after_gap()
            finally:
                call.cancel()
            if on_resume is not None:
                on_resume(resumed)
            await asyncio.sleep(resumed.delay_seconds)

    # --- step reports (a runner's, with the attempt token it was given) ----------------

    async def report_progress(
        self,
        execution_id: str,
        step_name: str,
        attempt_token: str,
        progress: ex_pb.StepProgress | None,
    ) -> bool:
        """Whether the engine asks the step to stop (it was cancelled)."""
        request = requests.progress(execution_id, step_name, attempt_token, progress)
        response = await self._call(self._reports.ReportStepProgress, request)
        return bool(response.cancel_requested)

    async def complete_step(
        self,
        execution_id: str,
        step_name: str,
        attempt_token: str,
        *,
        success: bool,
        result: Mapping[str, Any] | None = None,
        error: ex_pb.StepError | None = None,
    ) -> None:
        request = requests.completion(
            execution_id, step_name, attempt_token, success, result, error
        )
        await self._call(self._reports.CompleteStep, request)

    async def read_blob(self, execution_id: str, attempt_token: str, blob_id: str) -> bytes:
        """A value of the step's input that was stored apart (a large document)."""
        request = sr.ReadBlobRequest(
            execution_id=execution_id, attempt_token=attempt_token, blob_id=blob_id
        )
        call = self._reports.ReadBlob(
            request, timeout=self.timeout, metadata=self._credentials.metadata()
        )
        try:
            return b"".join([response.chunk async for response in call])
        except grpc.aio.AioRpcError as exc:
            raise EngineError.from_rpc(exc, self.target) from None

    async def write_blob(
        self, execution_id: str, attempt_token: str, data: bytes
    ) -> sr.WriteBlobResponse:
        """Stores `data` apart, for a result to name by its blob_id."""
        parts = requests.blob_parts(execution_id, attempt_token, data)
        response: sr.WriteBlobResponse = await self._call(self._reports.WriteBlob, parts)
        return response

    # --- the step queue ----------------------------------------------------------------

    async def poll_step_attempts(
        self, runner_id: str, handlers: Sequence[str], max_attempts: int, wait_seconds: float
    ) -> list[sq.StepTask]:
        """A long poll for up to `max_attempts` ready attempts of `handlers`. Never retried:
        a retried poll could take attempts twice. Cancelling the awaiting task cancels the
        call at the engine."""
        request = requests.poll(runner_id, handlers, max_attempts, wait_seconds)
        response = await self._call(
            self._queue.PollStepAttempts,
            request,
            timeout=requests.poll_deadline(wait_seconds, self.timeout),
        )
        return list(response.tasks)

    async def get_step_queue(self) -> sq.GetStepQueueResponse:
        """Ready attempts by handler (the caller's tenant, every tenant) and the runners."""
        response: sq.GetStepQueueResponse = await self._call(
            self._queue.GetStepQueue, sq.GetStepQueueRequest()
        )
        return response

    # --- schedules ---------------------------------------------------------------------

    async def create_schedule(
        self,
        workflow_id: str,
        cron: str,
        *,
        timezone: str = "",
        input: Mapping[str, Any] | None = None,
        overlap: str = "",
        catchup_limit: int | None = None,
        priority: int = 0,
        paused: bool = False,
    ) -> ss.Schedule:
        """Runs the workflow at every time of `cron` (five fields) in `timezone` (IANA; ""
        is UTC) with `input`. `overlap`: "skip" (the default: nothing starts while the last
        run goes on) or "allow"; `catchup_limit`: how many times missed while no engine ran
        start when one comes back (None: 1); `priority` as a start's (0: the default)."""
        request = requests.create_schedule(
            workflow_id, cron, timezone, input, overlap, catchup_limit, priority, paused
        )
        response: ss.CreateScheduleResponse = await self._call(
            self._schedules.CreateSchedule, request
        )
        return response.schedule

    async def get_schedule(self, schedule_id: str) -> ss.Schedule:
        request = ss.GetScheduleRequest(schedule_id=schedule_id)
        response: ss.GetScheduleResponse = await self._call(self._schedules.GetSchedule, request)
        return response.schedule

    async def list_schedules(
        self, *, workflow_id: str = "", page_size: int = 100, page_token: str = ""
    ) -> ss.ListSchedulesResponse:
        """Oldest first; only `workflow_id`'s, when given."""
        request = ss.ListSchedulesRequest(
            workflow_id=workflow_id, page_size=page_size, page_token=page_token
        )
        response: ss.ListSchedulesResponse = await self._call(
            self._schedules.ListSchedules, request
        )
        return response

    async def pause_schedule(self, schedule_id: str) -> ss.Schedule:
        """Starts nothing until resumed; the times it passes meanwhile are skipped."""
        request = ss.PauseScheduleRequest(schedule_id=schedule_id)
        response: ss.PauseScheduleResponse = await self._call(
            self._schedules.PauseSchedule, request
        )
        return response.schedule

    async def resume_schedule(self, schedule_id: str) -> ss.Schedule:
        """Runs again from its first time after now."""
        request = ss.ResumeScheduleRequest(schedule_id=schedule_id)
        response: ss.ResumeScheduleResponse = await self._call(
            self._schedules.ResumeSchedule, request
        )
        return response.schedule

    async def delete_schedule(self, schedule_id: str) -> None:
        """The executions it started are kept."""
        await self._call(
            self._schedules.DeleteSchedule, ss.DeleteScheduleRequest(schedule_id=schedule_id)
        )

    # --- tokens ------------------------------------------------------------------------

    async def revoke_token(self, token_or_id: str) -> ts.RevokeTokenResponse:
        """Revokes a token (given whole, or by its id) before it expires."""
        response: ts.RevokeTokenResponse = await self._call(
            self._tokens.RevokeToken, requests.revoke(token_or_id)
        )
        return response

    async def list_revoked_tokens(self) -> list[str]:
        response = await self._call(self._tokens.ListRevokedTokens, ts.ListRevokedTokensRequest())
        return list(response.token_ids)

    # --- health ------------------------------------------------------------------------

    async def serving(self, deadline_seconds: float) -> bool:
        """Whether the engine answers its health check as SERVING within the deadline."""
        try:
            reply = await self._health.Check(
                health_pb2.HealthCheckRequest(), timeout=deadline_seconds
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
