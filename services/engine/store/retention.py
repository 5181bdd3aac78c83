"""What retention deletes (services/engine/retention.py says when): executions that ended long
enough ago, with everything stored for them, and blobs whose execution never came.

An ended execution is found by `ended_at`, which its status document gets with its terminal
status, in the commit of its last event (documents.status_to_doc), and which nothing else
sets: an execution that runs, waits in the step queue or waits for a command has none, and is
never looked at. What it stored goes first and its status document last, so that a round cut
short (a crash, the database away) leaves it to be found again; every delete is by key, so
engines sweeping at once only repeat each other:

- its events, by their ids: the log is gapless from seq 1 to the status document's last_seq
  (a range of _id is a scan of the whole log on SecantusDB);
- its blobs' chunks;
- in one transaction: its blobs' metadata and its status document, read again in it, and
  what its tenant was charged for it (its input as its start counted it, `input_bytes`; the
  blobs its steps wrote, `counted_bytes`) taken off the tenant's stored-bytes counter. Two
  engines deleting the same execution at once conflict and one gives up: the bytes are taken
  off once.

Everything else kept per execution is in its status document (the attempts, the queue entry,
the lease, the request_id) and goes with it. Step durations are per workflow (estimates) and
stay; engine leases, runners and revoked tokens are nobody's execution's.

A start writes its input's large values as blobs before its execution, so a start refused
after that, or an engine that died in between, leaves blobs that no execution names (a step
writes blobs only for an execution that runs, which goes with it). Each blob is looked at once,
`grace` after it was stored (`unchecked_since`, set by blobs.put): if its execution exists it
is left to go with it, otherwise it is deleted. Blobs stored before they had a `created_at`
are stamped as created when a round first sees them, and looked at `grace` later.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from services.auth import DEFAULT_TENANT
from services.engine.domain.execution import TERMINAL
from services.engine.store.database import Database
from services.engine.store.documents import event_id
from services.engine.store.errors import domain_errors
from services.engine.store.repository import Swept

log = logging.getLogger(__name__)

# Documents one delete_many takes: on SecantusDB its cost grows faster than their number past
# about a hundred (measured: 100 events 25 ms, 200 80 ms, 400 265 ms, 1,000 3.3 s).
IDS_PER_DELETE = 100
# Blobs whose chunks one delete_many takes: a blob has up to 16 chunks of 4 MiB.
BLOBS_PER_CHUNK_DELETE = 10
# Tries of the closing transaction when it meets another writer (an engine deleting the same
# executions, a tenant's counter being added to); then the next round tries again.
TRANSACTION_TRIES = 3


@domain_errors
class RetentionSweeps:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def delete_ended(self, before: datetime, limit: int) -> tuple[Swept, bool]:
        # One field, one range: read through its sparse index (a compound one on status and
        # time, with `$in` on status, is a collection scan on SecantusDB).
        found = (
            await self._db.executions.find(
                {"ended_at": {"$lt": before}}, {"status": 1, "last_seq": 1}
            )
            .limit(limit)
            .to_list()
        )
        # ended_at comes with a terminal status only; the status is checked all the same, as
        # the promise never to delete a live execution is kept here.
        ended = {d["_id"]: int(d["last_seq"]) for d in found if d.get("status") in TERMINAL}
        if not ended:
            return Swept(), False
        events = await self._delete_events(ended)
        blobs = self._db.blobs.find({"execution_id": {"$in": list(ended)}}, {"_id": 1})
        await self._delete_chunks([b["_id"] async for b in blobs])
        closed = await self._delete_documents(list(ended), before)
        if closed is None:
            return Swept(events=events), False
        # Another engine deleted them all meanwhile: it goes on, this one stops.
        more = len(found) == limit and closed.executions > 0
        return closed + Swept(events=events), more

    async def _delete_events(self, logs: dict[str, int]) -> int:
        ids = (event_id(e, seq) for e, last in logs.items() for seq in range(1, last + 1))
        deleted = await _delete_ids(self._db.events, ids)
        # One commit writes an execution's last event and its status document: its log ends
        # at last_seq. Whatever may follow all the same is looked for, and goes too.
        tails = dict(logs)
        while tails:
            after = {event_id(e, last + 1): e for e, last in tails.items()}
            found = [
                d["_id"]
                async for d in self._db.events.find({"_id": {"$in": list(after)}}, {"_id": 1})
            ]
            deleted += await _delete_ids(self._db.events, found)
            tails = {after[i]: tails[after[i]] + 1 for i in found}
        return deleted

    async def _delete_chunks(self, blob_ids: list[str]) -> None:
        for i in range(0, len(blob_ids), BLOBS_PER_CHUNK_DELETE):
            group = blob_ids[i : i + BLOBS_PER_CHUNK_DELETE]
            await self._db.blob_chunks.delete_many({"blob_id": {"$in": group}})

    async def _delete_documents(self, ids: list[str], before: datetime) -> Swept | None:
        """The status documents and the blobs' metadata, and the tenants' bytes, in one
        transaction; None when it kept meeting another writer."""
        for _ in range(TRANSACTION_TRIES):
            try:
                async with self._db.transaction() as session:
                    # Read again in the transaction: another engine may have deleted some.
                    docs = await self._db.executions.find(
                        {"_id": {"$in": ids}},
                        {"tenant_id": 1, "status": 1, "ended_at": 1, "input_bytes": 1},
                        session=session,
                    ).to_list()
                    ended = [
                        d for d in docs if d.get("status") in TERMINAL and d["ended_at"] < before
                    ]
                    tenants = {d["_id"]: d.get("tenant_id", DEFAULT_TENANT) for d in ended}
                    charged: Counter[str] = Counter()
                    for d in ended:
                        # Started before executions said: not known, so not taken off.
                        charged[tenants[d["_id"]]] += int(d.get("input_bytes", 0))
                    blobs = await self._db.blobs.find(
                        {"execution_id": {"$in": list(tenants)}},
                        {"execution_id": 1, "size_bytes": 1, "counted_bytes": 1},
                        session=session,
                    ).to_list()
                    for b in blobs:
                        # Written before blobs said: not known, so not taken off.
                        charged[tenants[b["execution_id"]]] += int(b.get("counted_bytes", 0))
                    if blobs:
                        await self._db.blobs.delete_many(
                            {"_id": {"$in": [b["_id"] for b in blobs]}}, session=session
                        )
                    if tenants:
                        await self._db.executions.delete_many(
                            {"_id": {"$in": list(tenants)}}, session=session
                        )
                    # $inc, never a read and a write: added to and taken off in any order, the
                    # counter comes out the same (an engine's additions reach it up to a
                    # second after a start, quotas.py).
                    taken_off = [
                        UpdateOne({"_id": tenant}, {"$inc": {"stored_bytes": -size}}, upsert=True)
                        for tenant, size in charged.items()
                        if size
                    ]
                    if taken_off:
                        await self._db.tenant_usage.bulk_write(
                            taken_off, ordered=False, session=session
                        )
                return Swept(
                    executions=len(tenants),
                    blobs=len(blobs),
                    blob_bytes=sum(int(b.get("size_bytes", 0)) for b in blobs),
                    tenant_bytes=sum(charged.values()),
                )
            except PyMongoError as exc:
                if not exc.has_error_label("TransientTransactionError"):
                    raise
        log.info("ended executions met another writer: deleted at a later round")
        return None

    async def collect_stranded_blobs(
        self, now: datetime, grace: timedelta, limit: int
    ) -> tuple[Swept, bool]:
        blobs = self._db.blobs
        # `None` finds a missing field through the index, `$exists` would not.
        unstamped = await blobs.find({"created_at": None}, {"_id": 1}).limit(limit).to_list()
        if unstamped:
            await blobs.update_many(
                {"_id": {"$in": [b["_id"] for b in unstamped]}},
                {"$set": {"created_at": now, "unchecked_since": now}},
            )
        due = (
            await blobs.find(
                {"unchecked_since": {"$lt": now - grace}}, {"execution_id": 1, "size_bytes": 1}
            )
            .limit(limit)
            .to_list()
        )
        more = len(due) == limit or len(unstamped) == limit
        if not due:
            return Swept(), more
        owners = list({b["execution_id"] for b in due})
        existing = {
            d["_id"] async for d in self._db.executions.find({"_id": {"$in": owners}}, {"_id": 1})
        }
        kept = [b["_id"] for b in due if b["execution_id"] in existing]
        if kept:
            # Its execution came: the blob goes with it, and is not looked at again.
            await blobs.update_many({"_id": {"$in": kept}}, {"$unset": {"unchecked_since": ""}})
        stranded = [b for b in due if b["execution_id"] not in existing]
        if not stranded:
            return Swept(), more
        ids = [b["_id"] for b in stranded]
        await self._delete_chunks(ids)
        deleted = await _delete_ids(blobs, ids)
        return Swept(
            blobs=deleted, blob_bytes=sum(int(b.get("size_bytes", 0)) for b in stranded)
        ), more


async def _delete_ids(collection: AsyncCollection[dict[str, Any]], ids: Iterable[str]) -> int:
    # Taken a batch at a time: an execution may have logged tens of thousands of events.
    deleted, rest = 0, iter(ids)
    while batch := list(itertools.islice(rest, IDS_PER_DELETE)):
        deleted += (await collection.delete_many({"_id": {"$in": batch}})).deleted_count
    return deleted
