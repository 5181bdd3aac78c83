"""The store's collections at start-up: their indexes, and the upgrades of data that earlier
versions wrote (each done once, marked done in `meta`)."""

from __future__ import annotations

import contextlib
import logging

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import BulkWriteError, OperationFailure

from services.auth import DEFAULT_TENANT
from services.engine.clock import utc_now
from services.engine.domain.execution import TERMINAL
from services.engine.store.database import DUPLICATE_KEY, Database
from services.engine.store.documents import event_id
from services.engine.store.leases import ORPHAN
from services.engine.store.workflows import UNIQUE_NAMES, version_doc

log = logging.getLogger(__name__)

RUNNER_RECORD_TTL_SECONDS = 24 * 3600
# Before events had their place in the log as _id (see _adopt_event_ids).
OLD_EVENT_INDEX = "execution_id_1_seq_1"
EVENT_IDS_MOVE = "event_ids_move"
TENANTS_ADOPTED = "tenants_adopted"
LEASES_PER_ENGINE = "leases_per_engine"
ENDED_AT_ADOPTED = "ended_at_adopted"
# The (tenant_id, name) index before names were unique.
OLD_WORKFLOW_NAME_INDEX = "tenant_id_1_name_1"
# A fenced lease is kept this long, so that an execution a fenced engine created after it was
# fenced (it cannot know) is still found as an orphan.
FENCED_LEASE_SECONDS = 24 * 3600


async def ensure_schema(db: Database) -> None:
    """Indexes, and the upgrades of data written by earlier versions."""
    await _adopt_untenanted(db)
    # The events need no index but their _id (documents.event_id).
    await _adopt_event_ids(db)
    await _adopt_ended_at(db)
    await db.executions.create_indexes(
        [
            # A request_id is one tenant's: another tenant may use the same one.
            IndexModel(
                [("tenant_id", ASCENDING), ("request_id", ASCENDING)],
                unique=True,
                partialFilterExpression={"request_id": {"$type": "string"}},
            ),
            IndexModel([("lease_owner", ASCENDING)]),
            # Parked runs, counted per tenant for the running-executions quota.
            IndexModel([("parked", ASCENDING)], sparse=True),
            # One field, equality only: what the queue listing reads (a compound index
            # here would slow with the backlog, see TOOLCHAIN.md).
            IndexModel([("queue.state", ASCENDING)], sparse=True),
            IndexModel([("tenant_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)]),
            # Listings narrowed by status ("the failed runs of the last hour"), newest first.
            IndexModel(
                [
                    ("tenant_id", ASCENDING),
                    ("status", ASCENDING),
                    ("created_at", DESCENDING),
                    ("_id", DESCENDING),
                ]
            ),
            IndexModel(
                [
                    ("tenant_id", ASCENDING),
                    ("workflow_id", ASCENDING),
                    ("created_at", DESCENDING),
                ]
            ),
            # Ended executions by end, for retention (store/retention.py): one field, set
            # only on those, so a round that finds nothing to delete costs nothing.
            IndexModel([("ended_at", ASCENDING)], sparse=True),
        ]
    )
    await _adopt_workflow_versions(db)
    await db.workflows.create_indexes(
        [
            IndexModel([("tenant_id", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)]),
            # A name is the tenant's one workflow's (store/workflows.py).
            IndexModel(
                [("tenant_id", ASCENDING), ("name", ASCENDING)], unique=True, name=UNIQUE_NAMES
            ),
        ]
    )
    await db.workflow_versions.create_indexes(
        [IndexModel([("workflow_id", ASCENDING), ("version", DESCENDING)])]
    )
    await db.blobs.create_indexes(
        [
            IndexModel("execution_id"),
            # Blobs whose execution retention has not yet seen (store/retention.py), and those
            # written before blobs had a created_at (found as None through this index).
            IndexModel("unchecked_since", sparse=True),
            IndexModel("created_at"),
        ]
    )
    await db.blob_chunks.create_indexes(
        [IndexModel([("blob_id", ASCENDING), ("n", ASCENDING)], unique=True)]
    )
    await db.step_stats.create_indexes([IndexModel("workflow_id")])
    # Runners come and go with their hosts: a day after its last poll a record goes.
    await db.runners.create_indexes(
        [IndexModel("last_poll_at", expireAfterSeconds=RUNNER_RECORD_TTL_SECONDS)]
    )
    # A revocation matters until the token it names expires, and goes then.
    await db.revoked_tokens.create_indexes([IndexModel("expires_at", expireAfterSeconds=0)])
    await db.leases.create_indexes(
        [
            IndexModel("expires_at"),
            IndexModel("engine_id"),
            IndexModel("fenced_at", expireAfterSeconds=FENCED_LEASE_SECONDS),
        ]
    )
    await db.schedules.create_indexes(
        [
            # What every engine's scheduler asks every few seconds (store/schedules.py): one
            # range on one field, set only on the schedules that run (none while paused).
            IndexModel("next_run_time", sparse=True),
            IndexModel([("tenant_id", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)]),
            IndexModel(
                [
                    ("tenant_id", ASCENDING),
                    ("workflow_id", ASCENDING),
                    ("created_at", ASCENDING),
                    ("_id", ASCENDING),
                ]
            ),
        ]
    )
    await _adopt_engine_leases(db)


async def _adopt_untenanted(db: Database) -> None:
    """Data written before tenants existed belongs to the default tenant; the global
    request_id index it had would still refuse one tenant a key another one used. Done
    once: a marker in `meta` spares every later start a scan of every execution."""
    if await db.meta.find_one({"_id": TENANTS_ADOPTED}) is not None:
        return
    for collection in (db.workflows, db.executions):
        await collection.update_many(
            {"tenant_id": {"$exists": False}}, {"$set": {"tenant_id": DEFAULT_TENANT}}
        )
    with contextlib.suppress(OperationFailure):
        await db.executions.drop_index("request_id_1")
    await db.meta.update_one({"_id": TENANTS_ADOPTED}, {"$set": {"at": utc_now()}}, upsert=True)


async def _adopt_workflow_versions(db: Database) -> None:
    """Workflows written before they had versions, and names were unique in a tenant: each
    becomes its own version 1, and of several with one name in a tenant the oldest keeps it
    while each other one is renamed "<name> (2)", "(3)"… (logged), since a unique index
    cannot be built over duplicates and the oldest is the one clients found by name first.
    Executions keep the name they started under. Done until the unique index exists; engines
    of an earlier version must not share the database after it (they would write no
    versions)."""
    names = [index["name"] async for index in await db.workflows.list_indexes()]
    if UNIQUE_NAMES in names:
        return
    oldest_first = [("created_at", ASCENDING), ("_id", ASCENDING)]
    docs = await db.workflows.find({}).sort(oldest_first).to_list()
    taken = {(d.get("tenant_id", DEFAULT_TENANT), d["name"]) for d in docs}
    seen: set[tuple[str, str]] = set()
    for doc in docs:
        tenant = doc.get("tenant_id", DEFAULT_TENANT)
        if (tenant, doc["name"]) in seen:
            renamed = _free_name(doc["name"], tenant, taken)
            taken.add((tenant, renamed))
            await db.workflows.update_one({"_id": doc["_id"]}, {"$set": {"name": renamed}})
            log.warning(
                "workflow renamed: names are unique in a tenant now",
                extra={"workflow_id": doc["_id"], "workflow": doc["name"], "renamed": renamed},
            )
            doc["name"] = renamed
        seen.add((tenant, doc["name"]))
    await db.workflows.update_many(
        {"version": {"$exists": False}}, [{"$set": {"version": 1, "updated_at": "$created_at"}}]
    )
    for doc in docs:
        doc.setdefault("version", 1)
        doc.setdefault("updated_at", doc["created_at"])
    if docs:
        try:
            await db.workflow_versions.insert_many([version_doc(d) for d in docs], ordered=False)
        except BulkWriteError as exc:  # another engine starting at the same time
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details["writeErrors"]):
                raise
    with contextlib.suppress(OperationFailure):
        await db.workflows.drop_index(OLD_WORKFLOW_NAME_INDEX)


def _free_name(name: str, tenant: str, taken: set[tuple[str, str]]) -> str:
    n = 2
    while True:
        suffix = f" ({n})"
        # Within the 200 characters a name may have.
        candidate = name[: 200 - len(suffix)] + suffix
        if (tenant, candidate) not in taken:
            return candidate
        n += 1


async def _adopt_ended_at(db: Database) -> None:
    """Executions that ended before status documents said when get their last update as
    their end, which is what it was; retention finds them by it. Done once (a marker in
    `meta`): an engine of an earlier version still running meanwhile ends executions without
    it, and retention never deletes those."""
    if await db.meta.find_one({"_id": ENDED_AT_ADOPTED}) is not None:
        return
    await db.executions.update_many(
        {"status": {"$in": sorted(TERMINAL)}, "ended_at": {"$exists": False}},
        [{"$set": {"ended_at": "$updated_at"}}],
    )
    await db.meta.update_one({"_id": ENDED_AT_ADOPTED}, {"$set": {"at": utc_now()}}, upsert=True)


async def _adopt_engine_leases(db: Database) -> None:
    """Executions leased one by one (before leases were per engine) become orphans, which
    the first engine to look claims; the per-execution lease index goes. Engines of both
    kinds must not share a database: stop the old ones before the first new one starts."""
    if await db.meta.find_one({"_id": LEASES_PER_ENGINE}) is not None:
        return
    await db.executions.update_many(
        {"lease_expires_at": {"$exists": True}},
        [
            {
                "$set": {
                    "lease_owner": {"$cond": [{"$eq": ["$lease_expires_at", None]}, None, ORPHAN]}
                }
            },
            {"$unset": "lease_expires_at"},
        ],
    )
    with contextlib.suppress(OperationFailure):
        await db.executions.drop_index("lease_expires_at_1")
    await db.meta.update_one({"_id": LEASES_PER_ENGINE}, {"$set": {"at": utc_now()}}, upsert=True)


async def _adopt_event_ids(db: Database) -> None:
    """Events written before their _id was their place in the log get one, and the
    (execution_id, seq) index they were read through goes. A marker in `meta` says a
    move is under way, so that an interrupted one is finished on the next start."""
    names = [index["name"] async for index in await db.events.list_indexes()]
    if OLD_EVENT_INDEX in names:
        await db.meta.update_one(
            {"_id": EVENT_IDS_MOVE}, {"$set": {"since": utc_now()}}, upsert=True
        )
        # Unique, it would refuse the copies while their originals are still there.
        await db.events.drop_index(OLD_EVENT_INDEX)
    if await db.meta.find_one({"_id": EVENT_IDS_MOVE}) is None:
        return
    moved = 0
    while old := await db.events.find({"_id": {"$type": "objectId"}}).limit(1000).to_list():
        copies = [{**d, "_id": event_id(d["execution_id"], d["seq"])} for d in old]
        try:
            await db.events.insert_many(copies, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details["writeErrors"]):
                raise
        await db.events.delete_many({"_id": {"$in": [d["_id"] for d in old]}})
        moved += len(old)
    await db.meta.delete_one({"_id": EVENT_IDS_MOVE})
    log.info("events given their place in the log as _id", extra={"events": moved})
