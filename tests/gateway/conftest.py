"""Fixtures for the gateway's tests: one engine stack per session (engine, pioneer and an
external HTTP step runner, on the session's MongoDB wire-protocol server), one gateway in front
of it, and an HTTP client. Tests that need other settings start their own gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.gateway.harness import Api, Gateway, GatewayStack, start_gateway, start_gateway_stack
from tests.stack import token


@pytest.fixture(scope="session")
async def gw_stack(mongo_server: str) -> AsyncIterator[GatewayStack]:
    stack = await start_gateway_stack(mongo_server)
    try:
        yield stack
    finally:
        await stack.stop()


@pytest.fixture(scope="session")
async def gateway(gw_stack: GatewayStack) -> AsyncIterator[Gateway]:
    running = await start_gateway(gw_stack.engine.port)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture(scope="session")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client of the default tenant with an admin's token, as the seed's clients would
    hold one now."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token()}"}) as client:
        yield client


@pytest.fixture
def api(session: aiohttp.ClientSession, gateway: Gateway) -> Api:
    return Api(session, gateway.url)
