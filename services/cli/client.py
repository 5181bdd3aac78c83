"""The CLI's client to the engine: one blocking gRPC channel, typed calls, a deadline on each.

Blocking calls suit a command that does one thing and exits; the watch stream is read by
follow.py. Every failed call comes back as `EngineError` (errors.py) with the engine's
ErrorInfo reason, so callers never see a grpc exception. Reads, and starts (which always
carry an idempotency key), are retried by gRPC itself on UNAVAILABLE.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import grpc
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import execution_service_pb2_grpc as es_grpc
from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import step_queue_service_pb2_grpc as sq_grpc
from discovery.engine.v1 import token_service_pb2 as ts
from discovery.engine.v1 import token_service_pb2_grpc as ts_grpc
from discovery.engine.v1 import workflow_pb2 as wf_pb
from discovery.engine.v1 import workflow_service_pb2 as ws
from discovery.engine.v1 import workflow_service_pb2_grpc as ws_grpc
from google.protobuf import json_format, struct_pb2

from services.cli.errors import EngineError
from services.engine_channel import IDEMPOTENT_READS, channel_options
from services.tls import Tls, channel

T = TypeVar("T")

DEFAULT_TIMEOUT_SECONDS = 10.0
CLOSE_SECONDS = 2.0
# Starts are retried too: the CLI always sends a request_id, so a retry finds the same run.
_CHANNEL_OPTIONS = channel_options(
    retried=[
        *IDEMPOTENT_READS,
        ("discovery.engine.v1.ExecutionService", "StartExecution"),
    ],
    reconnect_backoff_ms=(100, 1000),
)


class WatchStream(Protocol):
    """A WatchExecution call: iterate it for the items, cancel it to let go early."""

    def __iter__(self) -> Iterator[es.WatchExecutionResponse]: ...

    def cancel(self) -> bool: ...


def struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    if value:
        json_format.ParseDict(dict(value), message)
    return message


class EngineClient:
    def __init__(
        self,
        target: str,
        token: str,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        *,
        tls: Tls | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._channel = channel(target, tls, options=_CHANNEL_OPTIONS)
        self._workflows = ws_grpc.WorkflowServiceStub(self._channel)
        self._executions = es_grpc.ExecutionServiceStub(self._channel)
        self._queue = sq_grpc.StepQueueServiceStub(self._channel)
        self._tokens = ts_grpc.TokenServiceStub(self._channel)

    def close(self) -> None:
        # Bounded: a command that has done its work must exit. CI once saw `run --watch`
        # print the terminal event and then not exit, after its stream had been reopened
        # across an engine restart; gRPC's blocking close is the likeliest place (SIGUSR1
        # prints the stacks, should it be another).
        closing = threading.Thread(target=self._channel.close, name="close-channel", daemon=True)
        closing.start()
        closing.join(CLOSE_SECONDS)

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: Any, timeout: float | None = None) -> T:
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise EngineError.from_rpc(exc, self.target) from None

    # --- workflows -----------------------------------------------------------------

    def create_workflow(self, workflow: wf_pb.Workflow) -> wf_pb.Workflow:
        response: ws.CreateWorkflowResponse = self._call(
            self._workflows.CreateWorkflow, ws.CreateWorkflowRequest(workflow=workflow)
        )
        return response.workflow

    def get_workflow(self, workflow_id: str) -> wf_pb.Workflow:
        response: ws.GetWorkflowResponse = self._call(
            self._workflows.GetWorkflow, ws.GetWorkflowRequest(workflow_id=workflow_id)
        )
        return response.workflow

    def list_workflows(self, name: str = "") -> list[wf_pb.Workflow]:
        """Every page, oldest first."""
        found: list[wf_pb.Workflow] = []
        token = ""
        while True:
            response: ws.ListWorkflowsResponse = self._call(
                self._workflows.ListWorkflows,
                ws.ListWorkflowsRequest(page_size=1000, page_token=token, name=name),
            )
            found.extend(response.workflows)
            token = response.next_page_token
            if not token:
                return found

    # --- executions ------------------------------------------------------------------

    def start_execution(
        self,
        workflow_id: str,
        document: Mapping[str, Any],
        *,
        manual: bool,
        request_id: str,
        priority: int = 0,
    ) -> ex_pb.Execution:
        """`priority` 1 (first) to 5 (last) in the step queue; 0 takes the default."""
        response: es.StartExecutionResponse = self._call(
            self._executions.StartExecution,
            es.StartExecutionRequest(
                workflow_id=workflow_id,
                input=struct(document),
                manual=manual,
                request_id=request_id,
                priority=priority,
            ),
            # A large document takes a while to send and to be stored.
            timeout=max(self.timeout, 60.0),
        )
        return response.execution

    def get_execution(self, execution_id: str) -> ex_pb.Execution:
        response: es.GetExecutionResponse = self._call(
            self._executions.GetExecution, es.GetExecutionRequest(execution_id=execution_id)
        )
        return response.execution

    def list_steps(self, execution_id: str) -> list[es.ExecutionStep]:
        response: es.ListExecutionStepsResponse = self._call(
            self._executions.ListExecutionSteps,
            es.ListExecutionStepsRequest(execution_id=execution_id),
        )
        return list(response.steps)

    def cancel(self, execution_id: str, reason: str) -> ex_pb.Execution:
        response: es.CancelExecutionResponse = self._call(
            self._executions.CancelExecution,
            es.CancelExecutionRequest(execution_id=execution_id, reason=reason),
        )
        return response.execution

    def revoke_token(self, token_or_id: str) -> ts.RevokeTokenResponse:
        # A token has two dots (header.claims.signature); an id has none.
        if token_or_id.count(".") == 2:
            request = ts.RevokeTokenRequest(token=token_or_id)
        else:
            request = ts.RevokeTokenRequest(token_id=token_or_id)
        response: ts.RevokeTokenResponse = self._call(self._tokens.RevokeToken, request)
        return response

    def advance(self, execution_id: str, data: Mapping[str, Any]) -> ex_pb.Execution:
        response: es.AdvanceExecutionResponse = self._call(
            self._executions.AdvanceExecution,
            es.AdvanceExecutionRequest(execution_id=execution_id, data=struct(data)),
        )
        return response.execution

    # --- the step queue ----------------------------------------------------------------

    def get_step_queue(self) -> sq.GetStepQueueResponse:
        """Ready attempts by handler (the caller's tenant, every tenant) and the runners."""
        response: sq.GetStepQueueResponse = self._call(
            self._queue.GetStepQueue, sq.GetStepQueueRequest()
        )
        return response

    def watch(self, execution_id: str, after_seq: int | None, timeout: float) -> WatchStream:
        """The raw stream; its errors surface as grpc.RpcError while iterating (follow.py
        reads them, as it resumes on some)."""
        request = es.WatchExecutionRequest(execution_id=execution_id)
        if after_seq is not None:
            request.after_seq = after_seq
        stream: WatchStream = self._executions.WatchExecution(
            request, timeout=timeout, metadata=self._metadata
        )
        return stream
