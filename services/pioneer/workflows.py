"""The workflow definitions pioneer ships, and how they are created in the engine.

"Procesar Documentos" is the seed's document workflow, built on the steps of
`steps/documents.py`. `ensure_document_workflow` creates it through the engine's
WorkflowService unless a workflow of that name exists already; `python -m
services.pioneer.workflows` does so against `DISCOVERY_URL` with an admin's token (the
`discovery` command's: DISCOVERY_TOKEN or DISCOVERY_TOKEN_FILE; pioneer's own key may sign
runner tokens only) and prints the workflow's id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import grpc
from discovery.engine.v1 import step_queue_service_pb2 as sq_pb
from discovery.engine.v1 import step_queue_service_pb2_grpc as sq_grpc
from discovery.engine.v1 import workflow_pb2 as wf_pb
from discovery.engine.v1 import workflow_service_pb2 as ws_pb
from discovery.engine.v1 import workflow_service_pb2_grpc as ws_grpc
from google.protobuf import json_format

from discovery_client.channel import Tls, aio_channel
from discovery_client.settings import token_from_env
from services import jsonlog
from services.envconfig import ConfigError
from services.grpc_auth import BearerToken, Credentials, bearer_interceptors
from services.pioneer.config import Settings
from services.pioneer.errors import EngineUnavailable, WorkflowRejected
from services.pioneer.steps.documents import MAX_NAME_CHARS

log = logging.getLogger("services.pioneer.workflows")  # also when run as __main__

DOCUMENT_WORKFLOW_NAME = "Procesar Documentos"

# Step names as the legacy status document shows them; `handler` is what pioneer runs.
LOAD_STEP = "Cargar Documento"
VALIDATE_STEP = "Validar Documento"
EXTRACT_STEP = "Extraer Texto"
SECTIONS_STEP = "Buscar Secciones"
FINISH_STEP = "Finalizar"

# A bad document fails its step with reason `invalid_input`, which the engine never retries;
# retries are for crashes and lost runners.
# Text extraction is long: one more try covers a pioneer restarted under it.
_EXTRACT_RETRY: dict[str, Any] = {"max_attempts": 2, "initial_backoff_seconds": 2.0}
_RETRY: dict[str, Any] = {"max_attempts": 3, "initial_backoff_seconds": 1.0}

DOCUMENT_WORKFLOW_STEPS: tuple[dict[str, Any], ...] = (
    # Decoding and storing up to 48 MiB.
    {
        "name": LOAD_STEP,
        "handler": "load_document",
        "timeout_seconds": 300,
        "heartbeat_timeout_seconds": 30,
        "retry": _RETRY,
    },
    # Opening is bounded at 30 s (DocumentLimits.open_seconds); reading the blob comes first.
    {
        "name": VALIDATE_STEP,
        "handler": "validate_document",
        "timeout_seconds": 120,
        "heartbeat_timeout_seconds": 30,
        "retry": _RETRY,
    },
    # Up to 2000 pages; every page reports progress, and pioneer heartbeats in between.
    {
        "name": EXTRACT_STEP,
        "handler": "extract_text",
        "timeout_seconds": 3600,
        "heartbeat_timeout_seconds": 30,
        "retry": _EXTRACT_RETRY,
    },
    {
        "name": SECTIONS_STEP,
        "handler": "find_sections",
        "timeout_seconds": 300,
        "heartbeat_timeout_seconds": 30,
        "retry": _RETRY,
    },
    {
        "name": FINISH_STEP,
        "handler": "finish",
        "timeout_seconds": 120,
        "heartbeat_timeout_seconds": 30,
        "retry": _RETRY,
    },
)


# What the steps need from the start's document, checked by the engine before anything is
# stored: a start without them is refused (422) instead of a run that fails at its first step.
# load_document reads `base64` (the PDF, strict base64 checked by the gateway and the step),
# `mime` and `nombre_documento`; `uuid_proceso` is the client's own reference, passed along.
# Other keys are the client's and pass through.
DOCUMENT_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["base64", "mime", "nombre_documento"],
    "properties": {
        "base64": {"type": "string", "minLength": 1},
        "mime": {"type": "string", "minLength": 1},
        "nombre_documento": {"type": "string", "maxLength": MAX_NAME_CHARS},
        "uuid_proceso": {"type": "string"},
    },
}


def document_workflow() -> wf_pb.Workflow:
    """The definition of "Procesar Documentos", as CreateWorkflow takes it."""
    workflow = wf_pb.Workflow(
        name=DOCUMENT_WORKFLOW_NAME,
        description=(
            "Decodes an uploaded PDF (base64), validates it, extracts its text page by page, "
            "finds its sections and reports the result."
        ),
    )
    for step in DOCUMENT_WORKFLOW_STEPS:
        json_format.ParseDict(step, workflow.steps.add())
    workflow.input_schema.update(DOCUMENT_INPUT_SCHEMA)
    return workflow


async def ensure_document_workflow(
    engine_target: str,
    credentials: Credentials,
    *,
    wait_seconds: float = 30.0,
    tls: Tls | None = None,
) -> wf_pb.Workflow:
    """The "Procesar Documentos" workflow of the engine at `engine_target`, created when no
    workflow has that name in the tenant of `credentials` (an admin's). Waits up to
    `wait_seconds` for the engine to answer.

    The engine refuses a definition whose handlers no runner has offered yet, so before
    creating it this waits, within the same `wait_seconds`, for runners (a pioneer started
    at the same time) to poll with them.

    Raises EngineUnavailable when the engine does not answer in time, WorkflowRejected when it
    refuses the definition (e.g. no runner offered its handlers in time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    async with aio_channel(
        engine_target, tls, interceptors=bearer_interceptors(credentials)
    ) as channel:
        stub = ws_grpc.WorkflowServiceStub(channel)
        try:
            listed: ws_pb.ListWorkflowsResponse = await stub.ListWorkflows(
                ws_pb.ListWorkflowsRequest(name=DOCUMENT_WORKFLOW_NAME, page_size=1),
                timeout=wait_seconds,
                wait_for_ready=True,
            )
            if listed.workflows:
                existing = listed.workflows[0]  # oldest first: the one clients found first
                _warn_if_different(existing)
                log.info("workflow found", extra=_fields(existing))
                return existing
            await _wait_for_handlers(channel, deadline)
            created: ws_pb.CreateWorkflowResponse = await stub.CreateWorkflow(
                ws_pb.CreateWorkflowRequest(workflow=document_workflow()),
                timeout=max(deadline - loop.time(), 1.0),
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            detail = f"{exc.code().name}: {exc.details() or ''}".rstrip(": ")
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise EngineUnavailable(
                    f"the engine at {engine_target} did not answer within {wait_seconds:g} s "
                    f"({detail})"
                ) from None
            raise WorkflowRejected(
                f"the engine refused the {DOCUMENT_WORKFLOW_NAME!r} workflow ({detail})"
            ) from None
    log.info("workflow created", extra=_fields(created.workflow))
    return created.workflow


async def _wait_for_handlers(channel: grpc.aio.Channel, deadline: float) -> None:
    """Until runners that offer every handler of the workflow have polled the engine, or
    `deadline` (loop time): CreateWorkflow then says what is missing."""
    needed = {step["handler"] for step in DOCUMENT_WORKFLOW_STEPS}
    stub = sq_grpc.StepQueueServiceStub(channel)
    loop = asyncio.get_running_loop()
    while (left := deadline - loop.time()) > 0:
        reply: sq_pb.GetStepQueueResponse = await stub.GetStepQueue(
            sq_pb.GetStepQueueRequest(), timeout=left, wait_for_ready=True
        )
        if needed <= {h for runner in reply.runners for h in runner.handlers}:
            return
        await asyncio.sleep(0.2)


def _warn_if_different(existing: wf_pb.Workflow) -> None:
    # An older definition is kept as it is: executions and clients already refer to its id.
    ours = [(s["name"], s["handler"]) for s in DOCUMENT_WORKFLOW_STEPS]
    theirs = [(s.name, s.handler) for s in existing.steps]
    if ours != theirs:
        log.warning(
            "existing workflow has other steps; kept as it is",
            extra={**_fields(existing), "steps": theirs},
        )


def _fields(workflow: wf_pb.Workflow) -> dict[str, Any]:
    return {"workflow_id": workflow.workflow_id, "workflow": workflow.name}


def main() -> int:
    jsonlog.configure("pioneer")
    try:
        settings = Settings.from_env()
        admin = BearerToken(token_from_env())
    except ConfigError as exc:
        log.error("bad configuration", extra={"error": str(exc)})
        return 2
    try:
        workflow = asyncio.run(
            ensure_document_workflow(settings.discovery_url, admin, tls=settings.tls)
        )
    except (EngineUnavailable, WorkflowRejected) as exc:
        log.error("workflow not ensured", extra={"error": str(exc), "reason": exc.reason})
        return 1
    print(json.dumps({"workflow_id": workflow.workflow_id, "name": workflow.name}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
