"""A workflow's input schema, through the engine's gRPC API: a start whose input does not
match is refused with every mismatch named and leaves nothing behind; a bad schema is refused
when the workflow is created, and nothing a schema refers to is ever fetched."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from aiohttp import web
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import workflow_pb2 as wf
from discovery.engine.v1 import workflow_service_pb2 as ws
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pymongo import AsyncMongoClient

from discovery_client.requests import struct
from services.engine.domain.errors import InputSchemaViolation, InvalidArgument
from services.engine.domain.input_schema import MAX_VIOLATIONS, InputSchema
from services.engine.domain.workflow import new_workflow
from services.engine.store.documents import workflow_from_doc, workflow_to_doc
from tests.stack import Stack, as_dict, error_info

pytestmark = pytest.mark.timeout(60)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["mime", "pages"],
    "properties": {
        "mime": {"type": "string", "minLength": 1},
        "pages": {"type": "integer", "minimum": 1},
        "big": {"type": "string"},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}},
    },
    "$defs": {"tag": {"type": "string", "maxLength": 10}},
}
# Over the engine's blob threshold (64 KiB): a start that were let through would store it.
BIG = "A" * (100 * 1024)


async def create(stack: Stack, schema: dict[str, Any] | None) -> wf.Workflow:
    definition = wf.Workflow(name="schema")
    json_format.ParseDict({"name": "echo", "handler": "echo"}, definition.steps.add())
    if schema is not None:
        definition.input_schema.update(schema)
    response: ws.CreateWorkflowResponse = await stack.client.workflows.CreateWorkflow(
        ws.CreateWorkflowRequest(workflow=definition), timeout=10
    )
    return response.workflow


def violations(exc: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(exc)
    assert status is not None
    found: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.extend((v.field, v.description) for v in bad.field_violations)
    return found


async def stored(stack: Stack) -> dict[str, int]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_uri)
    try:
        db = client[stack.database]
        return {
            name: await db[name].count_documents({})
            for name in ("executions", "events", "blobs", "blob_chunks")
        }
    finally:
        await client.close()


async def test_a_start_that_does_not_match_is_refused_naming_every_field_and_stores_nothing(
    stack: Stack,
) -> None:
    workflow = await create(stack, SCHEMA)
    before = await stored(stack)

    for call in ("StartExecution", "ExecuteWorkflow"):
        request_type = getattr(es, f"{call}Request")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(stack.client.executions, call)(
                request_type(
                    workflow_id=workflow.workflow_id,
                    input=struct({"pages": "three", "big": BIG, "tags": ["ok", "far too long"]}),
                    request_id=f"refused-{call}",
                ),
                timeout=10,
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        reason, metadata, _ = error_info(caught.value)
        assert reason == "INPUT_SCHEMA_VIOLATION"
        assert metadata["violations"] == "3"
        assert violations(caught.value) == [
            ("input.mime", "required"),
            ("input.pages", "expected integer, got string"),
            ("input.tags[1]", "'far too long' is too long"),
        ]
        assert "input.mime: required (and 2 more)" in (caught.value.details() or "")

    assert await stored(stack) == before
    listed: es.ListExecutionsResponse = await stack.client.executions.ListExecutions(
        es.ListExecutionsRequest(workflow_id=workflow.workflow_id), timeout=10
    )
    assert list(listed.executions) == []
    # The refused request_id was not taken: the same id with a good input starts.
    started = await stack.client.start(
        workflow.workflow_id,
        {"mime": "application/pdf", "pages": 3},
        request_id="refused-StartExecution",
    )
    assert started.execution_id


async def test_a_matching_start_runs_with_the_input_as_sent(stack: Stack) -> None:
    workflow = await create(stack, SCHEMA)
    document = {"mime": "application/pdf", "pages": 3, "big": BIG, "tags": ["a"], "extra": 1}
    started = await stack.client.start(workflow.workflow_id, document)
    final = await stack.client.wait_terminal(started.execution_id, 30)
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    echoed = as_dict(final.steps_history[0].output_payload)
    assert (echoed["mime"], echoed["pages"], echoed["extra"]) == ("application/pdf", 3, 1)
    # The large value was still set apart as a blob after the check.
    assert set(as_dict(final.input)["big"]) == {"blob_id", "size_bytes", "sha256"}


async def test_a_workflow_without_a_schema_takes_any_input(stack: Stack) -> None:
    workflow = await create(stack, None)
    assert not workflow.HasField("input_schema")
    final = await stack.client.wait_terminal(
        (await stack.client.start(workflow.workflow_id, {"pages": "any"})).execution_id, 30
    )
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED


async def test_the_schema_is_kept_with_the_workflow(stack: Stack) -> None:
    created = await create(stack, SCHEMA)
    got: ws.GetWorkflowResponse = await stack.client.workflows.GetWorkflow(
        ws.GetWorkflowRequest(workflow_id=created.workflow_id), timeout=10
    )
    assert as_dict(got.workflow.input_schema) == as_dict(created.input_schema)
    assert as_dict(created.input_schema)["required"] == ["mime", "pages"]


@pytest.mark.parametrize(
    ("schema", "field", "words"),
    [
        ({"type": "text"}, "input_schema.type", "not a valid JSON Schema"),
        ({"properties": {"a": {"minLength": -1}}}, "input_schema.properties.a.minLength", ""),
        ({"$ref": "#/$defs/missing"}, "input_schema", "does not resolve within the schema"),
        (
            {"properties": {"a": {"$ref": "https://example.com/a.json"}}},
            "input_schema",
            "references to other documents are not fetched",
        ),
        ({"enum": ["x" * 70_000]}, "input_schema", "more than the 65536 allowed"),
    ],
)
async def test_a_bad_schema_is_refused_at_creation_naming_it(
    stack: Stack, schema: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(stack, schema)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value)[2] == [field]
    assert words in (caught.value.details() or "")


async def test_a_remote_reference_is_never_fetched(stack: Stack) -> None:
    hits: list[str] = []

    async def serve(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"type": "string"})

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        for schema in (
            {"$ref": f"http://127.0.0.1:{port}/root.json"},
            {"$id": f"http://127.0.0.1:{port}/root.json", "$ref": "other.json"},
            {"properties": {"a": {"$dynamicRef": f"http://127.0.0.1:{port}/d.json"}}},
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await create(stack, schema)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await runner.cleanup()
    assert hits == []


# --- the domain alone -------------------------------------------------------------------


def test_references_within_the_schema_and_its_embedded_ids_resolve() -> None:
    schema = InputSchema.parse(
        {
            "$id": "https://example.com/root",
            "$defs": {"a": {"type": "string"}, "b": {"$id": "b", "type": "integer"}},
            "properties": {
                "x": {"$ref": "#/$defs/a"},
                "y": {"$ref": "https://example.com/root#/$defs/a"},
                "z": {"$ref": "b"},
            },
            # Data, not a schema: no reference to resolve.
            "examples": [{"$ref": "https://example.com/elsewhere"}],
        }
    )
    with pytest.raises(InputSchemaViolation) as caught:
        schema.check({"x": 1, "y": "ok", "z": "no"})
    assert [field for field, _ in caught.value.violations] == ["input.x", "input.z"]


def test_violations_are_capped_and_their_descriptions_kept_short() -> None:
    schema = InputSchema.parse(
        {"type": "object", "additionalProperties": {"type": "integer", "maxLength": 1}}
    )
    with pytest.raises(InputSchemaViolation) as caught:
        schema.check({f"k{i}": "v" * 10_000 for i in range(50)})
    assert len(caught.value.violations) == MAX_VIOLATIONS
    assert all(len(text) <= 160 for _, text in caught.value.violations)
    schema = InputSchema.parse({"const": 1})
    with pytest.raises(InputSchemaViolation) as caught:
        schema.check({"big": "v" * 1_000_000})  # the library's message quotes the value
    assert len(caught.value.violations[0][1]) <= 160


def test_a_schema_survives_the_store_and_executions_do_not_repeat_it() -> None:
    workflow = new_workflow(
        "w",
        "",
        [{"name": "s", "handler": "echo"}],
        datetime(2026, 1, 1, tzinfo=UTC),
        tenant_id="t",
        input_schema=SCHEMA,
    )
    doc = workflow_to_doc(workflow)
    assert workflow_from_doc(doc) == workflow
    assert workflow_from_doc(doc).input_schema is not None
    assert "input_schema_json" not in workflow_to_doc(workflow, with_schema=False)
    assert hash(workflow) == hash(workflow_from_doc(doc))


def test_too_deep_a_schema_is_refused() -> None:
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(40):
        deep = {"properties": {"a": deep}}
    with pytest.raises(InvalidArgument) as caught:
        InputSchema.parse(deep)
    assert caught.value.field == "input_schema"
