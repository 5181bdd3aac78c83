"""Which engine holds which executions, in the database.

Each engine process takes a lease of its own (a document in `engine_leases`) and holds the
executions whose `lease_owner` is that lease. An engine that stops renewing its lease in time
is fenced by another (`fenced_at` set): it cannot write anything afterwards (every commit
renews the lease only while it is not fenced, store/commits.py), and its executions are
orphans any engine claims, all at once at a lease round (`claim_orphans`) or one by one when a
call names one (`claim_execution`). A waiting execution is parked: no engine holds it, and the
next command moves it to the engine it reaches.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pymongo.errors import PyMongoError

from services.engine.clock import utc_now
from services.engine.domain.errors import Fenced
from services.engine.store.database import Database
from services.engine.store.errors import domain_errors
from services.engine.store.repository import Claim, LeaseHolder

log = logging.getLogger(__name__)
W = TypeVar("W")

# The lease_owner of an execution whose engine lease is unknown (written before leases were
# per engine): any engine claims it.
ORPHAN = ""


@domain_errors
class EngineLeases:
    def __init__(self, db: Database) -> None:
        self._db = db
        # This engine's lease (acquire), and the fenced leases it last saw.
        self._lease: LeaseHolder | None = None
        self._fenced: list[str] = []
        # Whether another engine held a live lease when this one last looked; set once it did.
        self.others_alive = False
        self.company = asyncio.Event()

    def lost(self) -> None:
        """Another engine fenced this one's lease: nothing more is written under it."""
        self._lease = None

    @property
    def held(self) -> LeaseHolder | None:
        return self._lease

    @property
    def lease_id(self) -> str | None:
        return self._lease.lease_id if self._lease is not None else None

    def current(self) -> LeaseHolder:
        if self._lease is None:
            raise Fenced("this engine holds no lease; retry")
        return self._lease

    def _lease_id(self) -> str:
        return self.current().lease_id

    async def acquire(
        self, engine_id: str, address: str, seconds: float, *, fence_namesakes: bool
    ) -> str:
        now = utc_now()
        lease = LeaseHolder(str(uuid.uuid4()), timedelta(seconds=seconds))
        await self._db.leases.insert_one(
            {
                "_id": lease.lease_id,
                "engine_id": engine_id,
                "address": address,
                "started_at": now,
                "expires_at": now + lease.duration,
                "fenced_at": None,
            }
        )
        if fence_namesakes:
            # An engine restarted with the same ENGINE_ID: its earlier self is gone, and its
            # executions are this one's at once rather than after its lease runs out.
            earlier = self._db.leases.find(
                {"engine_id": engine_id, "fenced_at": None, "_id": {"$ne": lease.lease_id}},
                {"_id": 1},
            )
            for doc in await earlier.to_list():
                await self._fence(doc["_id"], now, expired_only=False)
        self._lease = lease
        await self._read_leases()
        return lease.lease_id

    async def release(self) -> None:
        lease = self._lease
        if lease is not None:
            # Expired now: the other engines fence it and take its executions at their next
            # lease round instead of a lease period later.
            await self._db.leases.update_one(
                {"_id": lease.lease_id, "fenced_at": None}, {"$set": {"expires_at": utc_now()}}
            )

    async def fence_expired(self, now: datetime) -> None:
        # Never this engine's own: it is alive, and a commit that outlasted the lease renews
        # it (as long as no other engine fenced it meanwhile). Fencing itself would only make
        # it let go of and reload everything it holds.
        expired = self._db.leases.find(
            {"expires_at": {"$lt": now}, "fenced_at": None, "_id": {"$ne": self.lease_id}},
            {"_id": 1},
        )
        for doc in await expired.to_list():
            await self._fence(doc["_id"], now, expired_only=True)
        await self._read_leases()

    async def _read_leases(self) -> None:
        # A handful of documents: the engines alive, and those that went within
        # FENCED_LEASE_SECONDS (schema.py: a TTL index drops them then).
        now, mine = utc_now(), self.lease_id
        fenced, others = [], False
        async for doc in self._db.leases.find({}, {"fenced_at": 1, "expires_at": 1}):
            if doc["fenced_at"] is not None:
                fenced.append(doc["_id"])
            elif doc["_id"] != mine and doc["expires_at"] > now:
                others = True
        self._fenced, self.others_alive = fenced, others
        if others:
            self.company.set()

    async def _fence(self, lease_id: str, now: datetime, *, expired_only: bool) -> None:
        query: dict[str, Any] = {"_id": lease_id, "fenced_at": None}
        if expired_only:
            query["expires_at"] = {"$lt": now}
        result = await self._unless_in_a_commit(
            functools.partial(self._db.leases.update_one, query, {"$set": {"fenced_at": now}})
        )
        if result is None:
            log.info("lease %s is in a commit: fenced at a later round", lease_id)
        elif result.modified_count:
            log.warning("engine lease fenced", extra={"lease": lease_id})

    async def claim_orphans(self) -> list[str]:
        mine = self._lease_id()
        orphans = {"lease_owner": {"$in": [ORPHAN, *self._fenced]}}
        # A read first, and a write only when there is something to claim (seldom): under
        # load the multi-document update took seconds each lease round even when it matched
        # nothing (SecantusDB, while commits wrote the same collection).
        found = await self._db.executions.find(orphans, {"_id": 1}).to_list()
        if found:
            claimed = await self._unless_in_a_commit(
                functools.partial(
                    self._db.executions.update_many,
                    {"_id": {"$in": [d["_id"] for d in found]}, **orphans},
                    {"$set": {"lease_owner": mine}},
                )
            )
            if claimed is None:
                log.info("executions in an unfinished commit: claimed at a later round")
        cursor = self._db.executions.find({"lease_owner": mine}, {"_id": 1})
        return [d["_id"] for d in await cursor.to_list()]

    async def _unless_in_a_commit(self, write: Callable[..., Awaitable[W]]) -> W | None:
        """`write` in a transaction of its own, or None when it meets a commit that has not
        ended. An engine killed in the middle of a commit leaves what it wrote (its lease,
        its executions' documents) locked until the database drops that commit, and a plain
        write waits for it (on SecantusDB past the drop: for good; an engine restarted after
        a kill never served). This write gives up at once: the caller tries again later.
        Only for documents another engine may have been writing: this engine's own commits
        end, and its writes to its own documents wait for them."""
        try:
            async with self._db.transaction() as session:
                return await write(session=session)
        except PyMongoError as exc:
            if not exc.has_error_label("TransientTransactionError"):
                raise
            return None

    async def claim_execution(self, execution_id: str) -> Claim:
        for _ in range(2):
            mine = self._lease_id()
            claimable: list[str | None] = [mine, ORPHAN, *self._fenced]
            # A read first: the update is for what this engine may take, and it would wait
            # on the holder's open commit of the same document otherwise (and a non-owner
            # looks for the holder of every execution a forwarded call names).
            doc = await self._db.executions.find_one(
                {"_id": execution_id}, {"lease_owner": 1, "parked": 1}
            )
            owner = doc.get("lease_owner") if doc else None
            if owner == mine:
                return Claim(held=True)
            if doc is not None and (doc.get("parked") is True or owner in claimable):
                result = await self._unless_in_a_commit(
                    functools.partial(
                        self._db.executions.update_one,
                        {
                            "_id": execution_id,
                            "$or": [{"lease_owner": {"$in": claimable}}, {"parked": True}],
                        },
                        {"$set": {"lease_owner": mine}, "$unset": {"parked": ""}},
                    )
                )
                if result is not None and result.matched_count:
                    return Claim(held=True)
                # It moved meanwhile, or its dead engine's last commit holds it until the
                # database drops that: look again (the caller too, then UNAVAILABLE).
                continue
            if not owner:
                return Claim(held=False)  # it ended meanwhile
            lease = await self._db.leases.find_one({"_id": owner})
            now = utc_now()
            if lease is not None and lease["fenced_at"] is None and lease["expires_at"] > now:
                return Claim(
                    held=False, owner_address=lease["address"], owner_until=lease["expires_at"]
                )
            # Its engine is gone: fenced since this engine last looked, or due to be.
            if lease is not None and lease["fenced_at"] is None:
                await self._fence(owner, now, expired_only=True)
            await self._read_leases()
        return Claim(held=False)

    async def reopen(self, execution_id: str, last_seq: int) -> bool:
        # An ended execution's document has no owner and an `ended_at` (status_to_doc): the
        # engine that reopens it owns it, and retention no longer sees it as ended. Its own
        # status is written by the retry's first commit, under this lease.
        result = await self._db.executions.update_one(
            {"_id": execution_id, "last_seq": last_seq, "lease_owner": None},
            {"$set": {"lease_owner": self._lease_id()}, "$unset": {"ended_at": ""}},
        )
        return result.matched_count == 1

    async def park(self, execution_id: str) -> bool:
        result = await self._db.executions.update_one(
            {"_id": execution_id, "lease_owner": self._lease_id()},
            {"$set": {"lease_owner": None, "parked": True}},
        )
        return result.matched_count == 1
