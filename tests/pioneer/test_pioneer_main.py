"""`python -m services.pioneer` as an operator runs it: serves, logs JSON, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]


async def _json_line(stream: asyncio.StreamReader, event: str) -> dict[str, Any]:
    while line := await stream.readline():
        entry: dict[str, Any] = json.loads(line)
        if entry["event"] == event:
            return entry
    raise AssertionError(f"pioneer exited before logging {event!r}")


async def test_serves_until_sigterm_then_exits_cleanly() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'generated'}",
        "PIONEER_PORT": "0",
        "ENGINE_URL": "http://127.0.0.1:9",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.pioneer",
        cwd=ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        serving = await asyncio.wait_for(_json_line(process.stderr, "pioneer serving"), 15)
        assert serving["discovery_url"] == "127.0.0.1:9"
        assert {"sleep", "fail", "echo"} <= set(serving["handlers"])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{serving['port']}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(_json_line(process.stderr, "pioneer stopped"), 10)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_seeds_http_discovery_url_stops_it_at_start_saying_what_to_set() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'generated'}",
        "PIONEER_PORT": "0",
        "DISCOVERY_URL": "http://localhost:8080",
    }
    env.pop("ENGINE_URL", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.pioneer",
        cwd=ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    entry = await asyncio.wait_for(_json_line(process.stderr, "bad configuration"), 15)
    assert entry["error"].startswith("DISCOVERY_URL='http://localhost:8080' is an HTTP URL")
    assert "set ENGINE_URL=host:port" in entry["error"]
    assert await asyncio.wait_for(process.wait(), 10) == 2
