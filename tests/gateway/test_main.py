"""`python -m services.gateway` as an operator runs it: JSON logs, serves, exits 0 on SIGTERM,
and refuses to start on a bad setting, naming it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.gateway.harness import GatewayStack

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'generated'}", **extra}


async def _json_line(stream: asyncio.StreamReader, event: str) -> dict[str, Any]:
    while line := await stream.readline():
        entry: dict[str, Any] = json.loads(line)
        if entry["event"] == event:
            return entry
    raise AssertionError(f"the gateway exited before logging {event!r}")


async def test_serves_then_stops_cleanly_on_sigterm(
    gw_stack: GatewayStack, session: aiohttp.ClientSession
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.gateway",
        cwd=ROOT,
        env=_env(GATEWAY_PORT="0", ENGINE_URL=f"http://127.0.0.1:{gw_stack.engine.port}"),
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        serving = await asyncio.wait_for(_json_line(process.stderr, "gateway serving"), 15)
        assert serving["engine"] == f"127.0.0.1:{gw_stack.engine.port}"
        async with session.get(f"http://127.0.0.1:{serving['port']}/health") as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(_json_line(process.stderr, "gateway stopped"), 10)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_bad_setting_stops_it_at_start_naming_the_variable() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.gateway",
        cwd=ROOT,
        env=_env(GATEWAY_MAX_BODY_BYTES="lots"),
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 2
    line = json.loads(stderr.decode().strip().splitlines()[-1])
    assert line["event"] == "bad configuration" and "GATEWAY_MAX_BODY_BYTES" in line["error"]


async def test_anonymous_access_on_a_reachable_address_is_refused_at_start() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.gateway",
        cwd=ROOT,
        env=_env(GATEWAY_ANONYMOUS_ACCESS="true", GATEWAY_HOST="0.0.0.0", GATEWAY_PORT="0"),
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 2
    line = json.loads(stderr.decode().strip().splitlines()[-1])
    assert line["event"] == "bad configuration"
    for name in ("GATEWAY_ANONYMOUS_ACCESS", "GATEWAY_HOST", "GATEWAY_TRUSTED_NETWORK"):
        assert name in line["error"], line


async def test_anonymous_access_is_announced_once_at_start_as_what() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.gateway",
        cwd=ROOT,
        env=_env(
            GATEWAY_ANONYMOUS_ACCESS="true",
            GATEWAY_ANONYMOUS_TENANT="legacy",
            GATEWAY_PORT="0",
        ),
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        announced = await asyncio.wait_for(
            _json_line(
                process.stderr, "anonymous access is on: requests without credentials are admitted"
            ),
            15,
        )
        assert announced["level"] == "warning"
        assert (announced["role"], announced["tenant"]) == ("client", "legacy")
        await asyncio.wait_for(_json_line(process.stderr, "gateway serving"), 15)
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(_json_line(process.stderr, "gateway stopped"), 10)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
