"""The seed's JavaScript client ("Ejemplo 1: Cliente JavaScript", verbatim but for the
gateway's port) in a real headless Chromium, on a page served from another origin: its
`fetch` to execute-async goes through CORS without a token (the gateway admits requests
without credentials, as `make run` does, and lists the page's origin), and the WebSocket it
opens at `websocket_url` as given sees the run to `workflow_completed`. A page of an origin
not on the list cannot read the answer."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, ConsoleMessage, Page

from tests.dashboard.conftest import VIEWPORT, Dashboard
from tests.documents import pdfs
from tests.gateway.harness import gateway_for
from tests.stack import watched

pytestmark = pytest.mark.timeout(90)

SNIPPET = """
async function runAsyncWorkflow(workflowData) {
    // Iniciar workflow
    const response = await fetch('http://localhost:8080/execute-async/', {
        method: 'POST',
        headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({
            workflow_id: 'tu-workflow-id',
            data: workflowData
        })
    });
    
    const {execution_id, websocket_url} = await response.json();
    
    // Conectar WebSocket para seguimiento en tiempo real
    const ws = new WebSocket(`ws://localhost:8080${websocket_url}`);
    
    ws.onmessage = (event) => {
        const data = JSON.parse(event.data);
        updateUI(data);  // Actualizar interfaz según el evento
    };
    
    return execution_id;
}
"""  # noqa: W293 - the seed's own whitespace

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Seed client</title><link rel="icon" href="data:,">
</head>
<body><script>
window.seen = [];
function updateUI(data) { window.seen.push(data); }
%s
</script></body></html>
"""


@dataclass
class PageServer:
    """A second, unrelated web server: the page's origin is not the gateway's."""

    port: int
    html: str = ""

    def client(self, workflow_id: str, gateway_port: int) -> None:
        """The seed's snippet on the page, pointed at this gateway (its port, not 8080)."""
        snippet = SNIPPET.replace("tu-workflow-id", workflow_id)
        self.html = PAGE % snippet.replace("localhost:8080", f"localhost:{gateway_port}")


@pytest.fixture
async def page_server() -> AsyncIterator[PageServer]:
    server = PageServer(port=0)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=server.html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    server.port = runner.addresses[0][1]
    try:
        yield server
    finally:
        await runner.cleanup()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def document() -> dict[str, Any]:
    return {
        "base64": base64.b64encode(pdfs.sectioned_pdf(3)).decode(),
        "mime": "application/pdf",
        "nombre_documento": "documento.pdf",
        "uuid_proceso": "proceso_123",
    }


async def new_page(browser: Browser) -> tuple[Page, list[str]]:
    context = await browser.new_context(viewport=VIEWPORT)
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    opened.on("console", console)
    return opened, errors


async def test_the_seed_javascript_client_follows_its_run_from_another_origin(
    browser: Browser, dashboard: Dashboard, page_server: PageServer
) -> None:
    origin = f"http://127.0.0.1:{page_server.port}"
    async with gateway_for(
        dashboard.stack.engine.port, anonymous_access=True, cors_origins=(origin,)
    ) as gateway:
        page_server.client(dashboard.document_workflow.workflow_id, port_of(gateway.url))
        page, errors = await new_page(browser)
        try:
            await page.goto(f"{origin}/")
            # Held back until the page's WebSocket watches: a fast run could otherwise end
            # before a browser on a busy machine opens it.
            await dashboard.stack.pioneer.stop()
            try:
                execution_id = await page.evaluate("data => runAsyncWorkflow(data)", document())
                await watched(dashboard.stack, execution_id)
            finally:
                await dashboard.stack.pioneer.start()
            await page.wait_for_function(
                "window.seen.some(e => e.event === 'workflow_completed')", timeout=60_000
            )
            seen = await page.evaluate("window.seen")
        finally:
            await page.context.close()
    assert not errors, errors
    events = [e["event"] for e in seen]
    assert events[0] == "snapshot" and events[-1] == "workflow_completed", events
    assert {"step_started", "step_progress", "step_finished"} <= set(events), events
    assert all(e["execution_id"] == execution_id for e in seen)
    seqs = [e["seq"] for e in seen]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


async def test_a_page_of_an_origin_not_listed_cannot_read_the_answer(
    browser: Browser, dashboard: Dashboard, page_server: PageServer
) -> None:
    # The same page, from http://localhost:PORT: another origin than the one listed.
    async with gateway_for(
        dashboard.stack.engine.port,
        anonymous_access=True,
        cors_origins=(f"http://127.0.0.1:{page_server.port}",),
    ) as gateway:
        page_server.client(dashboard.document_workflow.workflow_id, port_of(gateway.url))
        page, errors = await new_page(browser)
        try:
            await page.goto(f"http://localhost:{page_server.port}/")
            outcome = await page.evaluate(
                "data => runAsyncWorkflow(data).then(id => 'read ' + id, e => 'failed: ' + e)",
                document(),
            )
        finally:
            await page.context.close()
    assert outcome == "failed: TypeError: Failed to fetch", outcome
    assert any("CORS" in error for error in errors), errors
