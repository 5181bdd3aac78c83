""" "Procesar Documentos" end to end, as a client runs it: a real engine and pioneer on real
sockets against a real MongoDB wire-protocol server, the document sent as base64."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import workflow_service_pb2 as ws

from services.grpc_auth import BearerToken
from services.pioneer.context import Resources
from services.pioneer.errors import EngineUnavailable
from services.pioneer.steps import documents
from services.pioneer.workflows import (
    DOCUMENT_WORKFLOW_NAME,
    DOCUMENT_WORKFLOW_STEPS,
    EXTRACT_STEP,
    LOAD_STEP,
    VALIDATE_STEP,
    ensure_document_workflow,
)
from tests.documents import pdfs
from tests.stack import ROOT, Stack, as_dict, error_info, free_port, token

pytestmark = pytest.mark.timeout(60)

STEP_NAMES = [step["name"] for step in DOCUMENT_WORKFLOW_STEPS]


def upload(data: bytes | str, **overrides: Any) -> dict[str, Any]:
    """The legacy client's body: the document in base64 and its description."""
    return {
        "base64": data if isinstance(data, str) else pdfs.b64(data),
        "mime": "application/pdf",
        "nombre_documento": "informe.pdf",
        "uuid_proceso": "proceso_123",
        "manual": False,
        **overrides,
    }


def step_progress(events: list[ex_pb.ExecutionEvent], step: str) -> list[dict[str, Any]]:
    return [
        as_dict(e.data)["progress"]
        for e in events
        if e.type == ex_pb.EVENT_TYPE_STEP_PROGRESS and as_dict(e.data)["step_name"] == step
    ]


async def test_a_40_page_pdf_is_processed_with_progress_for_every_page(stack: Stack) -> None:
    c = stack.client
    workflow = await ensure_document_workflow(c.target, BearerToken(token()))
    assert [(s.name, s.handler) for s in workflow.steps] == [
        (s["name"], s["handler"]) for s in DOCUMENT_WORKFLOW_STEPS
    ]
    document = pdfs.sectioned_pdf(40)
    started = await c.start(workflow.workflow_id, upload(document))
    # 29 KB of PDF is under the engine's 64 KiB threshold: the base64 arrives inline.
    assert isinstance(as_dict(started.input)["base64"], str)
    watcher = asyncio.create_task(c.events(started.execution_id, 0))

    events = await asyncio.wait_for(watcher, 30)
    assert events[-1].type == ex_pb.EVENT_TYPE_WORKFLOW_COMPLETED
    progress = step_progress(events, EXTRACT_STEP)
    assert [p["custom_data"]["pages_processed"] for p in progress] == list(range(1, 41))
    assert {p["custom_data"]["total_pages"] for p in progress} == {40}
    assert [p["percentage"] for p in progress] == pytest.approx([2.5 * n for n in range(1, 41)])
    etas = [p["estimated_remaining_seconds"] for p in progress]
    assert etas[0] > 0 and etas[-1] == 0
    # Honest: halfway, the estimate from the measured rate is near what the rest then took.
    logged = [
        e.time.ToDatetime()
        for e in events
        if e.type == ex_pb.EVENT_TYPE_STEP_PROGRESS and as_dict(e.data)["step_name"] == EXTRACT_STEP
    ]
    rest_took = (logged[-1] - logged[19]).total_seconds()
    assert rest_took / 3 - 0.1 <= etas[19] <= rest_took * 3 + 0.1

    final = await c.get(started.execution_id)
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    assert [(a.step_name, a.status) for a in final.steps_history] == [
        (name, ex_pb.ATTEMPT_STATUS_SUCCESS) for name in STEP_NAMES
    ]
    context = as_dict(final.dynamic_properties)
    stored = context["document"]
    assert stored["sha256"] == hashlib.sha256(document).hexdigest()
    assert stored["size_bytes"] == len(document)
    assert (stored["mime"], stored["nombre_documento"]) == ("application/pdf", "informe.pdf")
    assert context["total_pages"] == 40
    assert context["text"]["pages"] == 40 and context["pages_with_text"] == 40
    expected = pdfs.expected_headings(40)
    assert context["sections_found"] == len(expected) == 10
    assert [(s["title"], s["page"]) for s in context["sections"]] == expected

    finished = as_dict(final.steps_history[-1].output_payload)
    preview = finished.pop("text_preview")
    assert finished == {
        "success": True,
        "document_processed": True,
        "sections_found": 10,
        "pdf_uploaded": True,
        "nombre_documento": "informe.pdf",
    }
    assert preview.startswith(pdfs.RUNNING_HEADER) and "1. Introducción al tema 1" in preview
    assert 400 <= len(preview) <= 500
    # Only references travel in the context: neither the document nor its text.
    assert pdfs.BODY_LINE not in str({k: v for k, v in context.items() if k != "text_preview"})

    again = await ensure_document_workflow(c.target, BearerToken(token()))
    assert again.workflow_id == workflow.workflow_id
    listed = await c.workflows.ListWorkflows(ws.ListWorkflowsRequest(name=DOCUMENT_WORKFLOW_NAME))
    assert len(listed.workflows) == 1


async def test_cancelling_during_extraction_stops_the_step_between_pages(stack: Stack) -> None:
    c = stack.client
    workflow = await ensure_document_workflow(c.target, BearerToken(token()))
    started = await c.start(workflow.workflow_id, upload(pdfs.sectioned_pdf(400)))
    # 290 KB of PDF: the engine keeps the base64 apart and load_document reads it as a blob.
    assert set(as_dict(started.input)["base64"]) == {"blob_id", "size_bytes", "sha256"}

    seen = 0
    # Client.watch is an async generator (annotated as an iterator): closed at the break.
    watch = cast(AsyncGenerator[es.WatchExecutionResponse, None], c.watch(started.execution_id, 0))
    async with contextlib.aclosing(watch) as watched:
        async for item in watched:
            data = as_dict(item.event.data)
            if (
                item.event.type == ex_pb.EVENT_TYPE_STEP_PROGRESS
                and data["step_name"] == EXTRACT_STEP
            ):
                seen = int(data["progress"]["custom_data"]["pages_processed"])
                if seen >= 5:
                    break
    assert stack.pioneer.runner is not None and stack.pioneer.runner.running_count == 1
    await c.executions.CancelExecution(
        es.CancelExecutionRequest(execution_id=started.execution_id, reason="user gave up")
    )
    cancelled_at = time.monotonic()
    while stack.pioneer.runner.running_count:
        assert time.monotonic() - cancelled_at < 2, "extract_text went on after the cancel"
        await asyncio.sleep(0.01)

    final = await c.wait_terminal(started.execution_id, 10)
    assert final.status == ex_pb.EXECUTION_STATUS_CANCELLED
    attempt = final.steps_history[-1]
    assert (attempt.step_name, attempt.status) == (EXTRACT_STEP, ex_pb.ATTEMPT_STATUS_CANCELLED)
    pages = int(as_dict(attempt.last_progress.custom_data)["pages_processed"])
    assert seen <= pages < 400
    assert "text" not in as_dict(final.dynamic_properties)
    events = await c.events(started.execution_id, 0)
    assert events[-1].type == ex_pb.EVENT_TYPE_WORKFLOW_CANCELLED
    assert len(step_progress(events, EXTRACT_STEP)) == pages


BAD_UPLOADS = {
    "corrupt": (
        upload(pdfs.truncated_pdf()),
        VALIDATE_STEP,
        "the document is corrupt or truncated and cannot be read as a PDF",
    ),
    "encrypted": (
        upload(pdfs.encrypted_pdf()),
        VALIDATE_STEP,
        "the document is encrypted (password-protected)",
    ),
    "no pages": (upload(pdfs.empty_pdf()), VALIDATE_STEP, "the document has no pages"),
    "not a pdf": (
        upload(pdfs.PNG_BYTES),
        LOAD_STEP,
        "declared mime application/pdf but the bytes are not a PDF (they look like a PNG image)",
    ),
    "bad base64": (
        upload("JVBERi0xLjQK*ZmFrZQ=="),
        LOAD_STEP,
        "base64 contains characters outside the standard alphabet at position 12 ('*')",
    ),
    "wrapped base64": (
        upload(pdfs.b64(pdfs.sectioned_pdf(1))[:76] + "\n" + "AAAA"),
        LOAD_STEP,
        "base64 contains a newline at position 76",
    ),
    "unsupported mime": (
        upload(pdfs.PNG_BYTES, mime="image/png"),
        LOAD_STEP,
        "mime 'image/png' is not supported",
    ),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
async def test_a_bad_upload_fails_once_with_a_reason_the_user_understands(
    stack: Stack, case: str
) -> None:
    document, failing_step, message = BAD_UPLOADS[case]
    c = stack.client
    workflow = await ensure_document_workflow(c.target, BearerToken(token()))
    started = await c.start(workflow.workflow_id, document)
    final = await c.wait_terminal(started.execution_id, 20)

    assert final.status == ex_pb.EXECUTION_STATUS_FAILED
    assert (final.error.reason, final.error.step_name) == ("invalid_input", failing_step)
    assert message in final.error.message
    assert final.error.type == "InvalidInput"
    # Not retried: the same document would fail the same way.
    assert [a.step_name for a in final.steps_history][-1:] == [failing_step]
    assert sum(a.step_name == failing_step for a in final.steps_history) == 1
    assert as_dict(final.steps_history[-1].output_payload) == {
        "success": False,
        "error": final.error.message,
    }


async def test_ensure_document_workflow_says_when_the_engine_is_unreachable() -> None:
    with pytest.raises(EngineUnavailable, match=r"did not answer within 0\.3 s"):
        await ensure_document_workflow(
            f"127.0.0.1:{free_port()}", BearerToken(token()), wait_seconds=0.3
        )


async def test_the_workflows_command_creates_the_workflow_from_engine_url(
    stack: Stack, tmp_path: Path
) -> None:
    def run(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.pioneer.workflows"],
            cwd=tmp_path,  # no .discovery/token here
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("DISCOVERY_TOKEN")},
                "PYTHONPATH": f"{ROOT}:{ROOT / 'generated'}",
                # The gateway's name and URL form of the engine's address.
                "ENGINE_URL": f"http://{stack.client.target}/",
                **env,
            },
            capture_output=True,
            text=True,
            timeout=30,
        )

    # An admin's token, never one pioneer signs: its key may sign runner tokens only.
    refused = await asyncio.to_thread(run)
    assert refused.returncode == 2 and "no credentials: set DISCOVERY_TOKEN" in refused.stderr
    first = await asyncio.to_thread(run, DISCOVERY_TOKEN=token())
    assert first.returncode == 0, first.stderr
    second = await asyncio.to_thread(run, DISCOVERY_TOKEN=token())
    assert second.stdout == first.stdout
    listed = await stack.client.workflows.ListWorkflows(
        ws.ListWorkflowsRequest(name=DOCUMENT_WORKFLOW_NAME)
    )
    assert len(listed.workflows) == 1
    assert listed.workflows[0].workflow_id in first.stdout


async def test_a_document_over_the_size_limit_is_refused(stack: Stack) -> None:
    c = stack.client
    workflow = await ensure_document_workflow(c.target, BearerToken(token()))
    runner, tools = stack.pioneer.runner, stack.pioneer.documents
    assert runner is not None and tools is not None
    small = documents.DocumentLimits(max_document_bytes=256 * 1024)
    runner.resources = Resources(documents.DocumentTools(small, tools.pool))
    started = await c.start(workflow.workflow_id, upload(pdfs.sectioned_pdf(400)))
    final = await c.wait_terminal(started.execution_id, 20)
    assert (final.error.reason, final.error.step_name) == ("invalid_input", LOAD_STEP)
    assert "once decoded, more than the 0.25 MiB allowed" in final.error.message


async def test_a_miswired_workflow_is_a_step_failure_not_the_users_fault(stack: Stack) -> None:
    c = stack.client
    # validate_document without load_document before it: no document reference to read.
    workflow = await c.create_workflow(
        "validate only",
        {"name": "validate", "handler": "validate_document", "retry": {"max_attempts": 1}},
    )
    started = await c.start(workflow.workflow_id, {"document": "informe.pdf"})
    final = await c.wait_terminal(started.execution_id, 20)
    assert (final.error.reason, final.error.type) == ("step_failed", "StepFailure")
    assert "needs `document`, the output of load_document" in final.error.message


async def test_a_start_without_what_the_steps_need_is_refused_before_it_runs(
    stack: Stack,
) -> None:
    c = stack.client
    workflow = await ensure_document_workflow(c.target, BearerToken(token()))
    assert set(as_dict(workflow.input_schema)["required"]) == {
        "base64",
        "mime",
        "nombre_documento",
    }
    document = upload(pdfs.sectioned_pdf(1))
    del document["mime"], document["nombre_documento"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await c.start(workflow.workflow_id, {**document, "uuid_proceso": 123})
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value)[2] == [
        "input.mime",
        "input.nombre_documento",
        "input.uuid_proceso",
    ]
    listed = await c.executions.ListExecutions(
        es.ListExecutionsRequest(workflow_id=workflow.workflow_id), timeout=10
    )
    assert list(listed.executions) == []
