"""A step that waits in the step queue, as the page shows it: the step queued with its wait,
the queue panel counting it by handler beside the runners, and both moving on once a runner
polls again (the stack's pioneer is stopped meanwhile)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.dashboard.conftest import Dashboard

pytestmark = pytest.mark.timeout(60)


async def test_a_queued_step_shows_its_wait_and_the_panel_counts_it(
    page: Page, dashboard: Dashboard, artifacts: Path
) -> None:
    stack = dashboard.stack
    workflow = await stack.client.create_workflow(
        f"en-cola-{uuid.uuid4().hex[:6]}",
        {"name": "siesta", "handler": "sleep", "heartbeat_timeout_seconds": 5},
    )
    await page.goto(dashboard.signed_in_url)
    panel = page.get_by_role("region", name="Step queue")
    runner = panel.locator(f'.queue-runners li[data-runner-id="{stack.pioneer.name}"]')
    await expect(runner).to_contain_text("sleep")
    await expect(runner).to_contain_text("free slots")

    await stack.pioneer.stop()  # nobody takes `sleep` now
    try:
        # Manual: the page is live before the step is queued, so it sees step_queued come.
        execution = await stack.client.start(workflow.workflow_id, {"seconds": 0.3}, manual=True)
        await page.goto(f"{dashboard.url}#/executions/{execution.execution_id}")
        view = page.locator("article.execution")
        await expect(view).to_have_attribute("data-status", "waiting")
        await page.get_by_role("button", name="Run the next step (siesta)").click()
        step = page.locator('.step[data-step="siesta"]')
        await expect(step).to_have_attribute("data-state", "queued")
        await expect(step.locator(".badge")).to_have_text("queued")
        await expect(step.locator(".step-message")).to_have_text("Waiting for a runner of sleep")
        # The wait counts up while the page looks.
        await expect(step.locator(".step-duration")).to_have_text(
            re.compile(r"^queued (?:[1-9]\.\d|\d\d) s …$")
        )
        row = page.locator('table.history tbody tr[data-step="siesta"]')
        await expect(row).to_have_attribute("data-status", "queued")

        sleep = panel.locator('#queue-rows tr[data-handler="sleep"]')
        await expect(sleep).to_have_attribute("data-ready", "1")
        cells = sleep.locator("td")
        await expect(cells.nth(0)).to_have_text("1")  # yours
        await expect(cells.nth(1)).to_have_text("1")  # every tenant's
        await expect(panel.locator("#queue-summary")).to_have_text(
            "1 step waiting for a runner, 1 of them yours."
        )
        await page.screenshot(path=artifacts / "dashboard-queue.png", full_page=True)
    finally:
        await stack.pioneer.start()

    await expect(view).to_have_attribute("data-status", "completed", timeout=20_000)
    await expect(step).to_have_attribute("data-state", "success")
    log = page.locator(".log li[data-event]")
    events = await log.evaluate_all("els => els.map(e => e.dataset.event).reverse()")
    assert events[:3] == ["workflow_advanced", "step_queued", "step_started"], events
    queued = page.locator('.log li[data-event="step_queued"] .log-detail')
    await expect(queued).to_have_text("siesta · attempt 1 · waiting for a sleep runner")
    started = page.locator('.log li[data-event="step_started"] .log-detail')
    await expect(started).to_contain_text(f"on {stack.pioneer.name}")
    await expect(started).to_contain_text("in the queue")
    await expect(panel.locator("#queue-summary")).to_have_text(
        "Nothing waits for a runner.", timeout=10_000
    )
    await expect(panel.locator("#queue-depths")).to_be_hidden()
