"""Shared fixtures: a real MongoDB wire-protocol server (SecantusDB, its own process, as in
production) for the whole session, and a fresh database per test. Any test during which a
task's exception went unretrieved fails."""

from __future__ import annotations

import gc
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.engine.store.embedded import DatabaseProcess
from tests.stack import Client, EngineProcess, Stack, restartable_engine, start_stack

# Every service a test starts as a process inherits these: many run at once, and each would
# otherwise take its default metrics port (9101-9103). The tests that scrape set their own.
for _name in ("ENGINE_METRICS_PORT", "PIONEER_METRICS_PORT", "GATEWAY_METRICS_PORT"):
    os.environ.setdefault(_name, "0")


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
async def own_database(tmp_path: Path) -> AsyncIterator[str]:
    """A database server of the test's own, for a test whose load (tens of thousands of runs,
    a cluster of services) would slow the session's server for every test after it, and whose
    data takes longer to drop than a server to stop."""
    server = DatabaseProcess(tmp_path / "secantus")
    try:
        yield await server.start_async()
    finally:
        server.stop()


@pytest.fixture
async def stack(mongo_server: str, database: str) -> AsyncIterator[Stack]:
    running = await start_stack(mongo_server, database)
    try:
        yield running
    finally:
        await running.stop()


class _UnretrievedTaskExceptions(logging.Handler):
    """What asyncio logs when a task that failed is dropped with nobody awaiting it: a
    failure that went unseen, in the code under test or in the test."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "exception was never retrieved" in record.getMessage():
            exc = record.exc_info[1] if record.exc_info else None
            self.messages.append(f"{record.getMessage()}: {exc!r}")


_UNRETRIEVED = _UnretrievedTaskExceptions()
logging.getLogger("asyncio").addHandler(_UNRETRIEVED)


@pytest.fixture(autouse=True)
def no_unretrieved_task_exceptions() -> Iterator[None]:
    yield
    gc.collect()  # a dropped task is only reported when it is collected
    found, _UNRETRIEVED.messages[:] = list(_UNRETRIEVED.messages), []
    if found:
        pytest.fail("task exceptions nobody retrieved:\n" + "\n".join(found), pytrace=False)


@pytest.fixture
async def restartable(
    mongo_server: str, database: str, tmp_path: Path
) -> AsyncIterator[tuple[EngineProcess, Client]]:
    """The engine as a child process that a test may SIGKILL and start again, and a client of
    it (tests.stack.restartable_engine; a pioneer in this process runs the steps)."""
    async with restartable_engine(mongo_server, database, tmp_path / "engine.log") as running:
        _, engine, client = running
        yield engine, client
