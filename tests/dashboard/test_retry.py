"""Retry on failed and cancelled runs (issue 16), from the execution view: the button (for a
client or admin token, none for a watch token) takes the run back to running, in the same
execution, and the page follows it live past the end it had shown; a double click retries
once; another step may be chosen to run again from; a retry the gateway refuses is shown as
it said, and the page catches up with what the run did meanwhile.

Deterministic: the step that must be held running is an `external` one, taken by a runner
the test drives; "fail" fails at once; sleeping branches sleep far longer than the test
looks at them; every wait is on a condition."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import aiohttp
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from playwright.async_api import Page, expect

from services.auth import WATCHER
from tests.dashboard.attempts import complete
from tests.dashboard.conftest import Dashboard
from tests.gateway.external_runner import HANDLER as EXTERNAL
from tests.gateway.external_runner import ExternalRunner
from tests.stack import token

pytestmark = pytest.mark.timeout(60)

ONCE = {"max_attempts": 1}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def tag() -> str:
    return uuid.uuid4().hex[:8]


async def history(page: Page) -> list[tuple[str, str, str]]:
    """The history table's rows: (step, attempt, status), oldest first."""
    rows: list[list[str]] = await page.locator("table.history tbody tr").evaluate_all(
        "rows => rows.map(r => [r.dataset.step, r.dataset.attempt, r.dataset.status])"
    )
    return [(step, attempt, status) for step, attempt, status in rows]


async def status_document(dashboard: Dashboard, execution_id: str) -> dict[str, object]:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {token()}"}) as http,
        http.get(f"{dashboard.gateway.url}/executions/{execution_id}/status") as response,
    ):
        assert response.status == 200
        body: dict[str, object] = await response.json()
        return body


async def test_a_failed_run_is_retried_from_the_page_and_followed_live(
    page: Page, dashboard: Dashboard, external: ExternalRunner, artifacts: Path
) -> None:
    client = dashboard.stack.client
    workflow = await client.create_workflow(
        f"reintento-{tag()}",
        {"name": "uno", "handler": "echo"},
        {"name": "externo", "handler": EXTERNAL, "retry": ONCE},
    )
    execution_id = (await client.start(workflow.workflow_id, {})).execution_id
    await complete(client, await external.next_attempt(execution_id), error="service down")
    assert (await client.wait_terminal(execution_id)).status == ex_pb.EXECUTION_STATUS_FAILED

    # Opened after the end: the page's feed stopped there.
    await page.goto(dashboard.signed_in_url)
    await page.goto(f"{dashboard.url}#/executions/{execution_id}")
    view = page.locator("article.execution")
    connection = page.locator(".execution .connection")
    await expect(view).to_have_attribute("data-status", "failed")
    await expect(connection).to_have_attribute("data-phase", "finished")
    await expect(page.locator(".problem")).to_have_text("Failed in externo: service down")
    await page.get_by_text("Retry from another step").click()
    choices = page.get_by_label("Step to run again, with every step that waits for it")
    await expect(choices.locator("option")).to_have_text(
        ["The step that failed (externo)", "uno", "externo"]
    )
    await expect(choices).to_have_value("")
    await page.screenshot(path=artifacts / "dashboard-retry.png", full_page=True)

    # A double click: one retry, with a request id of the page's.
    retry = page.get_by_role("button", name="Retry execution")
    async with page.expect_request(f"**/executions/{execution_id}/retry") as sent:
        await retry.dblclick()
    body = (await sent.value).post_data_json
    assert isinstance(body, dict) and "from_step" not in body, body
    assert UUID.match(body["request_id"]), body

    # Back to running, live, in the same execution: its log goes on past the failure.
    attempt = await external.next_attempt(execution_id)
    assert attempt.step_name == "externo"
    externo = page.locator('.step[data-step="externo"]')
    await expect(view).to_have_attribute("data-status", "running")
    await expect(externo).to_have_attribute("data-state", "running")
    await expect(connection).to_have_attribute("data-phase", "live")
    await expect(page.locator(".problem")).to_be_hidden()
    await expect(page.locator(".execution-head .retries")).to_have_text(" · retried once")
    await expect(retry).to_be_hidden()
    await expect(page.get_by_role("button", name="Cancel execution…")).to_be_enabled()
    retried = page.locator('.log li[data-event="workflow_retried"] .log-detail')
    await expect(retried).to_have_text("from externo · runs again: externo")

    await complete(client, attempt)
    await expect(view).to_have_attribute("data-status", "completed")
    await expect(connection).to_have_attribute("data-phase", "finished")
    # The step before was not run again; the failed attempt stays in the history.
    assert await history(page) == [
        ("uno", "1", "success"),
        ("externo", "1", "failed"),
        ("externo", "2", "success"),
    ]
    await expect(externo.locator(".step-attempts")).to_have_text("2")
    assert (await status_document(dashboard, execution_id))["retries"] == 1
    # Every event after the page's snapshot, once, in order, none missing.
    snapshot_seq = int(
        await page.locator("[data-snapshot-seq]").get_attribute("data-snapshot-seq") or ""
    )
    events = await client.events(execution_id, snapshot_seq)
    shown = await page.locator(".log li[data-seq]").evaluate_all(
        "rows => rows.map(r => Number(r.dataset.seq)).reverse()"
    )
    assert shown == [e.seq for e in events]


async def test_a_run_that_fails_again_can_be_retried_from_another_step(
    page: Page, dashboard: Dashboard
) -> None:
    """ "fail" always fails: each retry takes the run back to running and it fails again,
    counted each time; the second runs again from the first step, chosen on the page."""
    client = dashboard.stack.client
    workflow = await client.create_workflow(
        f"reintento-{tag()}",
        {"name": "uno", "handler": "echo"},
        {"name": "falla", "handler": "fail", "retry": ONCE},
    )
    execution_id = (await client.start(workflow.workflow_id, {})).execution_id
    await client.wait_terminal(execution_id)

    await page.goto(dashboard.signed_in_url)
    await page.goto(f"{dashboard.url}#/executions/{execution_id}")
    view = page.locator("article.execution")
    await expect(view).to_have_attribute("data-status", "failed")
    failures = page.locator('.log li[data-event="workflow_failed"]')
    retries = page.locator(".execution-head .retries")

    await page.get_by_role("button", name="Retry execution").click()
    await expect(failures).to_have_count(1)  # the one after the page opened
    await expect(view).to_have_attribute("data-status", "failed")
    await expect(retries).to_have_text(" · retried once")
    assert await history(page) == [
        ("uno", "1", "success"),
        ("falla", "1", "failed"),
        ("falla", "2", "failed"),
    ]

    # From the first step this time: it runs again too. (A new end, a new request id: the
    # one of the first retry would be answered without running anything.)
    await page.get_by_text("Retry from another step").click()
    await page.get_by_label("Step to run again, with every step that waits for it").select_option(
        "uno"
    )
    await page.get_by_role("button", name="Retry from uno").click()
    await expect(failures).to_have_count(2)
    await expect(retries).to_have_text(" · retried 2 times")
    await expect(view).to_have_attribute("data-status", "failed")
    assert await history(page) == [
        ("uno", "1", "success"),
        ("falla", "1", "failed"),
        ("falla", "2", "failed"),
        ("uno", "2", "success"),
        ("falla", "3", "failed"),
    ]
    retried = page.locator('.log li[data-event="workflow_retried"] .log-detail')
    await expect(retried.first).to_have_text("from uno · runs again: uno, falla")
    assert (await status_document(dashboard, execution_id))["retries"] == 2


async def test_a_cancelled_run_is_retried_and_its_branches_run_again(
    page: Page, dashboard: Dashboard
) -> None:
    client = dashboard.stack.client
    workflow = await client.create_workflow(
        f"rombo-{tag()}",
        {"name": "a", "handler": "echo"},
        {"name": "b", "handler": "sleep", "after": ["a"]},
        {"name": "c", "handler": "sleep", "after": ["a"]},
        {"name": "d", "handler": "echo", "after": ["b", "c"]},
    )
    # Far longer than the test looks at them: it cancels them.
    execution_id = (await client.start(workflow.workflow_id, {"seconds": 600})).execution_id
    await page.goto(dashboard.signed_in_url)
    await page.goto(f"{dashboard.url}#/executions/{execution_id}")
    view = page.locator("article.execution")
    running_now = page.locator(".running-now")
    await expect(running_now).to_have_text("Running at once: b and c")

    await page.get_by_role("button", name="Cancel execution…").click()
    await page.get_by_role("button", name="Confirm cancellation").click()
    await expect(view).to_have_attribute("data-status", "cancelled")
    await expect(running_now).to_be_hidden()
    await page.get_by_text("Retry from another step").click()
    choices = page.get_by_label("Step to run again, with every step that waits for it")
    await expect(choices).to_have_value("")
    await expect(choices.get_by_role("option", selected=True)).to_have_text(
        "The first step not done"
    )

    await page.get_by_role("button", name="Retry execution").click()
    await expect(view).to_have_attribute("data-status", "running")
    await expect(running_now).to_have_text("Running at once: b and c")
    for name in "bc":
        step = page.locator(f'.step[data-step="{name}"]')
        await expect(step).to_have_attribute("data-state", "running")
        await expect(step.locator(".step-attempts")).to_have_text("2")
    await expect(page.locator('.step[data-step="a"] .step-attempts')).to_have_text("1")
    await expect(page.locator(".execution-head .retries")).to_have_text(" · retried once")

    await client.executions.CancelExecution(
        es.CancelExecutionRequest(execution_id=execution_id, reason="done looking"), timeout=10
    )
    await expect(view).to_have_attribute("data-status", "cancelled")


async def test_a_refused_retry_is_shown_and_the_page_catches_up(
    refusals: tuple[Page, list[str]], dashboard: Dashboard, external: ExternalRunner
) -> None:
    """Retried elsewhere (the CLI, another tab) after the page showed it failed: the page's
    retry is refused (409), it says so, and shows the run as it now is."""
    page, expected = refusals
    client = dashboard.stack.client
    workflow = await client.create_workflow(
        f"reintento-{tag()}", {"name": "externo", "handler": EXTERNAL, "retry": ONCE}
    )
    execution_id = (await client.start(workflow.workflow_id, {})).execution_id
    await complete(client, await external.next_attempt(execution_id), error="service down")
    await client.wait_terminal(execution_id)

    await page.goto(dashboard.signed_in_url)
    await page.goto(f"{dashboard.url}#/executions/{execution_id}")
    view = page.locator("article.execution")
    await expect(view).to_have_attribute("data-status", "failed")
    await expect(page.locator(".execution .connection")).to_have_attribute("data-phase", "finished")

    await client.executions.RetryExecution(
        es.RetryExecutionRequest(execution_id=execution_id), timeout=10
    )
    attempt = await external.next_attempt(execution_id)
    expected.append("409")
    await page.get_by_role("button", name="Retry execution").click()
    alert = page.get_by_role("alert").filter(has_text="Not retried")
    await expect(alert).to_have_text(re.compile(r"^Not retried: .*running.* \(HTTP 409, \w+\)$"))
    await expect(view).to_have_attribute("data-status", "running")
    await expect(page.locator('.step[data-step="externo"]')).to_have_attribute(
        "data-state", "running"
    )
    await expect(alert).to_be_visible()  # what happened stays said

    await complete(client, attempt)
    await expect(view).to_have_attribute("data-status", "completed")
    assert (await status_document(dashboard, execution_id))["retries"] == 1


async def test_a_watch_token_is_offered_no_retry(page: Page, dashboard: Dashboard) -> None:
    client = dashboard.stack.client
    workflow = await client.create_workflow(
        f"reintento-{tag()}", {"name": "falla", "handler": "fail", "retry": ONCE}
    )
    execution_id = (await client.start(workflow.workflow_id, {})).execution_id
    await client.wait_terminal(execution_id)

    await page.goto(f"{dashboard.url}#token={token(WATCHER, execution_id=execution_id)}")
    view = page.locator("article.execution")
    await expect(view).to_have_attribute("data-status", "failed")
    await expect(page.locator(".read-only")).to_have_text(
        "Watching only: this token may follow the execution, not cancel, advance or retry it."
    )
    # The one button: the events before the page opened.
    buttons = page.locator(".execution").get_by_role("button")
    await expect(buttons).to_have_text([re.compile(r"^Show the \d+ earlier events?$")])
    await expect(page.get_by_text("Retry from another step")).to_be_hidden()
