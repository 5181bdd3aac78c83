"""Upload a PDF through the page and watch it run: the file input, base64 in the browser,
execute-async, then the execution view live over the WebSocket until it completes."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from playwright.async_api import Page, expect

from services.pioneer.workflows import DOCUMENT_WORKFLOW_NAME, DOCUMENT_WORKFLOW_STEPS
from tests.dashboard.conftest import Dashboard
from tests.documents import pdfs
from tests.stack import as_dict, token, watched

pytestmark = pytest.mark.timeout(60)

PAGES = 24
STEP_NAMES = [step["name"] for step in DOCUMENT_WORKFLOW_STEPS]
EXTRACT_STEP = "Extraer Texto"


async def test_an_uploaded_pdf_is_followed_live_to_its_sections(
    page: Page, dashboard: Dashboard, tmp_path: Path, artifacts: Path
) -> None:
    document = tmp_path / "informe-anual.pdf"
    document.write_bytes(pdfs.sectioned_pdf(PAGES))
    await page.goto(dashboard.signed_in_url)
    await expect(page).to_have_url(f"{dashboard.url}#/")  # the token left the address bar
    await expect(page.locator("#upload-workflow")).to_contain_text(DOCUMENT_WORKFLOW_NAME)

    # The run waits for a runner until the page follows it: a browser on a busy machine may
    # open its WebSocket after a fast run has ended, and this test is about following live.
    await dashboard.stack.pioneer.stop()
    started = time.monotonic()
    await page.set_input_files("#upload-file", document)
    await page.get_by_role("button", name="Upload and process").click()
    await page.wait_for_url(re.compile(r"#/executions/[0-9a-f-]+$"))
    execution_id = page.url.rsplit("/", 1)[1]
    view = page.locator("article.execution")
    await expect(view).to_have_attribute("data-execution-id", execution_id)
    await watched(dashboard.stack, execution_id)
    await dashboard.stack.pioneer.start()

    await expect(view).to_have_attribute("data-status", "completed", timeout=30_000)
    print(f"completed on the page {time.monotonic() - started:.2f} s after the upload")
    await expect(page.locator("#execution-status")).to_have_text("completed")
    await expect(page.locator("#execution-title")).to_have_text(DOCUMENT_WORKFLOW_NAME)

    # Every bar full, the overall one too, each step done in one attempt.
    steps = page.locator(".steps > li")
    await expect(steps).to_have_count(len(STEP_NAMES))
    assert await page.locator(".step-name").all_text_contents() == STEP_NAMES
    for bar in await page.locator(".step .bar").all():
        await expect(bar).to_have_attribute("aria-valuenow", "100")
    await expect(page.get_by_role("progressbar", name="Overall progress")).to_have_attribute(
        "aria-valuenow", "100"
    )
    assert await page.locator(".step .badge").all_text_contents() == ["success"] * len(STEP_NAMES)
    assert await page.locator(".step-attempts").all_text_contents() == ["1"] * len(STEP_NAMES)
    extract = page.locator(f'.step[data-step="{EXTRACT_STEP}"]')
    await expect(extract.locator(".step-message")).to_have_text(
        f"extracted the text of page {PAGES} of {PAGES}"
    )
    await expect(extract.locator(".step-task")).to_have_text("Extracting text")

    history = page.locator("table.history tbody tr")
    await expect(history).to_have_count(len(STEP_NAMES))
    assert [
        (await row.get_attribute("data-step"), await row.get_attribute("data-status"))
        for row in await history.all()
    ] == [(name, "success") for name in STEP_NAMES]

    # The output: the sections find_sections reported, and the text preview.
    headings = pdfs.expected_headings(PAGES)
    result = page.get_by_role("region", name="Result")
    await expect(result).to_contain_text(f"Sections found{len(headings)}")
    titles = await result.locator(".sections tbody .section-title").all_text_contents()
    pages = await result.locator(".sections tbody .num").all_text_contents()
    assert list(zip(titles, map(int, pages), strict=True)) == headings
    await expect(result.locator(".preview")).to_contain_text(pdfs.BODY_LINE)

    # Live: after the snapshot, every event of the log exactly once and in order.
    snapshot_seq = int(
        await page.locator("[data-snapshot-seq]").get_attribute("data-snapshot-seq") or ""
    )
    log = await dashboard.stack.client.events(execution_id, snapshot_seq)
    shown = page.locator(".log li[data-seq]")
    await expect(shown).to_have_count(len(log))
    seqs = [int(s or "") for s in await shown.evaluate_all("els => els.map(e => e.dataset.seq)")]
    assert sorted(seqs) == [e.seq for e in log]
    assert log[-1].type == ex_pb.EVENT_TYPE_WORKFLOW_COMPLETED
    progress = [
        as_dict(e.data)["progress"]["custom_data"]["pages_processed"]
        for e in log
        if e.type == ex_pb.EVENT_TYPE_STEP_PROGRESS and as_dict(e.data)["step_name"] == EXTRACT_STEP
    ]
    print(f"snapshot at #{snapshot_seq}; {len(log)} live events, {len(progress)} page reports")

    # The list of recent executions catches up by itself.
    listed = page.locator(f'#recent-list li[data-execution-id="{execution_id}"]')
    await expect(listed).to_have_attribute("data-status", "completed", timeout=5_000)
    await expect(listed.locator("a")).to_have_attribute("aria-current", "page")

    await page.screenshot(path=artifacts / "dashboard.png", full_page=True)


async def test_without_a_token_the_page_asks_for_one_first(
    page: Page, dashboard: Dashboard
) -> None:
    await page.goto(dashboard.url)
    signin = page.locator("#signin")
    await expect(signin).to_be_visible()
    await expect(page.locator("#signin-token")).to_be_focused()
    # Nothing was asked of the API yet: a refused call would show as an error on the page.
    await expect(page.locator("#upload-workflow")).to_have_text("Looking for the workflow…")

    await page.fill("#signin-token", token())
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#upload-workflow")).to_contain_text(DOCUMENT_WORKFLOW_NAME)
    await expect(signin).to_be_hidden()
