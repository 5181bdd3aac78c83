"""A workflow's input schema over the legacy REST API: declared in `POST /workflows`, shown in
the workflow answers, and a start that does not match it is a 422 naming each field, with no
execution left behind, in every start form."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway.harness import Api

pytestmark = pytest.mark.timeout(60)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["base64", "mime", "nombre_documento"],
    "properties": {
        "base64": {"type": "string", "minLength": 1},
        "mime": {"type": "string", "minLength": 1},
        "nombre_documento": {"type": "string"},
        "uuid_proceso": {"type": "string"},
        "paginas": {"type": "integer", "minimum": 1},
    },
}
GOOD = {"base64": "JVBERi0=", "mime": "application/pdf", "nombre_documento": "a.pdf"}


async def create(api: Api, schema: Any) -> tuple[int, Any]:
    return await api.call(
        "POST",
        "/workflows",
        {"name": "schema", "steps": [{"name": "echo", "handler": "echo"}], "input_schema": schema},
    )


async def executions(api: Api) -> list[str]:
    status, body = await api.call("GET", "/executions", params={"limit": "1000"})
    assert status == 200, body
    return [item["execution_id"] for item in body["executions"]]


async def test_the_schema_is_kept_and_shown_with_the_workflow(api: Api) -> None:
    status, created = await create(api, SCHEMA)
    assert status == 201, created
    assert created["input_schema"] == SCHEMA
    status, got = await api.call("GET", f"/workflows/{created['workflow_id']}")
    assert (status, got["input_schema"]) == (200, SCHEMA)
    listed = await api.call("GET", "/workflows")
    assert any(w["input_schema"] == SCHEMA for w in listed[1]["workflows"])
    # Without one: null, and any input starts.
    plain = await api.workflow({"name": "echo", "handler": "echo"})
    assert (await api.call("GET", f"/workflows/{plain}"))[1]["input_schema"] is None


@pytest.mark.parametrize("form", ["path", "legacy", "sync"])
async def test_a_start_without_a_required_field_is_422_naming_it_and_nothing_starts(
    api: Api, form: str
) -> None:
    workflow_id = (await create(api, SCHEMA))[1]["workflow_id"]
    before = await executions(api)
    # `manual` is the mode, not part of the document the schema sees.
    document = {"base64": "JVBERi0=", "nombre_documento": "a.pdf", "paginas": "7", "manual": False}
    if form == "path":
        status, body = await api.call("POST", f"/workflows/{workflow_id}/execute-async", document)
    else:
        path = "/execute-async/" if form == "legacy" else "/execute/"
        status, body = await api.call(
            "POST", path, {"workflow_id": workflow_id, "data": document, "priority": 2}
        )
    assert status == 422, body
    error = body["error"]
    assert error["code"] == "INPUT_SCHEMA_VIOLATION"
    assert (error["details"]["field"], error["details"]["description"]) == (
        "input.mime",
        "required",
    )
    assert error["details"]["violations"] == [
        {"field": "input.mime", "description": "required"},
        {"field": "input.paginas", "description": "expected integer, got string"},
    ]
    assert "input.mime: required" in error["message"]
    assert await executions(api) == before


async def test_a_wrong_type_is_422_and_a_matching_start_runs(api: Api) -> None:
    workflow_id = (await create(api, SCHEMA))[1]["workflow_id"]
    status, body = await api.call(
        "POST", f"/workflows/{workflow_id}/execute-async", {**GOOD, "paginas": 2.5}
    )
    assert status == 422, body
    assert body["error"]["details"]["field"] == "input.paginas"
    assert body["error"]["details"]["description"] == "expected integer, got number"
    # The seed's own fields keep the gateway's earlier check, named as the body names them.
    status, body = await api.call(
        "POST", f"/workflows/{workflow_id}/execute-async", {**GOOD, "mime": ["application/pdf"]}
    )
    assert (status, body["error"]["details"]["field"]) == (422, "mime")

    execution_id = await api.start(workflow_id, {**GOOD, "uuid_proceso": "p-1", "manual": False})
    final = await api.wait_terminal(execution_id)
    assert final["status"] == "completed"
    assert final["steps_history"][0]["output_payload"]["nombre_documento"] == "a.pdf"


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ("required", "input_schema"),
        ({"type": "text"}, "input_schema.type"),
        ({"$ref": "https://example.com/schema.json"}, "input_schema"),
    ],
)
async def test_a_bad_schema_is_refused_at_creation(api: Api, schema: Any, field: str) -> None:
    status, body = await create(api, schema)
    assert status == 422, body
    assert body["error"]["details"]["field"] == field
