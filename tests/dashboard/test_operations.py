"""Operating on executions from the page (issue 13): the recent list filtered by status and
workflow (kept in the address, so a reload shows the same list, and paged with the filters),
the cancel and advance buttons for a token whose role may use them (none for a watch token,
and a refusal shown as the gateway gave it), and the execution's timeline: every event once,
in seq order, live and across a dropped connection, the events before the page opened read
on request, and a run of thousands of progress reports folded so the page stays small.

Deterministic: steps the test must hold are run by a runner the test drives (`external`), or
wait for an advance (manual mode); the page's sockets go through Playwright's routing when
the test cuts or holds them; every wait is on a page condition."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import step_report_service_pb2 as sr
from playwright.async_api import Page, WebSocketRoute, expect

from services.auth import RUNNER, WATCHER
from services.gateway import legacy
from tests.dashboard.attempts import complete, report
from tests.dashboard.conftest import Dashboard, HeldSockets
from tests.gateway.external_runner import HANDLER as EXTERNAL
from tests.gateway.external_runner import ExternalRunner
from tests.gateway.harness import Gateway, start_gateway
from tests.stack import Client, Stack, start_stack, token, wait_for_handlers

pytestmark = pytest.mark.timeout(90)

# What timeline.js keeps of one attempt's progress reports.
PROGRESS_ROWS = 50
# The most progress events an execution may log (ENGINE_MAX_PROGRESS_EVENTS), and how many
# the test's runner sends in one call.
FLOOD = 10_000
REPORTS_PER_CALL = 1000
ROWS = "#recent-list li[data-execution-id]"
LOG_ROWS = ".log li[data-seq]"


def tag() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class Flood:
    stack: Stack
    gateway: Gateway
    runner: ExternalRunner


@pytest.fixture
async def flood(mongo_server: str) -> AsyncIterator[Flood]:
    """A stack of its own whose engine logs progress as fast as it comes (the shared one
    logs 50 reports a second per attempt, as deployed), with a gateway and an external
    runner."""
    stack = await start_stack(
        mongo_server, f"flood{tag()}", progress_rate=1_000_000.0, progress_burst=FLOOD
    )
    try:
        gateway = await start_gateway(stack.engine.port)
        runner = ExternalRunner(stack.client.target, token(RUNNER))
        await runner.start()
        try:
            await wait_for_handlers(stack.client, {EXTERNAL})
            yield Flood(stack, gateway, runner)
        finally:
            await runner.stop()
            await gateway.stop()
    finally:
        await stack.stop()


async def listed(page: Page, expected: set[str]) -> None:
    """Until the recent list shows exactly these executions."""
    await page.wait_for_function(
        """expected => {
          const ids = [...document.querySelectorAll("#recent-list li[data-execution-id]")]
            .map(li => li.dataset.executionId);
          return ids.length === expected.length && expected.every(id => ids.includes(id));
        }""",
        arg=sorted(expected),
    )


async def log_seqs(page: Page) -> list[int]:
    """The seqs of the timeline's rows, top (newest) to bottom."""
    values: list[str] = await page.locator(LOG_ROWS).evaluate_all(
        "rows => rows.map(row => row.dataset.seq)"
    )
    return [int(v) for v in values]


async def snapshot_seq(page: Page) -> int:
    return int(await page.locator("[data-snapshot-seq]").get_attribute("data-snapshot-seq") or "")


async def report_many(client: Client, attempt: sq.StepTask, numbers: range) -> None:
    """Progress reports of the attempt in one call, logged in one commit."""
    reports = [ex_pb.StepProgress(percentage=100 * i / FLOOD, message=f"page {i}") for i in numbers]
    await client.reports.ReportStepProgress(
        sr.ReportStepProgressRequest(
            execution_id=attempt.execution_id,
            step_name=attempt.step_name,
            attempt_token=attempt.attempt_token,
            progress=reports[0],
            more_progress=reports[1:],
        ),
        timeout=30,
    )


# --- the recent list's filters ------------------------------------------------------------


async def test_the_list_filters_by_status_and_workflow_and_a_reload_keeps_them(
    page: Page, dashboard: Dashboard, artifacts: Path
) -> None:
    client = dashboard.stack.client
    run = tag()
    fine = await client.create_workflow(f"ops-{run}-eco", {"name": "eco", "handler": "echo"})
    failing = await client.create_workflow(
        f"ops-{run}-falla",
        {
            "name": "falla",
            "handler": "fail",
            "retry": {"max_attempts": 2, "initial_backoff_seconds": 0.05},
        },
    )
    completed = [(await client.start(fine.workflow_id, {"n": n})).execution_id for n in range(2)]
    failed = [(await client.start(failing.workflow_id, {"n": n})).execution_id for n in range(2)]
    waiting = (await client.start(fine.workflow_id, {"n": 9}, manual=True)).execution_id
    await client.executions.CancelExecution(
        es.CancelExecutionRequest(execution_id=waiting, reason="no longer needed"), timeout=10
    )
    for execution_id in [*completed, *failed, waiting]:
        await client.wait_terminal(execution_id)
    everything = {*completed, *failed, waiting}

    await page.goto(dashboard.signed_in_url)
    filters = page.get_by_role("search", name="Filter the executions")
    # This test's runs only, by a part of their workflows' names.
    await filters.get_by_label("Workflow name contains").fill(f"ops-{run}")
    await listed(page, everything)

    await filters.get_by_label("failed").check()
    await listed(page, set(failed))
    for row in await page.locator(ROWS).all():
        await expect(row).to_have_attribute("data-status", "failed")
    await filters.get_by_label("cancelled").check()
    await listed(page, {*failed, waiting})
    assert re.search(r"[?&]status=failed,cancelled(&|#|$)", page.url), page.url

    # One workflow, chosen from the tenant's: its cancelled run stays, the failed ones go.
    await filters.get_by_label("Workflow", exact=True).select_option(label=fine.name)
    await listed(page, {waiting})
    await filters.get_by_label("failed").uncheck()
    await filters.get_by_label("cancelled").uncheck()
    await filters.get_by_label("completed").check()
    await listed(page, set(completed))

    # A reload (and so a shared link) shows the same filters and the same list.
    await page.reload()
    filters = page.get_by_role("search", name="Filter the executions")
    await expect(filters.get_by_label("completed")).to_be_checked()
    await expect(filters.get_by_label("failed")).not_to_be_checked()
    await expect(filters.get_by_label("Workflow", exact=True)).to_have_value(fine.workflow_id)
    await expect(filters.get_by_label("Workflow name contains")).to_have_value(f"ops-{run}")
    await listed(page, set(completed))

    # A failed run's timeline shows its retry: read from the log, the page opened after it.
    await filters.get_by_role("button", name="Clear the filters").click()
    await expect(filters.get_by_label("completed")).not_to_be_checked()
    await expect(filters.get_by_label("Workflow name contains")).to_have_value("")
    await expect(page).to_have_url(f"{dashboard.url}#/")
    await page.goto(f"{dashboard.url}?status=failed&name=ops-{run}#/executions/{failed[0]}")
    await listed(page, set(failed))
    view = page.locator("article.execution")
    await expect(view).to_have_attribute("data-status", "failed")
    await expect(page.locator(".problem")).to_contain_text("Failed in falla")
    await page.get_by_role("button", name=re.compile(r"^Show the \d+ earlier events$")).click()
    await expect(page.locator(LOG_ROWS)).to_have_count(8)
    kinds = await page.locator(LOG_ROWS).evaluate_all(
        "rows => rows.map(r => [r.dataset.event, r.querySelector('.log-detail').textContent])"
    )
    kinds.reverse()
    assert [k for k, _ in kinds] == [
        "workflow_started",
        "step_queued",
        "step_started",
        "step_finished",
        "step_queued",
        "step_started",
        "step_finished",
        "workflow_failed",
    ]
    assert kinds[4][1].startswith("falla · attempt 2 (retry)"), kinds
    await page.screenshot(path=artifacts / "dashboard-filters.png", full_page=True)

    # A run cancelled before the page opened says why, as one cancelled live does.
    await page.goto(f"{dashboard.url}#/executions/{waiting}")
    await expect(view).to_have_attribute("data-status", "cancelled")
    await expect(page.locator(".problem")).to_have_text("Cancelled: no longer needed.")
    assert not await page.get_by_role("button", name=re.compile("Cancel|Run the next")).count()


async def test_older_executions_page_with_the_filters(page: Page, dashboard: Dashboard) -> None:
    client = dashboard.stack.client
    workflow = await client.create_workflow(f"ops-{tag()}-pages", {"name": "e", "handler": "echo"})
    started = [(await client.start(workflow.workflow_id, {"n": n})).execution_id for n in range(23)]
    for execution_id in started:
        await client.wait_terminal(execution_id)

    # A shared link to the filtered list, with the token `make run` prints.
    query = f"?status=completed&workflow_id={workflow.workflow_id}"
    await page.goto(f"{dashboard.url}{query}#token={token()}")
    await expect(page).to_have_url(f"{dashboard.url}{query}#/")  # the token left, not the filters
    await listed(page, set(started[-20:]))
    older = page.get_by_role("button", name="Show older executions")
    await older.click()
    await listed(page, set(started))
    await expect(older).to_be_hidden()
    asked: list[str] = await page.evaluate(
        "() => performance.getEntriesByType('resource').map(e => e.name)"
    )
    pages = [url for url in asked if "page_token=" in url]
    assert len(pages) == 1, asked
    assert "status=completed" in pages[0] and f"workflow_id={workflow.workflow_id}" in pages[0]
    # Each refresh from now on reads what is shown, in one call.
    await page.wait_for_function(
        "() => performance.getEntriesByType('resource').some(e => e.name.includes('limit=40&'))"
    )
    await expect(page.locator(ROWS)).to_have_count(len(started))


# --- cancel and advance -------------------------------------------------------------------


async def test_the_cancel_button_cancels_a_running_execution(
    page: Page, dashboard: Dashboard, external: ExternalRunner, artifacts: Path
) -> None:
    client = dashboard.stack.client
    workflow = await client.create_workflow(
        f"ops-{tag()}-cancel", {"name": "larga", "handler": EXTERNAL}
    )
    execution = await client.start(workflow.workflow_id, {})
    attempt = await external.next_attempt(execution.execution_id)

    await page.goto(dashboard.signed_in_url)
    await page.goto(f"{dashboard.url}#/executions/{execution.execution_id}")
    view = page.locator("article.execution")
    await expect(view).to_have_attribute("data-status", "running")
    await report(client, attempt, range(1, 3), total=10)
    await expect(page.locator('.step[data-step="larga"] .step-message')).to_have_text("page 2")
    await expect(page.get_by_role("button", name=re.compile("^Run the next step"))).to_be_hidden()

    await page.get_by_role("button", name="Cancel execution…").click()
    form = page.get_by_role("form", name="Cancel the execution")
    await form.get_by_label("Reason (optional)").fill("wrong document")
    await page.screenshot(path=artifacts / "dashboard-cancel.png", full_page=True)
    await form.get_by_role("button", name="Confirm cancellation").click()

    await expect(view).to_have_attribute("data-status", "cancelled")
    await expect(page.locator("#execution-status")).to_have_text("cancelled")
    await expect(page.locator(".problem")).to_have_text("Cancelled: wrong document.")
    await expect(page.locator('.step[data-step="larga"]')).to_have_attribute(
        "data-state", "cancelled"
    )
    cancelled = page.locator('.log li[data-event="workflow_cancelled"] .log-detail')
    await expect(cancelled).to_have_text("wrong document")
    await expect(page.get_by_role("button", name=re.compile("^Cancel"))).to_have_count(0)
    final = await client.get(execution.execution_id)
    assert final.status == ex_pb.EXECUTION_STATUS_CANCELLED


async def test_the_advance_button_runs_each_step_with_its_data(
    page: Page, dashboard: Dashboard
) -> None:
    client = dashboard.stack.client
    workflow = await client.create_workflow(
        f"ops-{tag()}-manual",
        {"name": "revisar", "handler": "echo"},
        {"name": "archivar", "handler": "echo"},
    )
    execution = await client.start(workflow.workflow_id, {"doc": "a"}, manual=True)
    execution_id = execution.execution_id
    await page.goto(dashboard.signed_in_url)
    await page.goto(f"{dashboard.url}#/executions/{execution_id}")
    view = page.locator("article.execution")
    await expect(view).to_have_attribute("data-status", "waiting")

    # Data that is not a JSON object is refused on the page, before anything is sent.
    await page.get_by_text("Data for the next step").click()
    data = page.get_by_label("A JSON object, merged into the execution's context")
    await data.fill("[1, 2]")
    await page.get_by_role("button", name="Run the next step (revisar)").click()
    alert = page.locator(".action-status")
    await expect(alert).to_contain_text("the data must be a JSON object")
    await expect(view).to_have_attribute("data-status", "waiting")

    await data.fill('{"approved": true, "by": "ana"}')
    await page.get_by_role("button", name="Run the next step (revisar)").click()
    await expect(alert).to_be_hidden()
    # The first step ran, and the run waits again: the same button, for the next step.
    second = page.get_by_role("button", name="Run the next step (archivar)")
    await expect(second).to_be_enabled()
    await expect(page.locator('.step[data-step="revisar"]')).to_have_attribute(
        "data-state", "success"
    )
    advanced = page.locator('.log li[data-event="workflow_advanced"] .log-detail')
    await expect(advanced).to_have_text("with approved, by")
    await second.click()
    await expect(view).to_have_attribute("data-status", "completed")
    await expect(page.get_by_role("button", name=re.compile("^Run the next step"))).to_have_count(0)

    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {token()}"}) as http,
        http.get(f"{dashboard.gateway.url}/executions/{execution_id}/status") as response,
    ):
        status = await response.json()
    assert status["context"]["dynamic_properties"]["approved"] is True
    assert status["context"]["dynamic_properties"]["by"] == "ana"


async def test_a_refused_advance_is_shown_as_the_gateway_said(
    refusals: tuple[Page, list[str]], dashboard: Dashboard
) -> None:
    """The run is cancelled elsewhere while the page, its socket held, still shows it waiting:
    the advance it offers is refused (409), and the page says so."""
    page, expected = refusals
    client = dashboard.stack.client
    workflow = await client.create_workflow(
        f"ops-{tag()}-refused", {"name": "uno", "handler": "echo"}
    )
    execution_id = (await client.start(workflow.workflow_id, {}, manual=True)).execution_id

    held: list[Callable[[], Any]] = []
    hold = asyncio.Event()

    async def through(route: WebSocketRoute) -> None:
        server = route.connect_to_server()

        def forward(message: str | bytes) -> None:
            if hold.is_set():
                held.append(lambda: route.send(message))
            else:
                route.send(message)

        server.on_message(forward)

    await page.route_web_socket(re.compile(r"/ws/"), through)
    await page.goto(dashboard.signed_in_url)
    await page.goto(f"{dashboard.url}#/executions/{execution_id}")
    view = page.locator("article.execution")
    await expect(view).to_have_attribute("data-status", "waiting")
    await expect(page.locator(".execution .connection")).to_have_attribute("data-phase", "live")

    hold.set()
    await client.executions.CancelExecution(
        es.CancelExecutionRequest(execution_id=execution_id, reason="elsewhere"), timeout=10
    )
    expected.append("409")
    await page.get_by_role("button", name="Run the next step (uno)").click()
    alert = page.get_by_role("alert").filter(has_text="Not advanced")
    await expect(alert).to_have_text(re.compile(r"^Not advanced: .*cancelled.* \(HTTP 409, \w+\)$"))
    await expect(view).to_have_attribute("data-status", "waiting")  # nothing came yet

    hold.clear()
    for send in held:
        send()
    await expect(view).to_have_attribute("data-status", "cancelled")
    await expect(page.get_by_role("button", name=re.compile("^Run the next step"))).to_have_count(0)
    await expect(alert).to_be_visible()  # what happened stays said


async def test_a_watch_token_follows_its_execution_without_buttons(
    page: Page, dashboard: Dashboard
) -> None:
    client = dashboard.stack.client
    workflow = await client.create_workflow(
        f"ops-{tag()}-watch", {"name": "uno", "handler": "echo"}
    )
    execution_id = (await client.start(workflow.workflow_id, {}, manual=True)).execution_id
    watch = token(WATCHER, execution_id=execution_id)

    # The page asks nothing a watch token may not have (a refusal would fail the test).
    await page.goto(f"{dashboard.url}#token={watch}")
    await expect(page).to_have_url(f"{dashboard.url}#/executions/{execution_id}")
    view = page.locator("article.execution")
    await expect(view).to_have_attribute("data-status", "waiting")
    await expect(page.locator(".execution .connection")).to_have_attribute("data-phase", "live")
    await expect(page.locator("#whoami")).to_have_text("watcher · tenant default")
    await expect(page.locator(".read-only")).to_be_visible()
    # The one button: the events before the page opened, read with the watch token too.
    earlier = page.locator(".execution").get_by_role("button")
    await expect(earlier).to_have_text(re.compile(r"^Show the \d+ earlier events?$"))
    await earlier.click()
    await expect(page.locator(".execution").get_by_role("button")).to_have_count(0)
    waiting = page.locator('.log li[data-event="workflow_waiting"] .log-detail')
    await expect(waiting).to_have_text("before uno")
    for hidden in ["#upload-card", "#queue-card", "#recent-filters"]:
        await expect(page.locator(hidden)).to_be_hidden()

    # Followed live over a socket opened with the tab's own watch token.
    await client.executions.AdvanceExecution(
        es.AdvanceExecutionRequest(execution_id=execution_id), timeout=10
    )
    await expect(view).to_have_attribute("data-status", "completed")
    await expect(page.locator(".execution .connection")).to_have_attribute("data-phase", "finished")
    await expect(page.locator(".read-only")).to_be_visible()


# --- the timeline -------------------------------------------------------------------------


async def test_the_timeline_shows_every_event_once_in_order_across_a_reconnect(
    page: Page, dashboard: Dashboard, external: ExternalRunner
) -> None:
    client = dashboard.stack.client
    workflow = await client.create_workflow(
        f"ops-{tag()}-timeline", {"name": "externo", "handler": EXTERNAL}
    )
    execution_id = (await client.start(workflow.workflow_id, {})).execution_id
    attempt = await external.next_attempt(execution_id)

    sockets = HeldSockets()
    await sockets.watch(page)
    await page.goto(dashboard.signed_in_url)
    await page.goto(f"{dashboard.url}#/executions/{execution_id}")
    connection = page.locator(".execution .connection")
    await expect(connection).to_have_attribute("data-phase", "live")
    opened_at = await snapshot_seq(page)

    # Live: each report at the top as it comes.
    await report(client, attempt, range(1, 6), total=10)
    newest = page.locator(LOG_ROWS).first
    await expect(newest.locator(".log-detail")).to_have_text("externo · 50 % · page 5")
    await expect(page.locator(LOG_ROWS)).to_have_count(5)
    shown = await log_seqs(page)
    assert shown == list(range(opened_at + 5, opened_at, -1)), shown

    # Cut off; the run goes on meanwhile; the page resumes after the last seq it showed.
    await sockets.drop_first()
    await expect(connection).to_have_attribute("data-phase", re.compile("reconnecting|connecting"))
    await report(client, attempt, range(6, 11), total=10)
    await complete(client, attempt)
    await client.wait_terminal(execution_id)
    await asyncio.wait_for(sockets.reopened.wait(), 5)
    assert f"after_seq={shown[0]}&" in sockets.routes[1].url, sockets.routes[1].url
    sockets.release.set()

    view = page.locator("article.execution")
    await expect(view).to_have_attribute("data-status", "completed")
    events = await client.events(execution_id, 0)
    after = [e for e in events if e.seq > opened_at]
    await expect(page.locator(LOG_ROWS)).to_have_count(len(after))
    assert await log_seqs(page) == [e.seq for e in reversed(after)]
    await expect(page.locator(f'[data-resume-seq="{shown[0]}"]')).to_have_count(1)
    await expect(page.locator(".log-card summary")).to_have_text(f"Timeline ({len(after)} events)")

    # What came before the page opened, read from the log: the whole run, once, in order.
    await page.get_by_role("button", name=f"Show the {opened_at} earlier events").click()
    await expect(page.locator(LOG_ROWS)).to_have_count(len(events))
    assert await log_seqs(page) == [e.seq for e in reversed(events)]
    kinds = await page.locator(LOG_ROWS).evaluate_all("rows => rows.map(r => r.dataset.event)")
    assert kinds[::-1] == [legacy.event_name(e.type) for e in events]
    await expect(page.locator(".log-card summary")).to_have_text(f"Timeline ({len(events)} events)")


@pytest.mark.timeout(240)  # the engine replays 10,000 events in a few seconds, twice here
async def test_ten_thousand_progress_reports_are_folded_and_the_page_keeps_up(
    page: Page, flood: Flood
) -> None:
    """The most progress an execution may log, in bursts of a thousand: the page shows the
    latest of them and counts the rest, and is still answering when they have all come."""
    client = flood.stack.client
    workflow = await client.create_workflow(
        f"ops-{tag()}-many", {"name": "paginas", "handler": EXTERNAL}
    )
    execution_id = (await client.start(workflow.workflow_id, {})).execution_id
    attempt = await flood.runner.next_attempt(execution_id)
    await page.goto(f"{flood.gateway.url}/#token={token()}")
    await page.goto(f"{flood.gateway.url}/#/executions/{execution_id}")
    await expect(page.locator(".execution .connection")).to_have_attribute("data-phase", "live")
    opened_at = await snapshot_seq(page)

    for first in range(1, FLOOD + 1, REPORTS_PER_CALL):
        await report_many(client, attempt, range(first, first + REPORTS_PER_CALL))
    progress = page.locator('.log li[data-event="step_progress"][data-step="paginas"]')
    folded = page.locator('.log-folded[data-step="paginas"]')
    await expect(folded).to_have_attribute(
        "data-folded", str(FLOOD - PROGRESS_ROWS), timeout=90_000
    )
    await expect(progress).to_have_count(PROGRESS_ROWS)
    await expect(progress.first.locator(".log-detail")).to_have_text(
        f"paginas · 100 % · page {FLOOD}"
    )
    await expect(page.locator(".log-card summary")).to_have_text(f"Timeline ({FLOOD:,} events)")
    assert await page.locator(".log li").count() < PROGRESS_ROWS + 10
    # Hidden on request, shown again.
    await page.get_by_label("Progress reports").uncheck()
    await expect(progress.first).to_be_hidden()
    await page.get_by_label("Progress reports").check()
    await expect(progress.first).to_be_visible()

    await complete(client, attempt)
    view = page.locator("article.execution")
    await expect(view).to_have_attribute("data-status", "completed")
    events = await client.events(execution_id, 0)
    progressed = [e.seq for e in events if e.type == ex_pb.EVENT_TYPE_STEP_PROGRESS]
    assert len(progressed) == FLOOD
    others = [e.seq for e in events if e.type != ex_pb.EVENT_TYPE_STEP_PROGRESS]
    kept = progressed[-PROGRESS_ROWS:]
    assert await log_seqs(page) == sorted(
        [s for s in [*kept, *others] if s > opened_at], reverse=True
    )

    # Opened afresh after the end: the whole run read back from the log, folded the same way.
    await page.reload()
    await expect(view).to_have_attribute("data-status", "completed")
    await page.get_by_role("button", name=f"Show the {len(events):,} earlier events").click()
    await expect(folded).to_have_attribute(
        "data-folded", str(FLOOD - PROGRESS_ROWS), timeout=90_000
    )
    assert await log_seqs(page) == sorted([*kept, *others], reverse=True)
    await expect(page.locator(".log-card summary")).to_have_text(
        f"Timeline ({len(events):,} events)"
    )
