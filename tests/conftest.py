"""Shared fixtures: a real MongoDB wire-protocol server (SecantusDB, its own process, as in
production) for the whole session, and a fresh database per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.engine.store.embedded import DatabaseProcess
from tests.stack import Stack, start_stack


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path: Path = tmp_path_factory.mktemp("secantus")
    server = DatabaseProcess(path)
    yield server.start()
    server.stop()


@pytest.fixture
def database() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def stack(mongo_server: str, database: str) -> AsyncIterator[Stack]:
    running = await start_stack(mongo_server, database)
    try:
        yield running
    finally:
        await running.stop()
