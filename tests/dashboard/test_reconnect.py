"""The execution view's WebSocket dropped mid-run: the page opens it again with
`?after_seq=<the last seq it showed>` and shows every event once, none missing.

Deterministic: the execution is manual, so nothing happens unless the test advances it, and
the page's sockets go through Playwright's WebSocket routing, so the test decides when the
first connection drops and when the second one reaches the gateway. The rest of the run
happens in between, while the page is cut off."""

from __future__ import annotations

import asyncio
import re
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from playwright.async_api import Page, expect

from services.gateway import legacy
from tests.dashboard.conftest import Dashboard, HeldSockets
from tests.stack import AUTHORITY, as_dict

pytestmark = pytest.mark.timeout(60)

STEPS = ["primero", "segundo"]


async def test_a_dropped_socket_resumes_after_the_last_seq_shown(
    page: Page, dashboard: Dashboard
) -> None:
    client = dashboard.stack.client
    workflow = await client.create_workflow(
        f"reanudar-{uuid.uuid4().hex[:6]}",
        *({"name": name, "handler": "sleep", "heartbeat_timeout_seconds": 5} for name in STEPS),
    )
    execution = await client.start(workflow.workflow_id, {"seconds": 0.6}, manual=True)
    execution_id = execution.execution_id

    # Every socket the page opens, in order; the second reaches the gateway when released.
    sockets = HeldSockets()
    await sockets.watch(page)
    await page.goto(dashboard.signed_in_url)
    await page.goto(f"{dashboard.url}#/executions/{execution_id}")
    view = page.locator("article.execution")
    connection = page.locator(".execution .connection")
    await expect(view).to_have_attribute("data-status", "waiting")
    await expect(connection).to_have_attribute("data-phase", "live")

    # The first step, started from the page's own button, followed live.
    await page.get_by_role("button", name=re.compile(r"^Run the next step")).click()
    first = page.locator(f'.step[data-step="{STEPS[0]}"]')
    await expect(first.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    await expect(view).to_have_attribute("data-status", "waiting")
    shown = int(await view.get_attribute("data-last-seq") or "")

    # The connection drops, as when a proxy or the network cuts it (not the normal 1000).
    await sockets.drop_first()
    await expect(connection).to_have_attribute("data-phase", re.compile("reconnecting|connecting"))

    # While the page is cut off, the rest of the run happens.
    await client.executions.AdvanceExecution(
        es.AdvanceExecutionRequest(execution_id=execution_id), timeout=10
    )
    final = await client.wait_terminal(execution_id, 20)
    assert final.status == ex_pb.EXECUTION_STATUS_COMPLETED
    await asyncio.wait_for(sockets.reopened.wait(), 5)  # the page's backoff: under 1 s at first
    resumed = urlsplit(sockets.routes[1].url)
    assert resumed.path == f"/ws/{execution_id}", sockets.routes[1].url
    query = parse_qs(resumed.query)
    assert query["after_seq"] == [str(shown)], sockets.routes[1].url
    # A watch token for this execution only, never the tab's own token.
    watcher = AUTHORITY.verify(query["access_token"][0])
    assert (watcher.role, watcher.execution_id) == ("watcher", execution_id)
    sockets.release.set()

    await expect(view).to_have_attribute("data-status", "completed", timeout=10_000)
    await expect(connection).to_have_attribute("data-phase", "finished")
    for name in STEPS:
        step = page.locator(f'.step[data-step="{name}"]')
        await expect(step.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
        await expect(step.locator(".step-attempts")).to_have_text("1")
    history = page.locator("table.history tbody tr")
    await expect(history).to_have_count(len(STEPS))

    # The log shows each event after the snapshot once, in order, none missing: those received
    # live, then those replayed after `shown`.
    snapshot_seq = int(
        await page.locator("[data-snapshot-seq]").get_attribute("data-snapshot-seq") or ""
    )
    events = await client.events(execution_id, snapshot_seq)
    entries = page.locator(".log li[data-seq]")
    await expect(entries).to_have_count(len(events))
    logged = await entries.evaluate_all(
        "items => items.map(i => [Number(i.dataset.seq), i.dataset.event]).reverse()"
    )
    assert logged == [[e.seq, legacy.event_name(e.type)] for e in events]
    # Among them, the second step's progress, all of it reported while the page was cut off.
    replayed = [e for e in events if e.seq > shown and e.type == ex_pb.EVENT_TYPE_STEP_PROGRESS]
    assert replayed, "the second step reported progress while the page was cut off"
    assert {as_dict(e.data)["step_name"] for e in replayed} == {STEPS[1]}
    resume = page.locator("[data-resume-seq]")
    await expect(resume).to_have_count(1)
    await expect(resume).to_have_attribute("data-resume-seq", str(shown))
    # Only two connections: the normal close after the terminal event is not reopened.
    await page.wait_for_timeout(300)
    assert len(sockets.routes) == 2
