"""The legacy REST API over real sockets: gateway, engine, pioneer, MongoDB wire protocol."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from discovery.engine.v1 import execution_service_pb2 as es

from tests.gateway.harness import Api, GatewayStack, sleep_step

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
STATUS_KEYS = {
    "execution_id",
    "workflow_id",
    "workflow_name",
    "status",
    "mode",
    "created_at",
    "updated_at",
    "context",
    "current_step",
    "progress",
    "steps_history",
    "tracking_urls",
}
PROGRESS_KEYS = {
    "total_steps",
    "completed_steps",
    "failed_steps",
    "percentage",
    "is_completed",
    "is_failed",
    "is_running",
}
HISTORY_KEYS = {
    "step_name",
    "status",
    "attempt",
    "started_at",
    "finished_at",
    "duration_seconds",
    "input_payload",
    "output_payload",
}


async def test_polling_client_of_the_seed_follows_a_run_to_completion(api: Api) -> None:
    workflow_id = await api.workflow(
        sleep_step("Carga Usuario"), {"name": "Procesar", "handler": "echo"}
    )
    status, started = await api.call(
        "POST",
        f"/workflows/{workflow_id}/execute-async",
        {
            "base64": "JVBERi0xLjQK",
            "mime": "application/pdf",
            "nombre_documento": "documento.pdf",
            "uuid_proceso": "proceso_123",
            "seconds": 0.6,
            "echo": {"sections_found": 8, "ratio": 0.5},
            "manual": False,
        },
    )
    assert status == 202, started
    execution_id = started["execution_id"]
    assert started == {
        "execution_id": execution_id,
        "workflow_id": workflow_id,
        "status": "running",
        "tracking_url": f"/executions/{execution_id}/status",
        # The watch token rides along: a browser opens ws://host + websocket_url as it is.
        "websocket_url": f"/ws/{execution_id}?access_token={started['watch_token']}",
        "created_at": started["created_at"],
        "watch_token": started["watch_token"],
    }
    assert ISO_Z.match(started["created_at"])

    seen_running = False
    for _ in range(300):  # the seed's loop, with a bound
        status, document = await api.call("GET", started["tracking_url"])
        assert status == 200
        progress = document["progress"]
        if progress["is_completed"]:
            break
        assert not progress["is_failed"]
        seen_running = seen_running or (
            progress["is_running"] and document["current_step"]["name"] == "Carga Usuario"
        )
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("never completed")
    assert seen_running

    assert set(document) >= STATUS_KEYS
    assert set(document["progress"]) >= PROGRESS_KEYS
    assert document["status"] == "completed" and document["mode"] == "automatic"
    assert document["workflow_name"].startswith("wf-")
    # Where the run ended, not null: the seed's poller reads current_step's name on its last
    # poll too (legacy.standing_step).
    assert document["current_step"]["name"] == "Procesar"
    assert document["current_step"]["order"] == 2 and document["current_step"]["id"]
    assert document["progress"]["percentage"] == 100.0
    assert document["progress"]["completed_steps"] == 2
    assert ISO_Z.match(document["created_at"]) and ISO_Z.match(document["updated_at"])
    assert document["tracking_urls"] == {
        "status": f"/executions/{execution_id}/status",
        "steps": f"/executions/{execution_id}/steps",
        "websocket": f"/ws/{execution_id}",
    }
    # The steps' outputs, merged; whole numbers stay whole numbers.
    context = document["context"]
    assert context["execution_id"] == execution_id
    assert context["dynamic_properties"]["sections_found"] == 8
    assert isinstance(context["dynamic_properties"]["sections_found"], int)
    assert context["dynamic_properties"]["ratio"] == 0.5
    assert context["dynamic_properties"]["slept_seconds"] == 0.6
    history = document["steps_history"]
    assert [(h["step_name"], h["status"], h["attempt"]) for h in history] == [
        ("Carga Usuario", "success", 1),
        ("Procesar", "success", 1),
    ]
    for entry in history:
        assert set(entry) >= HISTORY_KEYS
        assert ISO_Z.match(entry["started_at"]) and ISO_Z.match(entry["finished_at"])
    assert history[0]["duration_seconds"] >= 0.6
    assert history[0]["input_payload"]["nombre_documento"] == "documento.pdf"
    assert "manual" not in history[0]["input_payload"]  # the mode, not part of the document
    assert history[1]["output_payload"] == {"sections_found": 8, "ratio": 0.5, "success": True}


async def test_synchronous_execute_returns_the_final_status_within_the_bound(api: Api) -> None:
    workflow_id = await api.workflow({"name": "repeat", "handler": "echo"})
    status, document = await api.call(
        "POST", "/execute/", {"workflow_id": workflow_id, "data": {"echo": {"pages": 4}}}
    )
    assert status == 200, document
    assert document["status"] == "completed"
    assert document["progress"]["is_completed"] is True
    assert document["context"]["dynamic_properties"] == {"pages": 4, "success": True}


async def test_synchronous_execute_past_the_bound_answers_202_with_last_seq(
    api: Api, gateway: Any
) -> None:
    workflow_id = await api.workflow(sleep_step())
    status, answer = await api.call(
        "POST", "/execute/", {"workflow_id": workflow_id, "data": {"seconds": 4}}
    )
    assert status == 202, answer
    assert answer["status"] == "running"
    assert answer["last_seq"] >= 2  # workflow_started, step_started, progress…
    assert answer["websocket_url"] == (
        f"/ws/{answer['execution_id']}?access_token={answer['watch_token']}"
    )
    # Nothing is lost: watching from last_seq continues exactly after it (the contract's
    # `?after_seq=` appended to websocket_url as it comes, a second `?` and all).
    async with api.session.ws_connect(
        f"{gateway.ws_url}{answer['websocket_url']}?after_seq={answer['last_seq']}"
    ) as ws:
        first = await ws.receive_json(timeout=10)
    assert first["seq"] == answer["last_seq"] + 1
    status, _ = await api.call("POST", f"/executions/{answer['execution_id']}/cancel", {})
    assert status == 200


async def test_steps_listing_shows_every_step_and_attempt(api: Api) -> None:
    workflow_id = await api.workflow(
        {
            "name": "flaky",
            "handler": "fail",
            "retry": {"max_attempts": 2, "initial_backoff_seconds": 0.1},
        },
        {"name": "never", "handler": "echo"},
    )
    execution_id = await api.start(workflow_id, {"message": "no luck"})
    final = await api.wait_terminal(execution_id)
    assert final["status"] == "failed"
    assert final["progress"]["is_failed"] and final["progress"]["failed_steps"] == 1
    assert final["error"]["step_name"] == "flaky"
    assert [(h["step_name"], h["status"], h["attempt"]) for h in final["steps_history"]] == [
        ("flaky", "failed", 1),
        ("flaky", "failed", 2),
    ]
    status, listing = await api.call("GET", f"/executions/{execution_id}/steps")
    assert status == 200
    assert listing["execution_id"] == execution_id
    assert [(s["name"], s["handler"], s["order"], s["state"]) for s in listing["steps"]] == [
        ("flaky", "fail", 1, "failed"),
        ("never", "echo", 2, "pending"),
    ]
    assert [a["attempt"] for a in listing["steps"][0]["attempts"]] == [1, 2]
    assert listing["steps"][1]["attempts"] == []


async def test_workflow_definitions_round_trip(api: Api) -> None:
    definition = {
        "name": "Procesar Documentos",
        "description": "decode, validate, store",
        "steps": [
            {
                "name": "decode",
                "handler": "echo",
                "timeout_seconds": 60,
                "heartbeat_timeout_seconds": 10,
                "schedule_to_start_timeout_seconds": 300,
                "retry": {
                    "max_attempts": 2,
                    "initial_backoff_seconds": 0.5,
                    "backoff_multiplier": 3,
                },
            }
        ],
    }
    status, created = await api.call("POST", "/workflows", definition)
    assert status == 201, created
    workflow_id = created["workflow_id"]
    assert created["steps"][0]["retry"]["max_attempts"] == 2
    assert created["steps"][0]["timeout_seconds"] == 60
    assert created["steps"][0]["schedule_to_start_timeout_seconds"] == 300
    status, fetched = await api.call("GET", f"/workflows/{workflow_id}")
    assert status == 200 and fetched == created
    status, listed = await api.call("GET", "/workflows")
    assert status == 200
    assert created in listed["workflows"]


async def test_unknown_handler_is_refused_with_the_handler_named(api: Api) -> None:
    status, body = await api.call(
        "POST", "/workflows", {"name": "bad", "steps": [{"name": "a", "handler": "nope"}]}
    )
    assert status == 422
    assert body["error"]["details"]["field"] == "steps[0].handler"
    assert "'nope'" in body["error"]["message"]


async def test_unknown_ids_get_404_with_one_shape(api: Api) -> None:
    answers = [
        await api.call("GET", "/executions/no-such-id/status"),
        await api.call("GET", "/executions/no-such-id/steps"),
        await api.call("GET", "/workflows/no-such-id"),
        await api.call("POST", "/workflows/no-such-id/execute-async", {}),
        await api.call("POST", "/execute-async/", {"workflow_id": "no-such-id"}),
        await api.call("POST", "/executions/no-such-id/cancel"),
        await api.call("GET", "/executions/" + "x" * 300 + "/status"),
        await api.call("GET", "/no/such/path"),
    ]
    for status, body in answers:
        assert status == 404, body
        assert set(body) == {"error"}
        assert set(body["error"]) == {"code", "message", "details"}
    codes = {body["error"]["code"] for _, body in answers}
    assert codes == {"EXECUTION_NOT_FOUND", "WORKFLOW_NOT_FOUND", "NOT_FOUND"}


async def test_manual_mode_waits_before_each_step_until_advanced(api: Api) -> None:
    workflow_id = await api.workflow({"name": "first", "handler": "echo"})
    status, started = await api.call(
        "POST", f"/workflows/{workflow_id}/execute-async", {"echo": {"a": 1}, "manual": True}
    )
    assert status == 202
    execution_id = started["execution_id"]
    document = await api.status(execution_id)
    assert document["mode"] == "manual" and document["status"] == "waiting"
    assert document["current_step"]["name"] == "first"
    status, advanced = await api.call(
        "POST", f"/executions/{execution_id}/advance", {"data": {"approved_by": "ana"}}
    )
    assert status == 200, advanced
    final = await api.wait_terminal(execution_id)
    assert final["status"] == "completed"
    assert final["context"]["dynamic_properties"] == {"approved_by": "ana", "a": 1, "success": True}
    status, body = await api.call("POST", f"/executions/{execution_id}/advance")
    assert status == 409 and body["error"]["code"] == "EXECUTION_NOT_WAITING"


async def test_cancel_stops_a_run_and_a_second_cancel_conflicts(api: Api) -> None:
    workflow_id = await api.workflow(sleep_step())
    execution_id = await api.start(workflow_id, {"seconds": 10})
    status, document = await api.call(
        "POST", f"/executions/{execution_id}/cancel", {"reason": "user asked"}
    )
    assert status == 200
    assert document["status"] == "cancelled" and document["progress"]["is_failed"]
    assert document["error"]["message"] == "user asked"
    status, body = await api.call("POST", f"/executions/{execution_id}/cancel")
    assert status == 409 and body["error"]["code"] == "EXECUTION_TERMINAL"


async def test_idempotency_key_starts_one_execution_for_ten_concurrent_requests(
    api: Api, gw_stack: GatewayStack
) -> None:
    workflow_id = await api.workflow({"name": "once", "handler": "echo"})
    document = {"workflow_id": workflow_id, "data": {"uuid_proceso": "proceso_123"}}
    headers = {"Idempotency-Key": "order-42-" + workflow_id}
    answers = await asyncio.gather(
        *(api.call("POST", "/execute-async/", document, headers=headers) for _ in range(10))
    )
    assert {status for status, _ in answers} == {202}
    assert len({body["execution_id"] for _, body in answers}) == 1
    listed = await gw_stack.client.executions.ListExecutions(
        es.ListExecutionsRequest(workflow_id=workflow_id), timeout=10
    )
    assert len(listed.executions) == 1
    # The same key for another request is a conflict, and names the execution it belongs to.
    other = {"workflow_id": workflow_id, "data": {"uuid_proceso": "proceso_999"}}
    status, body = await api.call("POST", "/execute-async/", other, headers=headers)
    assert status == 409
    assert body["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    assert body["error"]["details"]["execution_id"] == answers[0][1]["execution_id"]


async def test_health_says_the_engine_serves(api: Api) -> None:
    status, body = await api.call("GET", "/health")
    assert status == 200
    assert body["status"] == "ok" and body["engine"] == "serving"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_other_methods_get_405_with_allow(api: Api, method: str) -> None:
    status, body = await api.call(method, "/workflows")
    assert status == 405
    assert body["error"]["code"] == "METHOD_NOT_ALLOWED"
