"""The OpenAPI description: checked in, served, and true (schemathesis against the live
gateway: no server errors, no response that breaks the schema, invalid input refused)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from services.gateway.openapi import spec
from tests.gateway.harness import Api, Gateway, GatewayStack, gateway_for
from tests.stack import token

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "services" / "gateway" / "openapi.json"
SEED = 20250822


def test_checked_in_description_is_the_served_one() -> None:
    assert json.loads(CHECKED_IN.read_text()) == spec(), (
        "regenerate: python -m services.gateway.openapi > services/gateway/openapi.json"
    )


async def test_served_at_openapi_json(api: Api) -> None:
    status, body = await api.call("GET", "/openapi.json")
    assert status == 200 and body == spec()


@pytest.mark.timeout(120)
async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    api: Api, gw_stack: GatewayStack, tmp_path: Path
) -> None:
    # A workflow exists, so listing and fetching return real definitions.
    await api.workflow({"name": "a", "handler": "echo"})
    # The synchronous form waits for the bound by design; kept short for the response-time check.
    async with gateway_for(gw_stack.engine.port, sync_wait_seconds=0.5) as gateway:
        await _schemathesis(gateway, tmp_path)


async def _schemathesis(gateway: Gateway, tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        str(CHECKED_IN),
        "--url",
        gateway.url,
        # An admin of the default tenant; `ignored_auth` also tries each call without it.
        "--header",
        f"Authorization: Bearer {token()}",
        "--max-examples",
        "25",
        "--seed",
        str(SEED),
        "--phases",
        "examples,coverage,fuzzing",
        "--checks",
        "all",
        # Schema-valid input can still be refused, rightly: a handler no pioneer offers, a
        # random page token, an id that names nothing. Those answers are 4xx, not errors.
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-response-time",
        "2",
        "--generation-database",
        "none",
        # One worker: CPython 3.11's ast.parse is not thread-safe (hypothesis calls it).
        "--workers",
        "1",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "SCHEMATHESIS_WAIT_FOR_SCHEMA": "5"},
        cwd=tmp_path,
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    print(text[-6000:])
    assert process.returncode == 0, text[-6000:]
