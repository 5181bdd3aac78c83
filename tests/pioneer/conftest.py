"""Fixtures: a fake engine and a pioneer server, each on a real socket on port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from tests.pioneer.fake_engine import FakeEngine, start_fake_engine
from tests.pioneer.harness import MakePioneer, Pioneer, start_pioneer


@pytest.fixture
async def engine() -> AsyncIterator[FakeEngine]:
    fake, server = await start_fake_engine()
    yield fake
    await server.stop(None)


@pytest.fixture
async def make_pioneer(engine: FakeEngine) -> AsyncIterator[MakePioneer]:
    async with AsyncExitStack() as stack:

        async def make(**options: Any) -> Pioneer:
            return await start_pioneer(stack, engine.address, **options)

        yield make


@pytest.fixture
async def pioneer(make_pioneer: MakePioneer) -> Pioneer:
    return await make_pioneer()
