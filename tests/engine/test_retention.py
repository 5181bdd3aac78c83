"""Retention: an execution that ended a retention period ago goes with everything stored for it
(its events, its blobs, its bytes in the tenant's usage); one that runs, waits in the step
queue or waits for a command stays whole however old; blobs no execution came for go after
the grace; with retention 0 nothing goes; engines sweeping at once delete each thing once."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

import services.engine.retention as retention
from discovery_client.requests import struct
from services.auth import DEFAULT_TENANT
from services.engine.app import Engine
from services.engine.config import ConfigError, Settings
from services.engine.domain.errors import StoreUnavailable
from services.engine.retention import RetentionSweeper
from services.engine.store.mongo import MongoStore
from services.engine.store.repository import Swept
from tests.stack import KEY_FILES, Client, engine_settings, free_port, start_stack

SECOND = 1 / 86400  # in days
SWEEP_SECONDS = 0.2
# At the engine's blob threshold (64 KiB): kept apart as a blob.
LARGE = "x" * 64 * 1024
# What load_document takes for a PDF (it looks at the header only); it stores it as a blob of
# the step's, counted against the tenant on its own.
PDF = b"%PDF-1.4\n" + b"0" * 60_000


@pytest.fixture
async def db(mongo_server: str, database: str) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server, tz_aware=True)
    yield client[database]
    await client.close()


async def eventually(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"not after {seconds} s: {what}"
        await asyncio.sleep(0.05)


async def stored_for(db: AsyncDatabase[dict[str, Any]], execution_id: str) -> dict[str, Any]:
    """Everything the database holds for one execution (the tests' databases are small: a
    scan of the log is fine here)."""
    blobs = await db.blobs.find({"execution_id": execution_id}).to_list()
    ids = [b["_id"] for b in blobs]
    return {
        "execution": await db.executions.count_documents({"_id": execution_id}),
        "events": sorted([d["_id"] async for d in db.events.find({"execution_id": execution_id})]),
        "blobs": sorted(ids),
        "complete": [b.get("complete", True) for b in blobs],
        "chunks": await db.blob_chunks.count_documents({"blob_id": {"$in": ids}}),
    }


async def counted_bytes(db: AsyncDatabase[dict[str, Any]]) -> int:
    doc = await db.tenant_usage.find_one({"_id": DEFAULT_TENANT})
    return int(doc["stored_bytes"]) if doc else 0


async def not_found(c: Client, execution_id: str) -> bool:
    try:
        await c.get(execution_id)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND, exc.details()
        return True
    return False


async def test_ended_executions_go_with_all_they_stored_and_live_ones_stay_whole(
    mongo_server: str, database: str, db: AsyncDatabase[dict[str, Any]]
) -> None:
    inputs: dict[str, dict[str, Any]] = {}
    stack = await start_stack(
        mongo_server, database, retention_days=0, retention_sweep_seconds=SWEEP_SECONDS
    )
    c, serving = stack.client, True
    try:
        stored = await c.create_workflow("stored", {"name": "load", "handler": "load_document"})
        refused = await c.create_workflow(
            "refused", {"name": "no", "handler": "fail", "retry": {"max_attempts": 1}}
        )
        unserved = await c.create_workflow("unserved", {"name": "nap", "handler": "sleep"})
        manual = await c.create_workflow("manual", {"name": "later", "handler": "echo"})
        pdf = base64.b64encode(PDF).decode()
        inputs["completed"] = {"base64": pdf, "mime": "application/pdf", "nombre_documento": "a"}
        inputs["failed"] = {"message": "refused", "attached": LARGE}
        inputs["queued"] = {"seconds": 0.1, "attached": LARGE}
        inputs["parked"] = {"attached": LARGE}
        ids = {
            "completed": (await c.start(stored.workflow_id, inputs["completed"])).execution_id,
            "failed": (await c.start(refused.workflow_id, inputs["failed"])).execution_id,
            "parked": (
                await c.start(manual.workflow_id, inputs["parked"], manual=True)
            ).execution_id,
        }
        assert (await c.wait_terminal(ids["completed"])).status == ex_pb.EXECUTION_STATUS_COMPLETED
        assert (await c.wait_terminal(ids["failed"])).status == ex_pb.EXECUTION_STATUS_FAILED
        await stack.pioneer.stop()  # from here on nobody takes a step
        serving = False
        ids["queued"] = (await c.start(unserved.workflow_id, inputs["queued"])).execution_id

        async def parked() -> bool:
            return (await c.get(ids["parked"])).status == ex_pb.EXECUTION_STATUS_WAITING

        await eventually(parked, "the manual run waits")
        queued = await c.get(ids["queued"])
        assert queued.status == ex_pb.EXECUTION_STATUS_RUNNING
        assert [a.status for a in queued.steps_history] == [ex_pb.ATTEMPT_STATUS_QUEUED]
        # The tenant is charged the inputs as sent, and the PDF the step stored.
        charged = {name: struct(value).ByteSize() for name, value in inputs.items()}
        charged["completed"] += len(PDF)

        async def all_counted() -> bool:
            return await counted_bytes(db) == sum(charged.values())

        await eventually(all_counted, "the usage counts every execution")
        before = {name: await stored_for(db, i) for name, i in ids.items()}
        assert len(before["completed"]["blobs"]) == 2, "its input's and its step's"
        for name in ("failed", "queued", "parked"):
            assert len(before[name]["blobs"]) == 1, name
        # Retention 0: several sweep periods go by and nothing is deleted.
        await asyncio.sleep(5 * SWEEP_SECONDS)
        assert {name: await stored_for(db, i) for name, i in ids.items()} == before
    finally:
        await c.close()
        await stack.engine.stop(grace=0)
        if serving:
            await stack.pioneer.stop()

    # What a start leaves when its engine dies between its input's blob and its execution;
    # and such a blob as an earlier version wrote it, without created_at.
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server, tz_aware=True)
    try:
        writer = MongoStore(client, database)
        ref = await writer.put_blob(str(uuid.uuid4()), b"s" * 1000, part_of_input=True)
    finally:
        await client.close()
    stranded = ref.blob_id
    old = str(uuid.uuid4())
    await db.blobs.insert_one(
        {"_id": old, "execution_id": str(uuid.uuid4()), "size_bytes": 3, "sha256": "", "chunks": 1}
    )
    await db.blob_chunks.insert_one({"blob_id": old, "n": 0, "data": b"old"})
    # The failed run as an earlier version left it: ended, but not saying when.
    await db.executions.update_one({"_id": ids["failed"]}, {"$unset": {"ended_at": ""}})
    await db.meta.delete_one({"_id": "ended_at_adopted"})

    # An engine alone: no runner takes the queued step.
    port = free_port()
    settings = engine_settings(mongo_server, database, port)
    engine = Engine(replace(settings, retention_days=SECOND, retention_sweep_seconds=SWEEP_SECONDS))
    await engine.start()
    c = Client(f"127.0.0.1:{port}")
    try:
        for name in ("completed", "failed"):

            async def gone(execution_id: str = ids[name]) -> bool:
                return await not_found(c, execution_id)

            await eventually(gone, f"the {name} execution is deleted")
            assert await stored_for(db, ids[name]) == {
                "execution": 0,
                "events": [],
                "blobs": [],
                "complete": [],
                "chunks": 0,
            }
            blob_ids = before[name]["blobs"]
            assert await db.blob_chunks.count_documents({"blob_id": {"$in": blob_ids}}) == 0

        async def collected() -> bool:
            return await db.blobs.count_documents({"_id": {"$in": [stranded, old]}}) == 0

        await eventually(collected, "the stranded blobs are collected")
        assert await db.blob_chunks.count_documents({"blob_id": {"$in": [stranded, old]}}) == 0
        # Sweeps that deleted all that, and found the live runs as old, left them whole.
        for name in ("queued", "parked"):
            assert await stored_for(db, ids[name]) == before[name], name
        assert (await c.get(ids["queued"])).status == ex_pb.EXECUTION_STATUS_RUNNING
        assert (await c.get(ids["parked"])).status == ex_pb.EXECUTION_STATUS_WAITING
        assert await counted_bytes(db) == charged["queued"] + charged["parked"]
        # And the engine's metrics count them (two executions, their blobs, the stranded two).
        metrics = engine.metrics.registry
        assert (
            metrics.get_sample_value("discovery_retention_deleted_total", {"kind": "executions"})
            == 2
        )
        deleted_blobs = len(before["completed"]["blobs"]) + len(before["failed"]["blobs"]) + 2
        assert (
            metrics.get_sample_value("discovery_retention_deleted_total", {"kind": "blobs"})
            == deleted_blobs
        )
        assert (
            metrics.get_sample_value("discovery_retention_deleted_total", {"kind": "events"}) or 0
        ) > 0
    finally:
        await c.close()
        await engine.stop(grace=0)


async def test_engines_sweeping_at_once_delete_each_execution_and_its_bytes_once(
    mongo_server: str,
    database: str,
    db: AsyncDatabase[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack = await start_stack(mongo_server, database, retention_days=0)
    try:
        c = stack.client
        workflow = await c.create_workflow("w", {"name": "s", "handler": "echo"})
        started = [
            (await c.start(workflow.workflow_id, {"n": n, "attached": LARGE})).execution_id
            for n in range(7)
        ]
        for execution_id in started:
            await c.wait_terminal(execution_id)
        charged = 7 * struct({"n": 0, "attached": LARGE}).ByteSize()

        async def all_counted() -> bool:
            return await counted_bytes(db) == charged

        await eventually(all_counted, "the usage counts every execution")
    finally:
        await stack.stop()
    events = await db.events.count_documents({})
    # Small batches, so that the two interleave over several.
    monkeypatch.setattr(retention, "BATCH", 2)
    clients: list[AsyncMongoClient[dict[str, Any]]] = [
        AsyncMongoClient(mongo_server, tz_aware=True) for _ in range(2)
    ]
    sweepers = [
        RetentionSweeper(MongoStore(client, database), days=SECOND, sweep_seconds=1)
        for client in clients
    ]
    try:
        await asyncio.sleep(1.5 * SECOND * 86400)  # all of them ended a retention period ago
        total = Swept()
        # Two at once, until nothing is left: a round whose closing transaction kept meeting
        # the other's leaves the rest to the next.
        while await db.executions.count_documents({}):
            for swept in await asyncio.gather(*(s.sweep() for s in sweepers)):
                total += swept
    finally:
        for client in clients:
            await client.close()
    assert total.executions == 7
    assert total.events == events
    assert total.blobs == 7 and total.blob_bytes == 7 * len(LARGE)
    assert total.tenant_bytes == charged
    assert await counted_bytes(db) == 0
    assert await db.blobs.count_documents({}) == 0
    assert await db.blob_chunks.count_documents({}) == 0


class FailingOnce:
    """A store whose database fails the first round."""

    def __init__(self) -> None:
        self.rounds = 0

    async def delete_ended(self, before: datetime, limit: int) -> tuple[Swept, bool]:
        self.rounds += 1
        if self.rounds == 1:
            raise StoreUnavailable("the database is unavailable (AutoReconnect); retry")
        return Swept(executions=1, events=3), False

    async def collect_stranded_blobs(
        self, now: datetime, grace: timedelta, limit: int
    ) -> tuple[Swept, bool]:
        return Swept(), False


async def test_a_round_the_database_fails_is_logged_and_the_next_one_tries_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FailingOnce()
    sweeper = RetentionSweeper(store, days=1, sweep_seconds=0.01)
    caplog.set_level(logging.INFO, logger=retention.__name__)
    sweeper.start()
    try:

        async def swept_again() -> bool:
            return store.rounds >= 3

        await eventually(swept_again, "rounds after the failed one", seconds=10)
    finally:
        await sweeper.stop()
    messages = [
        (r.levelname, r.getMessage()) for r in caplog.records if r.name == retention.__name__
    ]
    assert messages[0][0] == "WARNING" and "the next one tries again" in messages[0][1]
    assert ("INFO", "retention deleted 1 ended executions and 0 stranded or ended blobs") in (
        messages
    )


def test_retention_settings_and_a_bad_value_naming_its_variable() -> None:
    defaults = Settings.from_env(KEY_FILES)
    assert (defaults.retention_days, defaults.retention_sweep_seconds) == (30.0, 600.0)
    given = Settings.from_env(
        {
            **KEY_FILES,
            "DISCOVERY_RETENTION_DAYS": "0.5",
            "DISCOVERY_RETENTION_SWEEP_SECONDS": "0.2",
        }
    )
    assert (given.retention_days, given.retention_sweep_seconds) == (0.5, 0.2)
    assert Settings.from_env({**KEY_FILES, "DISCOVERY_RETENTION_DAYS": "0"}).retention_days == 0
    for name, value in [
        ("DISCOVERY_RETENTION_DAYS", "-1"),
        ("DISCOVERY_RETENTION_DAYS", "a month"),
        ("DISCOVERY_RETENTION_SWEEP_SECONDS", "0"),
    ]:
        with pytest.raises(ConfigError, match=f"^{name}="):
            Settings.from_env({**KEY_FILES, name: value})
