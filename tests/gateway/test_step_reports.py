"""Step runners that speak HTTP: progress and completion through the gateway, proven by the
attempt token the engine handed the runner (`X-Attempt-Token`)."""

from __future__ import annotations

import aiohttp

from services.auth import RUNNER
from tests.gateway.harness import Api, GatewayStack
from tests.stack import token

# The step runner's own credentials, besides the attempt token that binds it to one attempt.
AS_RUNNER = {"Authorization": f"Bearer {token(RUNNER)}"}

EXTERNAL = {"name": "fetch_user", "handler": "external", "heartbeat_timeout_seconds": 10}


async def test_http_step_runner_reports_progress_and_completion(
    api: Api, gw_stack: GatewayStack
) -> None:
    workflow_id = await api.workflow(EXTERNAL, {"name": "after", "handler": "echo"})
    execution_id = await api.start(workflow_id, {"user_id": 7})
    attempt = await gw_stack.external.next_attempt(execution_id)
    assert attempt.step_name == "fetch_user" and attempt.attempt == 1
    token = {**AS_RUNNER, "X-Attempt-Token": attempt.attempt_token}
    base = f"/executions/{execution_id}/steps/fetch_user"

    status, reply = await api.call(
        "POST",
        f"{base}/progress",
        {
            "percentage": 50,
            "message": "Procesando documento...",
            "current_task": "Extrayendo texto",
            "estimated_remaining_seconds": 120,
            "custom_data": {"pages_processed": 5, "total_pages": 10},
        },
        headers=token,
    )
    assert status == 200, reply
    assert reply == {
        "execution_id": execution_id,
        "step_name": "fetch_user",
        "accepted": True,
        "cancel_requested": False,
    }
    document = await api.status(execution_id)
    assert document["progress"]["percentage"] == 25.0  # half of the first of two steps
    assert document["steps_history"][0]["last_progress"]["custom_data"] == {
        "pages_processed": 5,
        "total_pages": 10,
    }
    # A heartbeat only: no body.
    status, reply = await api.call("POST", f"{base}/progress", headers=token)
    assert status == 200 and reply["cancel_requested"] is False

    completion = {"success": True, "document_processed": True, "sections_found": 8}
    status, reply = await api.call("POST", f"{base}/complete", completion, headers=token)
    assert status == 200, reply
    # The same completion again is fine (a retry); another one is not.
    status, _ = await api.call("POST", f"{base}/complete", completion, headers=token)
    assert status == 200
    status, body = await api.call(
        "POST", f"{base}/complete", {"success": False, "error": "late"}, headers=token
    )
    assert status == 409 and body["error"]["code"] == "STALE_ATTEMPT"

    final = await api.wait_terminal(execution_id)
    assert final["status"] == "completed"
    assert final["steps_history"][0]["output_payload"] == completion
    assert final["context"]["dynamic_properties"]["sections_found"] == 8
    # After the end, progress from that attempt is refused and changes nothing.
    status, body = await api.call("POST", f"{base}/progress", {"percentage": 90}, headers=token)
    assert status == 409 and body["error"]["code"] == "STALE_ATTEMPT"
    assert (await api.status(execution_id))["status"] == "completed"


async def test_http_step_reports_need_the_right_token(api: Api, gw_stack: GatewayStack) -> None:
    workflow_id = await api.workflow(EXTERNAL)
    execution_id = await api.start(workflow_id)
    attempt = await gw_stack.external.next_attempt(execution_id)
    base = f"/executions/{execution_id}/steps/fetch_user"

    status, body = await api.call("POST", f"{base}/progress", {"percentage": 10}, headers=AS_RUNNER)
    assert status == 401 and body["error"]["code"] == "MISSING_ATTEMPT_TOKEN"
    status, body = await api.call(
        "POST",
        f"{base}/progress",
        {"percentage": 10},
        headers={**AS_RUNNER, "X-Attempt-Token": "forged"},
    )
    assert status == 409 and body["error"]["code"] == "STALE_ATTEMPT"
    status, body = await api.call(
        "POST",
        f"/executions/{execution_id}/steps/other/progress",
        {"percentage": 10},
        headers={**AS_RUNNER, "X-Attempt-Token": attempt.attempt_token},
    )
    assert status == 404
    status, body = await api.call(
        "POST",
        f"{base}/progress",
        {"percentage": 150},
        headers={**AS_RUNNER, "X-Attempt-Token": attempt.attempt_token},
    )
    assert status == 422 and body["error"]["details"]["field"] == "percentage"
    status, body = await api.call(
        "POST",
        f"{base}/progress",
        {"percent": 10},
        headers={**AS_RUNNER, "X-Attempt-Token": attempt.attempt_token},
    )
    assert status == 422 and body["error"]["details"]["field"] == "percent"
    status, body = await api.call(
        "POST", f"{base}/complete", {"done": True}, headers={**AS_RUNNER, "X-Attempt-Token": "x"}
    )
    assert status == 422 and body["error"]["details"]["field"] == "success"
    # None of it reached the log.
    document = await api.status(execution_id)
    assert document["steps_history"][0]["last_progress"] is None
    await api.call("POST", f"/executions/{execution_id}/cancel")


async def test_progress_reply_tells_a_cancelled_step_to_stop(
    api: Api, gw_stack: GatewayStack
) -> None:
    workflow_id = await api.workflow(EXTERNAL)
    execution_id = await api.start(workflow_id)
    attempt = await gw_stack.external.next_attempt(execution_id)
    token = {**AS_RUNNER, "X-Attempt-Token": attempt.attempt_token}
    base = f"/executions/{execution_id}/steps/fetch_user"
    status, _ = await api.call("POST", f"/executions/{execution_id}/cancel", {"reason": "stop"})
    assert status == 200
    status, reply = await api.call("POST", f"{base}/progress", {"percentage": 60}, headers=token)
    assert status == 200 and reply["cancel_requested"] is True


async def test_a_failed_http_step_fails_the_run_with_its_error(
    api: Api, gw_stack: GatewayStack
) -> None:
    workflow_id = await api.workflow({**EXTERNAL, "retry": {"max_attempts": 1}})
    execution_id = await api.start(workflow_id)
    attempt = await gw_stack.external.next_attempt(execution_id)
    status, _ = await api.call(
        "POST",
        f"/executions/{execution_id}/steps/fetch_user/complete",
        {"success": False, "error": {"type": "ValueError", "message": "bad user"}},
        headers={**AS_RUNNER, "X-Attempt-Token": attempt.attempt_token},
    )
    assert status == 200
    final = await api.wait_terminal(execution_id)
    assert final["status"] == "failed"
    assert final["error"]["message"] == "bad user" and final["error"]["type"] == "ValueError"
    assert final["steps_history"][0]["status"] == "failed"


async def test_an_attempt_token_alone_is_enough_for_that_attempts_reports(
    api: Api, gw_stack: GatewayStack
) -> None:
    """A runner the engine pushed work to holds no deployment credential: its attempt token
    admits its own reports, and nothing else."""
    workflow_id = await api.workflow(EXTERNAL)
    execution_id = await api.start(workflow_id)
    attempt = await gw_stack.external.next_attempt(execution_id)
    base = f"/executions/{execution_id}/steps/fetch_user"
    only_token = {"X-Attempt-Token": attempt.attempt_token}
    async with aiohttp.ClientSession() as anonymous:
        pushed = Api(anonymous, api.base)
        status, reply = await pushed.call(
            "POST", f"{base}/progress", {"percentage": 40}, headers=only_token
        )
        assert status == 200 and reply["cancel_requested"] is False
        # Another route is not admitted by it.
        status, body = await pushed.call(
            "GET", f"/executions/{execution_id}/status", headers=only_token
        )
        assert (status, body["error"]["code"]) == (401, "NO_CREDENTIALS")
        # A bearer that proves nothing is refused, attempt token or not.
        status, body = await pushed.call(
            "POST",
            f"{base}/progress",
            {"percentage": 50},
            headers={**only_token, "Authorization": "Bearer nonsense"},
        )
        assert (status, body["error"]["code"]) == (401, "BAD_TOKEN")
        # A forged token is refused as it is with a runner's credential, and writes nothing.
        before = await api.status(execution_id)
        for route in ("progress", "complete"):
            status, body = await pushed.call(
                "POST",
                f"{base}/{route}",
                {"percentage": 90} if route == "progress" else {"success": True},
                headers={"X-Attempt-Token": "forged"},
            )
            assert (status, body["error"]["code"]) == (409, "STALE_ATTEMPT")
        after = await api.status(execution_id)
        assert after["steps_history"] == before["steps_history"]
        assert after["steps_history"][0]["last_progress"]["percentage"] == 40

        status, reply = await pushed.call(
            "POST", f"{base}/complete", {"success": True, "user": "ana"}, headers=only_token
        )
        assert status == 200 and reply["accepted"] is True
    final = await api.wait_terminal(execution_id)
    assert final["status"] == "completed"
    assert final["context"]["dynamic_properties"]["user"] == "ana"
