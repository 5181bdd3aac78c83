"""Steps that run side by side (issue 16), as the execution view draws them: a diamond
(a → b, c → d) in three stages, b and c beside each other and both running at once, their
bars overlapping on a shared time axis and d's after both; a watch token, which may not read
the workflow's definition, sees them overlap on the time axis too; a straight line looks as
it always did.

Deterministic: b and c are steps of the `external` handler, taken by a runner the test
drives, so they run exactly as long as the test holds them; every wait is on a condition."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from discovery.engine.v1 import step_queue_service_pb2 as sq
from playwright.async_api import FloatRect, Page, expect

from services.auth import WATCHER
from tests.dashboard.attempts import complete, report
from tests.dashboard.conftest import Dashboard
from tests.gateway.external_runner import HANDLER as EXTERNAL
from tests.gateway.external_runner import ExternalRunner
from tests.stack import token

pytestmark = pytest.mark.timeout(60)

DIAMOND: list[dict[str, Any]] = [
    {"name": "a", "handler": "echo"},
    {"name": "b", "handler": EXTERNAL, "after": ["a"]},
    {"name": "c", "handler": EXTERNAL, "after": ["a"]},
    {"name": "d", "handler": "echo", "after": ["b", "c"]},
]


def tag() -> str:
    return uuid.uuid4().hex[:8]


async def start_diamond(
    dashboard: Dashboard, external: ExternalRunner
) -> tuple[str, dict[str, sq.StepTask]]:
    """A diamond run, its branches b and c both taken by the test's runner (held running)."""
    client = dashboard.stack.client
    workflow = await client.create_workflow(f"rombo-{tag()}", *DIAMOND)
    execution_id = (await client.start(workflow.workflow_id, {})).execution_id
    taken = [await external.next_attempt(execution_id) for _ in range(2)]
    return execution_id, {attempt.step_name: attempt for attempt in taken}


async def box(page: Page, selector: str) -> FloatRect:
    found = await page.locator(selector).bounding_box()
    assert found is not None, f"{selector} is not on the page"
    return found


async def test_a_diamond_shows_its_branches_side_by_side(
    page: Page, dashboard: Dashboard, external: ExternalRunner, artifacts: Path
) -> None:
    client = dashboard.stack.client
    execution_id, held = await start_diamond(dashboard, external)
    assert set(held) == {"b", "c"}  # both queued at once, as soon as a succeeded

    await page.goto(dashboard.signed_in_url)
    await page.goto(f"{dashboard.url}#/executions/{execution_id}")
    view = page.locator("article.execution")
    await expect(view).to_have_attribute("data-status", "running")

    # In stages, from the steps listing's `after`: a, then b and c side by side, then d.
    stages = page.locator(".steps > li.stage")
    await expect(stages).to_have_count(3)
    await expect(stages.locator(".stage-title")).to_have_text(
        ["Stage 1", "Stage 2 · 2 steps side by side", "Stage 3"]
    )
    in_stages = [
        await stage.locator(".step").evaluate_all("cards => cards.map(c => c.dataset.step)")
        for stage in await stages.all()
    ]
    assert in_stages == [["a"], ["b", "c"], ["d"]]

    # Both running at once, each with its own progress, beside each other.
    b, c = page.locator('.step[data-step="b"]'), page.locator('.step[data-step="c"]')
    await expect(b).to_have_attribute("data-state", "running")
    await expect(c).to_have_attribute("data-state", "running")
    await expect(page.locator(".running-now")).to_have_text("Running at once: b and c")
    await report(client, held["b"], range(1, 2), total=4)
    await report(client, held["c"], range(3, 4), total=4)
    await expect(b.locator(".step-percentage")).to_have_text("25 %")
    await expect(c.locator(".step-percentage")).to_have_text("75 %")
    b_card, c_card = (
        await box(page, '.step[data-step="b"]'),
        await box(page, '.step[data-step="c"]'),
    )
    assert b_card["y"] == c_card["y"] and b_card["x"] + b_card["width"] <= c_card["x"]

    # On the time axis, both bars are running, side by side.
    lanes = page.get_by_role("region", name="Side by side in time")
    await expect(lanes).to_be_visible()
    for name in "bc":
        await expect(
            lanes.get_by_role("img", name=re.compile(f"^{name}, attempt 1: running"))
        ).to_be_visible()
    await page.screenshot(path=artifacts / "dashboard-branches.png", full_page=True)

    # One branch ends: d still waits for the other.
    await complete(client, held["c"])
    await expect(c).to_have_attribute("data-state", "success")
    await expect(page.locator(".running-now")).to_be_hidden()
    await expect(page.locator('.step[data-step="d"]')).to_have_attribute("data-state", "pending")
    await complete(client, held["b"])
    await expect(view).to_have_attribute("data-status", "completed")
    for name in "abcd":
        await expect(page.locator(f'.step[data-step="{name}"]')).to_have_attribute(
            "data-state", "success"
        )

    # b's and c's bars overlap; d's begins once both have ended.
    bars = {name: await box(page, f'.lane[data-step="{name}"] .lane-bar') for name in "bcd"}
    b_bar, c_bar, d_bar = bars["b"], bars["c"], bars["d"]
    assert b_bar["x"] < c_bar["x"] + c_bar["width"] and c_bar["x"] < b_bar["x"] + b_bar["width"]
    assert d_bar["x"] >= max(b_bar["x"] + b_bar["width"], c_bar["x"] + c_bar["width"]) - 1, bars


async def test_a_watch_token_sees_the_branches_on_the_time_axis(
    page: Page, dashboard: Dashboard, external: ExternalRunner
) -> None:
    """A watch token may not read the workflow: the stages come from the execution's steps
    listing, which names what each step waits for, and the time axis shows what runs side
    by side."""
    client = dashboard.stack.client
    execution_id, held = await start_diamond(dashboard, external)
    watch = token(WATCHER, execution_id=execution_id)

    await page.goto(f"{dashboard.url}#token={watch}")
    await expect(page).to_have_url(f"{dashboard.url}#/executions/{execution_id}")
    await expect(page.locator(".running-now")).to_have_text("Running at once: b and c")
    await expect(page.locator(".stage")).to_have_count(3)
    lanes = page.get_by_role("region", name="Side by side in time")
    for name in "bc":
        await expect(
            lanes.get_by_role("img", name=re.compile(f"^{name}, attempt 1: running"))
        ).to_be_visible()

    for attempt in held.values():
        await complete(client, attempt)
    await expect(page.locator("article.execution")).to_have_attribute("data-status", "completed")
    await expect(lanes).to_be_visible()  # what ran side by side stays shown
    await expect(lanes.get_by_role("img")).to_have_count(4)


async def test_a_straight_line_is_drawn_as_before(page: Page, dashboard: Dashboard) -> None:
    client = dashboard.stack.client
    workflow = await client.create_workflow(
        f"linea-{tag()}", {"name": "uno", "handler": "echo"}, {"name": "dos", "handler": "echo"}
    )
    execution_id = (await client.start(workflow.workflow_id, {})).execution_id
    await client.wait_terminal(execution_id)

    await page.goto(dashboard.signed_in_url)
    await page.goto(f"{dashboard.url}#/executions/{execution_id}")
    await expect(page.locator("article.execution")).to_have_attribute("data-status", "completed")
    await expect(page.locator(".steps > li.step")).to_have_count(2)
    await expect(page.locator(".stage")).to_have_count(0)
    await expect(page.locator(".lanes-card")).to_be_hidden()
    await expect(page.locator(".running-now")).to_be_hidden()
