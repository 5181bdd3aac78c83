"""The gateway as a user runs it: `create_app` on a real port, in front of a real engine, and
a small HTTP client that speaks the legacy API the way the seed's clients do."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from aiohttp import web

from services.auth import RUNNER
from services.engine.app import Engine
from services.gateway.app import create_runner
from services.gateway.config import Settings
from tests.gateway.external_runner import RUNNER_ID, ExternalRunner
from tests.stack import (
    AUTH_KEYS,
    Client,
    Pioneer,
    engine_settings,
    free_port,
    token,
    wait_for_runner,
)

TERMINAL = {"completed", "failed", "cancelled"}


@dataclass
class Gateway:
    url: str
    app: web.Application
    runner: web.AppRunner

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_gateway(engine_port: int, *, port: int = 0, **overrides: Any) -> Gateway:
    settings = replace(
        Settings(
            port=0,
            engine_target=f"127.0.0.1:{engine_port}",
            ws_heartbeat_seconds=5.0,
            sync_wait_seconds=2.0,
            watch_retry_seconds=5.0,
            auth_keys=AUTH_KEYS,
        ),
        **overrides,
    )
    runner = create_runner(settings, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    port = runner.addresses[0][1]
    return Gateway(f"http://127.0.0.1:{port}", runner.app, runner)


@asynccontextmanager
async def gateway_for(engine_port: int, **overrides: Any) -> AsyncIterator[Gateway]:
    gateway = await start_gateway(engine_port, **overrides)
    try:
        yield gateway
    finally:
        await gateway.stop()


@dataclass
class GatewayStack:
    """Engine, pioneer and an external (HTTP-reporting) step runner, one per test session."""

    engine: Engine
    pioneer: Pioneer
    external: ExternalRunner
    client: Client

    async def stop(self) -> None:
        await self.client.close()
        await self.engine.stop(grace=0)
        await self.pioneer.stop()
        await self.external.stop()


async def start_gateway_stack(mongo_uri: str, **overrides: Any) -> GatewayStack:
    engine_port = free_port()
    settings = replace(
        engine_settings(mongo_uri, f"gw{uuid.uuid4().hex[:10]}", engine_port),
        # The slow-consumer tests flood progress on purpose; the engine's own progress rate
        # would keep most of it out of the log (tests/engine/test_limits.py covers that).
        progress_rate=1e6,
        progress_burst=1_000_000,
        **overrides,
    )
    engine = Engine(settings)
    await engine.start()
    target = f"127.0.0.1:{engine.port}"
    pioneer = Pioneer(engine.port)
    await pioneer.start()
    external = ExternalRunner(target, token(RUNNER))
    await external.start()
    client = Client(target)
    await wait_for_runner(client.queue, pioneer.name)
    await wait_for_runner(client.queue, RUNNER_ID)
    return GatewayStack(engine, pioneer, external, client)


@dataclass
class Api:
    """The seed's client: plain JSON over HTTP."""

    session: aiohttp.ClientSession
    base: str
    created: list[str] = field(default_factory=list)

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        if body is not None:
            kw["json"] = body
        async with self.session.request(method, self.base + path, **kw) as response:
            text = await response.text()
            value = (
                json.loads(text) if text and response.content_type == "application/json" else text
            )
            return response.status, value

    async def workflow(self, *steps: dict[str, Any], name: str = "") -> str:
        status, body = await self.call(
            "POST",
            "/workflows",
            {"name": name or f"wf-{uuid.uuid4().hex[:8]}", "steps": list(steps)},
        )
        assert status == 201, body
        workflow_id: str = body["workflow_id"]
        return workflow_id

    async def start(self, workflow_id: str, document: dict[str, Any] | None = None) -> str:
        status, body = await self.call(
            "POST", "/execute-async/", {"workflow_id": workflow_id, "data": document or {}}
        )
        assert status == 202, body
        execution_id: str = body["execution_id"]
        return execution_id

    async def status(self, execution_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/executions/{execution_id}/status")
        assert status == 200, body
        document: dict[str, Any] = body
        return document

    async def wait_terminal(self, execution_id: str, seconds: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            document = await self.status(execution_id)
            if document["status"] in TERMINAL:
                return document
            if time.monotonic() > deadline:
                raise TimeoutError(f"{execution_id} still {document['status']}")
            await asyncio.sleep(0.05)


def sleep_step(name: str = "wait", **extra: Any) -> dict[str, Any]:
    return {"name": name, "handler": "sleep", "heartbeat_timeout_seconds": 5, **extra}
