"""The Node.js step runner in examples/runner-node, as a user runs it: its own process on a
real port, the engine pushing attempts to it (PIONEER_URL=http://…) and the gateway taking its
reports with the attempt token alone (DISCOVERY_URL=http://…), beside pioneer pulling over
gRPC for the other handlers of the same deployment."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pymongo import AsyncMongoClient

from tests.gateway.harness import Api, Gateway, start_gateway
from tests.stack import (
    MAKE_RUN_READY,
    ROOT,
    Stack,
    free_port,
    start_make_run,
    start_stack,
    token,
    wait_for_runner,
)

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

SERVER = ROOT / "examples" / "runner-node" / "server.js"
HANDLER = "node_progress5"


@dataclass
class NodeRunner:
    """`node server.js` as a child process; its JSON log lines, as they come."""

    port: int
    discovery_url: str
    lines: list[dict[str, Any]] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None
    _reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, step_delay_ms: int) -> None:
        assert NODE is not None
        self.lines = []
        self.process = await asyncio.create_subprocess_exec(
            NODE,
            str(SERVER),
            env={
                "PATH": os.environ.get("PATH", ""),
                "PORT": str(self.port),
                "DISCOVERY_URL": self.discovery_url,
                "STEP_DELAY_MS": str(step_delay_ms),
            },
            stdout=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        await self.logged("listening", seconds=15)

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.append(json.loads(line))

    def events(self, execution_id: str) -> list[str]:
        return [e["event"] for e in self.lines if e.get("execution_id") == execution_id]

    async def logged(
        self, event: str, execution_id: str | None = None, seconds: float = 30
    ) -> None:
        deadline = time.monotonic() + seconds
        while not any(
            e["event"] == event and execution_id in (None, e.get("execution_id"))
            for e in self.lines
        ):
            assert self.process is not None and self.process.returncode is None, self.lines
            assert time.monotonic() < deadline, f"no {event!r} in {self.lines}"
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


@dataclass
class Deployment:
    stack: Stack
    gateway: Gateway
    node: NodeRunner
    api: Api

    async def event_log(self, execution_id: str) -> list[tuple[int, str, Any]]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.stack.mongo_uri)
        try:
            cursor = client[self.stack.database]["events"].find(
                {"execution_id": execution_id}, sort=[("seq", 1)]
            )
            return [(d["seq"], d["type"], d.get("data")) async for d in cursor]
        finally:
            await client.close()

    async def attempt_token(self, execution_id: str, step: str) -> str:
        """The step's first attempt token, read from the database: the engine and the runner
        it was pushed to are the only others who know it."""
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.stack.mongo_uri)
        try:
            queued = await client[self.stack.database]["events"].find_one(
                {"execution_id": execution_id, "type": "step_queued", "data.step": step},
                sort=[("seq", 1)],
            )
        finally:
            await client.close()
        assert queued is not None
        return str(queued["attempt_token"])


@pytest.fixture
async def deployment(mongo_server: str, database: str) -> AsyncIterator[Deployment]:
    node_port, gateway_port, engine_port = free_port(), free_port(), free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    node = NodeRunner(node_port, gateway_url)
    # The engine is told about the runner before it is up: it waits for it, taking nothing.
    stack = await start_stack(
        mongo_server,
        database,
        port=engine_port,
        webhook_urls=(node.url,),
        report_base_url=gateway_url,
    )
    gateway = await start_gateway(stack.engine.port, port=gateway_port)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token()}"}) as session:
        try:
            await node.start(step_delay_ms=100)
            await wait_for_runner(stack.client.queue, f"webhook:{node.url}")
            yield Deployment(stack, gateway, node, Api(session, gateway_url))
        finally:
            await node.stop()
            await gateway.stop()
            await stack.stop()


async def test_a_node_runner_runs_its_step_beside_pioneer_and_obeys_a_cancel(
    deployment: Deployment,
) -> None:
    api, node = deployment.api, deployment.node
    # Pioneer (gRPC, pulling) runs `echo`; the Node runner (HTTP, pushed to) runs the other.
    workflow_id = await api.workflow(
        {"name": "first", "handler": "echo"},
        {"name": "remote", "handler": HANDLER, "heartbeat_timeout_seconds": 10},
    )

    # 1. To completion, with five progress reports.
    done = await api.start(workflow_id, {"nombre_documento": "a.pdf"})
    final = await api.wait_terminal(done, 60)
    assert final["status"] == "completed", final
    remote = final["steps_history"][-1]
    assert remote["step_name"] == "remote" and remote["status"] == "success"
    assert remote["output_payload"]["parts"] == 5 and remote["output_payload"]["runner"] == "node"
    assert "nombre_documento" in remote["output_payload"]["input_keys"]  # the run's input
    assert final["context"]["dynamic_properties"]["runner"] == "node"
    log = await deployment.event_log(done)
    progress = [data for _, kind, data in log if kind == "step_progress"]
    assert [p["progress"]["percentage"] for p in progress] == [10, 30, 50, 70, 90]
    assert {p["step_name"] for p in progress} == {"remote"}
    started = [data for _, kind, data in log if kind == "step_started"]
    assert started[-1]["runner_id"] == f"webhook:{node.url}"
    assert node.events(done) == ["accepted", *["progress"] * 5, "completed"]

    # 2. Cancelled mid-step: the next progress reply tells the runner, which stops there.
    # Its parts take a second each, so the cancel lands mid-step even on a busy machine.
    cancelled = await api.start(workflow_id, {"delay_ms": 1000})
    await node.logged("progress", cancelled)
    status, _ = await api.call("POST", f"/executions/{cancelled}/cancel", {"reason": "enough"})
    assert status == 200
    await node.logged("cancel_requested", cancelled)
    assert (await api.wait_terminal(cancelled))["status"] == "cancelled"
    seen = node.events(cancelled)
    await asyncio.sleep(2.5)  # past its next pause: it would have reported again by now
    assert node.events(cancelled) == seen
    assert seen[-1] == "cancel_requested" and "completed" not in seen
    assert seen.count("progress") < 5
    cancelled_log = await deployment.event_log(cancelled)
    assert cancelled_log[-1][1] == "workflow_cancelled"
    assert not any(
        kind == "step_progress" and seq > cancelled_log[-1][0] for seq, kind, _ in cancelled_log
    )

    # 3. A report with a stale attempt token (the finished run's) is refused and writes
    # nothing, sent as the runner sends it: the attempt token and no other credential.
    stale = await deployment.attempt_token(done, "remote")
    before = await deployment.event_log(done)
    async with aiohttp.ClientSession() as anonymous:
        runner = Api(anonymous, api.base)
        base = f"/executions/{done}/steps/remote"
        headers = {"X-Attempt-Token": stale}
        status, body = await runner.call(
            "POST", f"{base}/progress", {"percentage": 95}, headers=headers
        )
        assert (status, body["error"]["code"]) == (409, "STALE_ATTEMPT")
        status, body = await runner.call(
            "POST", f"{base}/complete", {"success": False, "error": "late"}, headers=headers
        )
        assert (status, body["error"]["code"]) == (409, "STALE_ATTEMPT")
    assert await deployment.event_log(done) == before


async def test_attempts_pushed_while_the_runner_is_down_run_once_it_is_back(
    mongo_server: str, database: str
) -> None:
    """The runner restarts: nothing fails meanwhile, and each run completes on its first
    attempt once the runner is back (tests/engine/test_webhooks.py shows the pusher taking
    nothing more once it knows the runner is away)."""
    node_port, gateway_port, engine_port = free_port(), free_port(), free_port()
    node = NodeRunner(node_port, f"http://127.0.0.1:{gateway_port}")
    await node.start(step_delay_ms=50)
    stack = await start_stack(
        mongo_server,
        database,
        port=engine_port,
        webhook_urls=(node.url,),
        report_base_url=node.discovery_url,
    )
    gateway = await start_gateway(stack.engine.port, port=gateway_port)
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token()}"}) as s:
            api = Api(s, node.discovery_url)
            await wait_for_runner(stack.client.queue, f"webhook:{node.url}")
            workflow_id = await api.workflow({"name": "remote", "handler": HANDLER})
            await node.stop()
            # The pusher learns that the runner is gone from a failed POST: what it takes
            # first is sent again until the runner is back, and the rest waits in the queue.
            await asyncio.sleep(1.5)
            executions = [await api.start(workflow_id) for _ in range(3)]
            await asyncio.sleep(2.0)
            for execution_id in executions:
                document = await api.status(execution_id)
                assert document["status"] == "running", document
                assert all(h["status"] != "failed" for h in document["steps_history"])
            await node.start(step_delay_ms=50)
            for execution_id in executions:
                final = await api.wait_terminal(execution_id, 60)
                assert final["status"] == "completed", final
                assert [h["attempt"] for h in final["steps_history"]] == [1]
    finally:
        with contextlib.suppress(Exception):
            await node.stop()
        await gateway.stop()
        await stack.stop()


async def test_make_run_pushes_to_it_with_the_seeds_variables(tmp_path: Path) -> None:
    """`make run` with the seed's PIONEER_URL (the runner) and DISCOVERY_URL (the gateway)
    in its environment: the engine pushes to the runner, pioneer still reaches the engine."""
    gateway_port, node_port, engine_port, pioneer_port = (free_port() for _ in range(4))
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    node = NodeRunner(node_port, gateway_url)
    await node.start(step_delay_ms=50)
    log = tmp_path / "stack.log"
    stack = start_make_run(
        tmp_path / "data",
        log,
        ENGINE_PORT=engine_port,
        PIONEER_PORT=pioneer_port,
        GATEWAY_PORT=gateway_port,
        PIONEER_URL=node.url,
        DISCOVERY_URL=gateway_url,
    )
    try:
        deadline = time.monotonic() + 90
        while MAKE_RUN_READY not in log.read_text(errors="replace"):
            assert stack.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.2)
        banner = log.read_text()
        assert f"HTTP runners    {node.url}" in banner
        assert "'Procesar Documentos' = " in banner  # pioneer reached the engine
        local_token = (tmp_path / "data" / "token").read_text().strip()
        headers = {"Authorization": f"Bearer {local_token}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            api = Api(session, gateway_url)
            workflow_id = await api.workflow({"name": "remote", "handler": HANDLER})
            execution_id = await api.start(workflow_id, {"uuid_proceso": "p-1"})
            final = await api.wait_terminal(execution_id, 60)
        assert final["status"] == "completed", final
        assert final["steps_history"][0]["output_payload"]["parts"] == 5
        assert node.events(execution_id) == ["accepted", *["progress"] * 5, "completed"]
    finally:
        if stack.poll() is None:
            stack.send_signal(signal.SIGTERM)
            try:
                stack.wait(30)
            except subprocess.TimeoutExpired:
                stack.kill()
                stack.wait()
        await node.stop()
