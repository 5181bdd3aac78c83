"""Workflow versions through the REST API: `POST /workflows` of a name again, `PUT
/workflows/{id}`, `GET /workflows/{id}?version=N` and `GET /workflows/{id}/versions`, and the
version an execution runs in its status document."""

from __future__ import annotations

import uuid
from typing import Any

from services.auth import CLIENT
from tests.gateway.harness import Api, sleep_step
from tests.stack import token


def definition(name: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "steps": list(steps), **extra}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


ECHO = {"name": "a", "handler": "echo"}


async def test_posting_a_name_again_answers_the_workflow_or_409(api: Api) -> None:
    name = unique("intake")
    status, created = await api.call("POST", "/workflows", definition(name, ECHO))
    assert status == 201, created
    assert (created["version"], created["updated_at"]) == (1, created["created_at"])

    # The same definition: answered as when it was created, the same workflow.
    status, again = await api.call("POST", "/workflows", definition(name, ECHO, description=""))
    assert status == 201, again
    assert again == created

    status, other = await api.call("POST", "/workflows", definition(name, sleep_step()))
    assert status == 409, other
    error = other["error"]
    assert error["code"] == "WORKFLOW_NAME_TAKEN"
    assert error["details"] == {"name": name, "workflow_id": created["workflow_id"]}
    assert repr(name) in error["message"]
    assert f"PUT /workflows/{created['workflow_id']}" in error["message"]


async def test_put_makes_a_version_an_execution_keeps_its_own(api: Api) -> None:
    name = unique("review")
    status, v1 = await api.call("POST", "/workflows", definition(name, ECHO))
    assert status == 201, v1
    workflow_id = v1["workflow_id"]
    path = f"/workflows/{workflow_id}"
    started = await api.start(workflow_id)
    assert (await api.wait_terminal(started))["workflow_version"] == 1

    status, same = await api.call("PUT", path, definition(name, ECHO))
    assert status == 200, same
    assert same == {**v1, "changed": False}

    status, v2 = await api.call("PUT", path, definition(name, ECHO, {**ECHO, "name": "b"}))
    assert status == 200, v2
    assert (v2["changed"], v2["version"], v2["workflow_id"]) == (True, 2, workflow_id)
    assert v2["steps"][0]["id"] == v1["steps"][0]["id"]  # the step kept its name
    assert v2["created_at"] == v1["created_at"] and v2["updated_at"] > v1["updated_at"]

    after = await api.wait_terminal(await api.start(workflow_id))
    assert after["workflow_version"] == 2
    assert [h["step_name"] for h in after["steps_history"]] == ["a", "b"]
    before = await api.status(started)
    assert before["workflow_version"] == 1
    assert [h["step_name"] for h in before["steps_history"]] == ["a"]

    status, current = await api.call("GET", path)
    assert (status, current) == (200, {k: v for k, v in v2.items() if k != "changed"})
    status, first = await api.call("GET", path, params={"version": "1"})
    assert (status, first) == (200, v1)
    status, listed = await api.call("GET", f"{path}/versions", params={"page_size": "1"})
    assert status == 200, listed
    assert [v["version"] for v in listed["versions"]] == [2] and listed["next_page_token"]
    status, rest = await api.call(
        "GET", f"{path}/versions", params={"page_token": listed["next_page_token"]}
    )
    assert (status, rest) == (200, {"versions": [v1], "next_page_token": None})


async def test_put_refuses_another_name_an_unknown_id_and_a_bad_version(api: Api) -> None:
    name = unique("kept")
    workflow_id = (await api.call("POST", "/workflows", definition(name, ECHO)))[1]["workflow_id"]
    path = f"/workflows/{workflow_id}"

    status, renamed = await api.call("PUT", path, definition("another", ECHO))
    assert status == 422, renamed
    assert renamed["error"]["details"]["field"] == "name"
    status, unknown = await api.call("PUT", f"/workflows/{uuid.uuid4()}", definition(name, ECHO))
    assert (status, unknown["error"]["code"]) == (404, "WORKFLOW_NOT_FOUND")
    status, missing = await api.call("GET", path, params={"version": "7"})
    assert (status, missing["error"]["code"]) == (404, "WORKFLOW_VERSION_NOT_FOUND")
    status, bad = await api.call("GET", path, params={"version": "-1"})
    assert (status, bad["error"]["details"]["field"]) == (400, "version")
    status, versions = await api.call("GET", f"/workflows/{uuid.uuid4()}/versions")
    assert status == 404, versions

    as_client = {"Authorization": f"Bearer {token(CLIENT)}"}
    status, denied = await api.call("PUT", path, definition(name, ECHO), headers=as_client)
    assert (status, denied["error"]["code"]) == (403, "PERMISSION_DENIED")
    status, _ = await api.call("GET", f"{path}/versions", headers=as_client)
    assert status == 200
