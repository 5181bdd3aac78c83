"""A client killed in the middle of a transaction (an engine SIGKILLed during a commit) leaves
that transaction open, and what it wrote locked: the embedded database drops it after
TRANSACTION_IDLE_SECONDS, so that the engine's lease document, which every commit writes, can
be fenced and its executions taken over without waiting a minute."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure

from services.engine.store.embedded import TRANSACTION_IDLE_SECONDS
from services.engine.store.mongo import MongoStore

# A client that opens a transaction, writes the document, says so, and never commits.
ABANDON = textwrap.dedent(
    """
    import sys, time
    from pymongo import MongoClient
    client = MongoClient(sys.argv[1])
    with client.start_session() as session:
        session.start_transaction()
        client[sys.argv[2]]["leases"].update_one(
            {"_id": "lease"}, {"$set": {"renewed": True}}, session=session
        )
        print("open", flush=True)
        time.sleep(600)
    """
)


@contextlib.asynccontextmanager
async def killed_in_a_commit(script: str, uri: str, database: str) -> AsyncIterator[float]:
    """Runs `script` until its transaction is open, SIGKILLs it, and yields when it died
    (time.monotonic())."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, uri, database, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        assert (await child.stdout.readline()).strip() == b"open"
        child.send_signal(signal.SIGKILL)
        await child.wait()
        yield time.monotonic()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


async def fence(uri: str, database: str) -> None:
    """Writes the document in a transaction of its own, as an engine fencing a lease does;
    a write conflict with the open transaction raises."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        async with client.start_session() as session, await session.start_transaction():
            await client[database]["leases"].update_one(
                {"_id": "lease"}, {"$set": {"fenced": True}}, session=session
            )
    finally:
        await client.close()


async def test_the_commit_of_a_killed_client_is_dropped_and_its_document_written_again(
    mongo_server: str, database: str
) -> None:
    seed: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server)
    await seed[database]["leases"].insert_one({"_id": "lease"})
    await seed.close()
    async with killed_in_a_commit(ABANDON, mongo_server, database) as killed:
        try:
            await fence(mongo_server, database)
            raise AssertionError("the killed client's transaction held nothing")
        except OperationFailure as exc:
            assert exc.has_error_label("TransientTransactionError"), exc
        while True:
            try:
                await fence(mongo_server, database)
                break
            except OperationFailure as exc:
                assert exc.has_error_label("TransientTransactionError"), exc
                assert time.monotonic() - killed < TRANSACTION_IDLE_SECONDS + 5
                await asyncio.sleep(0.2)
        dropped_after = time.monotonic() - killed
    check: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server)
    doc = await check[database]["leases"].find_one({"_id": "lease"})
    await check.close()
    # Its write went with it; the fence's stayed.
    assert doc == {"_id": "lease", "fenced": True}
    assert dropped_after >= TRANSACTION_IDLE_SECONDS - 1


# An engine killed in the middle of a commit, holding an execution's status document.
ABANDON_EXECUTION = ABANDON.replace('["leases"]', '["executions"]').replace(
    '{"_id": "lease"}', '{"_id": "e-locked"}'
)


async def test_a_restarted_engine_claims_around_a_killed_engines_commit(
    mongo_server: str, database: str
) -> None:
    """The claim of a dead engine's executions must not wait on its open commit: a plain write
    waited past the database's drop of it, and a restarted engine never served (chaos test).
    It claims what it can now and the rest at a later lease round."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server, tz_aware=True)
    store = MongoStore(client, database)
    await store.open()
    await client[database]["executions"].insert_many(
        [{"_id": "e-locked", "lease_owner": ""}, {"_id": "e-free", "lease_owner": ""}]
    )
    try:
        async with killed_in_a_commit(ABANDON_EXECUTION, mongo_server, database):
            await store.acquire_lease("restarted", "", 60, fence_namesakes=False)
            # Before: this waited on the killed commit for good.
            claimed = await asyncio.wait_for(store.claim_orphans(), 10)
            assert claimed == []  # both in one claim, which meets the open commit: later
            while "e-locked" not in claimed:
                await asyncio.sleep(0.5)
                claimed = await asyncio.wait_for(store.claim_orphans(), 10)
            assert sorted(claimed) == ["e-free", "e-locked"]
    finally:
        await store.close()
        await client.close()


async def test_a_command_claims_around_a_killed_engines_commit(
    mongo_server: str, database: str
) -> None:
    """A report or command for a dead engine's execution claims it by its _id: that claim
    waited on the dead engine's open commit for good, as the lease round's did. It answers
    at once (not held: the caller looks again, UNAVAILABLE after a few looks), and holds the
    execution once the database dropped the commit."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server, tz_aware=True)
    store = MongoStore(client, database)
    await store.open()
    await client[database]["executions"].insert_one({"_id": "e-locked", "lease_owner": ""})
    try:
        async with killed_in_a_commit(ABANDON_EXECUTION, mongo_server, database) as killed:
            await store.acquire_lease("restarted", "", 60, fence_namesakes=False)
            claim = await asyncio.wait_for(store.claim_execution("e-locked"), 10)
            assert not claim.held and claim.owner_address is None
            while not claim.held:
                assert time.monotonic() - killed < TRANSACTION_IDLE_SECONDS + 10
                await asyncio.sleep(0.5)
                claim = await asyncio.wait_for(store.claim_execution("e-locked"), 10)
        doc = await client[database]["executions"].find_one({"_id": "e-locked"})
        assert doc is not None and doc["lease_owner"] == store.lease_id
    finally:
        await store.close()
        await client.close()
