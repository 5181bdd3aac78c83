"""The dashboard as a user sees it: the real stack (engine, pioneer, the MongoDB wire-protocol
server) with "Procesar Documentos", the gateway on port 0 serving the page, and Debian's
headless Chromium driven by Playwright. No browser is ever downloaded: without
/usr/bin/chromium the tests fail and say how to install it."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import workflow_pb2 as wf_pb
from playwright.async_api import Browser, Page, ViewportSize, WebSocketRoute, async_playwright

from services.auth import RUNNER
from services.grpc_auth import BearerToken
from services.pioneer.workflows import ensure_document_workflow
from tests.gateway.external_runner import HANDLER as EXTERNAL
from tests.gateway.external_runner import ExternalRunner
from tests.gateway.harness import Gateway, start_gateway
from tests.stack import ROOT, Stack, start_stack, token, wait_for_handlers

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
VIEWPORT: ViewportSize = {"width": 1360, "height": 900}


class HeldSockets:
    """Every WebSocket the page opens, in order: the first goes through at once, the later
    ones reach the gateway only once `release` is set (the test runs the execution on
    meanwhile, to see the page resume where it stopped)."""

    def __init__(self) -> None:
        self.routes: list[WebSocketRoute] = []
        self.servers: list[WebSocketRoute] = []
        self.release = asyncio.Event()
        self.reopened = asyncio.Event()

    async def watch(self, page: Page) -> None:
        await page.route_web_socket(re.compile(r"/ws/"), self._through)

    async def _through(self, route: WebSocketRoute) -> None:
        self.routes.append(route)
        if len(self.routes) > 1:
            self.reopened.set()
            await self.release.wait()
        self.servers.append(route.connect_to_server())

    async def drop_first(self) -> None:
        """Cuts the first connection, as a proxy or the network does (not the normal 1000)."""
        await self.routes[0].close(code=1001, reason="dropped by the test")
        await self.servers[0].close(code=1000, reason="dropped by the test")


UNFINISHED = [
    ex_pb.EXECUTION_STATUS_PENDING,
    ex_pb.EXECUTION_STATUS_RUNNING,
    ex_pb.EXECUTION_STATUS_WAITING,
]


@dataclass
class Dashboard:
    stack: Stack
    gateway: Gateway
    document_workflow: wf_pb.Workflow

    @property
    def url(self) -> str:
        return f"{self.gateway.url}/"

    @property
    def signed_in_url(self) -> str:
        """The address `make run` prints: the token in the fragment, which stays in the tab."""
        return f"{self.url}#token={token()}"


@pytest.fixture(scope="package")
async def dashboard(mongo_server: str) -> AsyncIterator[Dashboard]:
    stack = await start_stack(mongo_server, f"dash{uuid.uuid4().hex[:10]}")
    try:
        workflow = await ensure_document_workflow(stack.client.target, BearerToken(token()))
        gateway = await start_gateway(stack.engine.port)
        try:
            yield Dashboard(stack, gateway, workflow)
        finally:
            await gateway.stop()
    finally:
        await stack.stop()


def chromium() -> Path:
    """Debian's Chromium; its absence fails the tests (never a silent skip, no download)."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the dashboard tests drive Debian's Chromium. "
            "Install it with `apt-get install chromium` (the Makefile does)."
        )
    return CHROMIUM


@pytest.fixture(scope="package")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh browser context; any uncaught script error on the page fails the test."""
    context = await browser.new_context(viewport=VIEWPORT, locale="en-GB", timezone_id="UTC")
    errors: list[str] = []
    opened = await context.new_page()
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    try:
        yield opened
    finally:
        await context.close()
    assert not errors, f"errors on the page: {errors}"


@pytest.fixture
async def refusals(browser: Browser) -> AsyncIterator[tuple[Page, list[str]]]:
    """A page like `page`, for a test that provokes refusals: Chromium logs each answer
    with an error status as a console error, and the test lists the statuses it expects."""
    context = await browser.new_context(viewport=VIEWPORT, locale="en-GB", timezone_id="UTC")
    errors: list[str] = []
    expected: list[str] = []
    opened = await context.new_page()
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    try:
        yield opened, expected
    finally:
        await context.close()
    unexpected = [
        e
        for e in errors
        if not any(f"the server responded with a status of {status}" in e for status in expected)
    ]
    assert not unexpected, f"errors on the page: {unexpected}"


@pytest.fixture
async def external(dashboard: Dashboard) -> AsyncIterator[ExternalRunner]:
    """A runner of the `external` handler that runs nothing: the test reports for it."""
    runner = ExternalRunner(dashboard.stack.client.target, token(RUNNER))
    await runner.start()
    try:
        await wait_for_handlers(dashboard.stack.client, {EXTERNAL})
        yield runner
    finally:
        await runner.stop()
        await _cancel_unfinished(dashboard.stack)


async def _cancel_unfinished(stack: Stack) -> None:
    """Runs a test left unfinished (it failed while it held attempts) are cancelled: their
    steps, retried with no runner of theirs left, would wait in the step queue the panel of
    a later test counts."""
    listed: es.ListExecutionsResponse = await stack.client.executions.ListExecutions(
        es.ListExecutionsRequest(page_size=1000, statuses=UNFINISHED), timeout=10
    )
    for execution in listed.executions:
        try:
            await stack.client.executions.CancelExecution(
                es.CancelExecutionRequest(execution_id=execution.execution_id), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:  # it ended meanwhile
                raise


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
