"""The gateway's client to the engine: one grpc.aio channel, typed calls, deadlines on all.

Every unary call has the configured deadline; a failed call comes back as `EngineError`
(errors.py), the boundary where gRPC statuses become typed exceptions. Reads are retried by
gRPC itself on UNAVAILABLE (service config below); starts are not, unless they carry an
idempotency key, which the engine then matches.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import execution_service_pb2_grpc as es_grpc
from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import step_queue_service_pb2_grpc as sq_grpc
from discovery.engine.v1 import step_report_service_pb2 as sr
from discovery.engine.v1 import step_report_service_pb2_grpc as sr_grpc
from discovery.engine.v1 import token_service_pb2 as ts
from discovery.engine.v1 import token_service_pb2_grpc as ts_grpc
from discovery.engine.v1 import workflow_pb2 as wf_pb
from discovery.engine.v1 import workflow_service_pb2 as ws
from discovery.engine.v1 import workflow_service_pb2_grpc as ws_grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services import engine_channel
from services.gateway.config import Settings
from services.gateway.errors import EngineError
from services.grpc_auth import Credentials
from services.tls import aio_channel

T = TypeVar("T")
# What the engine waits when a poll's wait_seconds is 0 (step_queue_service.proto).
DEFAULT_POLL_WAIT_SECONDS = 20.0
# A poll's deadline is its wait plus at least this much: the engine answers a second before
# the deadline, and the proto asks for "a few seconds longer" than the wait.
MIN_POLL_DEADLINE_MARGIN_SECONDS = 5.0


def channel_options(settings: Settings) -> list[tuple[str, Any]]:
    return engine_channel.channel_options(
        max_message_bytes=settings.engine_max_message_bytes, retried=engine_channel.IDEMPOTENT_READS
    )


def struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    if value:
        message.update(value)
    return message


class EngineClient:
    """Calls without credentials until `as_caller` gives some: each request's calls carry
    the token its caller sent, so the engine decides what that caller may do and see."""

    def __init__(self, settings: Settings) -> None:
        self._credentials: Credentials | None = None
        self._timeout = settings.rpc_timeout_seconds
        self._channel = aio_channel(
            settings.engine_target, settings.tls, options=channel_options(settings)
        )
        self._executions = es_grpc.ExecutionServiceStub(self._channel)
        self._workflows = ws_grpc.WorkflowServiceStub(self._channel)
        self._reports = sr_grpc.StepReportServiceStub(self._channel)
        self._queue = sq_grpc.StepQueueServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._tokens = ts_grpc.TokenServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    def as_caller(self, credentials: Credentials) -> EngineClient:
        """This client, on the same channel, with every call carrying `credentials`."""
        view = copy.copy(self)
        view._credentials = credentials
        return view

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return self._credentials.metadata() if self._credentials is not None else ()

    @staticmethod
    async def _call(call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            raise EngineError.from_rpc(exc) from None

    # --- executions ------------------------------------------------------------------

    async def start_execution(
        self,
        workflow_id: str,
        document: Mapping[str, Any],
        manual: bool,
        request_id: str,
        priority: int = 0,
    ) -> tuple[ex_pb.Execution, str]:
        """The execution and a watch token for it (see StartExecutionResponse). A priority
        of 0 takes the engine's default."""
        response: es.StartExecutionResponse = await self._call(
            self._executions.StartExecution(
                es.StartExecutionRequest(
                    workflow_id=workflow_id,
                    input=struct(document),
                    manual=manual,
                    request_id=request_id,
                    priority=priority,
                ),
                timeout=self._timeout,
                metadata=self._metadata,
            )
        )
        return response.execution, response.watch_token

    async def execute_workflow(
        self,
        workflow_id: str,
        document: Mapping[str, Any],
        manual: bool,
        request_id: str,
        wait_seconds: float,
        priority: int = 0,
    ) -> tuple[ex_pb.Execution, bool, str]:
        response: es.ExecuteWorkflowResponse = await self._call(
            self._executions.ExecuteWorkflow(
                es.ExecuteWorkflowRequest(
                    workflow_id=workflow_id,
                    input=struct(document),
                    manual=manual,
                    request_id=request_id,
                    wait_seconds=wait_seconds,
                    priority=priority,
                ),
                timeout=wait_seconds + self._timeout,
                metadata=self._metadata,
            )
        )
        return response.execution, response.finished, response.watch_token

    async def get_execution(self, execution_id: str) -> ex_pb.Execution:
        response: es.GetExecutionResponse = await self._call(
            self._executions.GetExecution(
                es.GetExecutionRequest(execution_id=execution_id),
                timeout=self._timeout,
                metadata=self._metadata,
            )
        )
        return response.execution

    async def list_executions(
        self, page_size: int, page_token: str
    ) -> tuple[list[ex_pb.Execution], str]:
        """Newest first; summaries without history, input or context."""
        response: es.ListExecutionsResponse = await self._call(
            self._executions.ListExecutions(
                es.ListExecutionsRequest(page_size=page_size, page_token=page_token),
                timeout=self._timeout,
                metadata=self._metadata,
            )
        )
        return list(response.executions), response.next_page_token

    async def list_steps(self, execution_id: str) -> list[es.ExecutionStep]:
        response: es.ListExecutionStepsResponse = await self._call(
            self._executions.ListExecutionSteps(
                es.ListExecutionStepsRequest(execution_id=execution_id),
                timeout=self._timeout,
                metadata=self._metadata,
            )
        )
        return list(response.steps)

    async def cancel(self, execution_id: str, reason: str) -> ex_pb.Execution:
        response: es.CancelExecutionResponse = await self._call(
            self._executions.CancelExecution(
                es.CancelExecutionRequest(execution_id=execution_id, reason=reason),
                timeout=self._timeout,
                metadata=self._metadata,
            )
        )
        return response.execution

    async def advance(self, execution_id: str, data: Mapping[str, Any]) -> ex_pb.Execution:
        response: es.AdvanceExecutionResponse = await self._call(
            self._executions.AdvanceExecution(
                es.AdvanceExecutionRequest(execution_id=execution_id, data=struct(data)),
                timeout=self._timeout,
                metadata=self._metadata,
            )
        )
        return response.execution

    def watch(
        self, execution_id: str, after_seq: int, timeout: float
    ) -> grpc.aio.UnaryStreamCall[es.WatchExecutionRequest, es.WatchExecutionResponse]:
        """The raw stream: its errors surface while iterating (see follow.py)."""
        call: grpc.aio.UnaryStreamCall[es.WatchExecutionRequest, es.WatchExecutionResponse]
        call = self._executions.WatchExecution(
            es.WatchExecutionRequest(execution_id=execution_id, after_seq=after_seq),
            timeout=timeout,
            metadata=self._metadata,
        )
        return call

    # --- step reports ----------------------------------------------------------------

    async def report_progress(
        self,
        execution_id: str,
        step_name: str,
        token: str,
        progress: ex_pb.StepProgress | None,
    ) -> bool:
        response: sr.ReportStepProgressResponse = await self._call(
            self._reports.ReportStepProgress(
                sr.ReportStepProgressRequest(
                    execution_id=execution_id,
                    step_name=step_name,
                    attempt_token=token,
                    progress=progress,
                ),
                timeout=self._timeout,
                metadata=self._metadata,
            )
        )
        return response.cancel_requested

    async def complete_step(
        self,
        execution_id: str,
        step_name: str,
        token: str,
        success: bool,
        result: Mapping[str, Any],
        error: ex_pb.StepError | None,
    ) -> None:
        await self._call(
            self._reports.CompleteStep(
                sr.CompleteStepRequest(
                    execution_id=execution_id,
                    step_name=step_name,
                    attempt_token=token,
                    success=success,
                    result=struct(result),
                    error=error,
                ),
                timeout=self._timeout,
                metadata=self._metadata,
            )
        )

    # --- workflows -------------------------------------------------------------------

    async def create_workflow(self, workflow: wf_pb.Workflow) -> wf_pb.Workflow:
        response: ws.CreateWorkflowResponse = await self._call(
            self._workflows.CreateWorkflow(
                ws.CreateWorkflowRequest(workflow=workflow),
                timeout=self._timeout,
                metadata=self._metadata,
            )
        )
        return response.workflow

    async def get_workflow(self, workflow_id: str) -> wf_pb.Workflow:
        response: ws.GetWorkflowResponse = await self._call(
            self._workflows.GetWorkflow(
                ws.GetWorkflowRequest(workflow_id=workflow_id),
                timeout=self._timeout,
                metadata=self._metadata,
            )
        )
        return response.workflow

    async def list_workflows(
        self, page_size: int, page_token: str
    ) -> tuple[list[wf_pb.Workflow], str]:
        response: ws.ListWorkflowsResponse = await self._call(
            self._workflows.ListWorkflows(
                ws.ListWorkflowsRequest(page_size=page_size, page_token=page_token),
                timeout=self._timeout,
                metadata=self._metadata,
            )
        )
        return list(response.workflows), response.next_page_token

    # --- tokens ------------------------------------------------------------------------

    async def list_revoked_tokens(self) -> list[str]:
        response: ts.ListRevokedTokensResponse = await self._call(
            self._tokens.ListRevokedTokens(
                ts.ListRevokedTokensRequest(), timeout=self._timeout, metadata=self._metadata
            )
        )
        return list(response.token_ids)

    # --- the step queue ----------------------------------------------------------------

    async def get_step_queue(self) -> sq.GetStepQueueResponse:
        """The caller's tenant's queue by handler, every tenant's, and the runners polling."""
        response: sq.GetStepQueueResponse = await self._call(
            self._queue.GetStepQueue(
                sq.GetStepQueueRequest(), timeout=self._timeout, metadata=self._metadata
            )
        )
        return response

    async def poll_step_attempts(
        self, runner_id: str, handlers: Sequence[str], max_attempts: int, wait_seconds: float
    ) -> list[sq.StepTask]:
        """A long poll: its deadline is the wait plus the unary deadline (at least 5 s), so the
        wait is not cut short by the unary deadline (Settings.rpc_timeout_seconds).
        Never retried: a retried poll could take attempts twice. Cancelling the awaiting task
        cancels the call at the engine."""
        wait = wait_seconds or DEFAULT_POLL_WAIT_SECONDS
        response: sq.PollStepAttemptsResponse = await self._call(
            self._queue.PollStepAttempts(
                sq.PollStepAttemptsRequest(
                    runner_id=runner_id,
                    handlers=handlers,
                    max_attempts=max_attempts,
                    wait_seconds=wait_seconds,
                ),
                timeout=wait + max(self._timeout, MIN_POLL_DEADLINE_MARGIN_SECONDS),
                metadata=self._metadata,
            )
        )
        return list(response.tasks)

    # --- health ----------------------------------------------------------------------

    async def serving(self, deadline_seconds: float) -> bool:
        try:
            reply = await self._health.Check(
                health_pb2.HealthCheckRequest(), timeout=deadline_seconds
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
