"""The MongoDB store, through pymongo's AsyncMongoClient.

Writes to the event log are group-committed: appends from every execution that arrive while
a write is in flight go out together in one `insert_many`. A lone append costs one round
trip; two hundred busy executions cost a few. An event's _id is its place in the log
(`execution_id:seq`), which is what makes a lost race between two writers impossible to miss.

The status document (the projection of the log that listings read) is written apart from the
events, at most once a `PROJECTION_SECONDS` per execution, and right after the events when the
execution ends: rewriting the whole document for every event was most of what the database
spent per event. Until it is written, this store answers listings from the unwritten
document, and a load catches up from the log, so both are exact here; another engine's
listing may be that much behind.

Executions are leased per engine: each engine process takes a lease of its own (a document in
`engine_leases`) and owns the executions whose `lease_owner` is that lease. Every commit of the
log, and every status document written, goes in one transaction with an update of the lease
document that finds it only while it is not fenced: an engine whose lease another engine fenced
(it stopped renewing it in time) cannot write anything afterwards, and its executions are
orphans any engine claims. A commit also renews the lease; the lease loop renews it through the
same write loop, so that this engine's own writes never conflict with each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, UpdateOne
from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from services.auth import DEFAULT_TENANT
from services.engine.clock import utc_now
from services.engine.domain.errors import BlobNotFound, Fenced, NotOwner, StoreUnavailable
from services.engine.domain.execution import DEFAULT_PRIORITY, WAITING, Event, ExecutionState
from services.engine.domain.workflow import Workflow
from services.engine.step_queue import ReadyAttempt
from services.engine.store.documents import (
    decode_page_token,
    encode_page_token,
    event_from_doc,
    event_id,
    event_to_doc,
    execution_from_doc,
    execution_to_doc,
    payloads_in_log,
    status_to_doc,
    workflow_from_doc,
    workflow_to_doc,
)
from services.engine.store.errors import domain_errors, unavailable
from services.engine.store.repository import (
    BlobRef,
    Claim,
    CommittedEvent,
    HistoryLost,
    LeaseHolder,
    Page,
    QueueDepth,
    RequestIdTaken,
    ResumeToken,
    RevokedToken,
    RunnerSeen,
    StepTotal,
    TenantCounts,
)

log = logging.getLogger(__name__)
W = TypeVar("W")

DUPLICATE_KEY = 11000
BLOB_CHUNK_BYTES = 4 * 1024 * 1024
RUNNER_RECORD_TTL_SECONDS = 24 * 3600
# Before events had their place in the log as _id (see _adopt_event_ids).
OLD_EVENT_INDEX = "execution_id_1_seq_1"
EVENT_IDS_MOVE = "event_ids_move"
TENANTS_ADOPTED = "tenants_adopted"
# Events read by id at first, and at most, per round trip (see read_events).
FIRST_READ = 16
MAX_READ = 512
# How far behind the log an execution's status document may be (see the module docstring).
PROJECTION_SECONDS = 5.0
# The lease_owner of an execution whose engine lease is unknown (written before leases were
# per engine): any engine claims it.
ORPHAN = ""
LEASES_PER_ENGINE = "leases_per_engine"
# A fenced lease is kept this long, so that an execution a fenced engine created after it was
# fenced (it cannot know) is still found as an orphan.
FENCED_LEASE_SECONDS = 24 * 3600
# Tries of one commit that lost a write conflict (another engine fencing this one, mostly).
COMMIT_TRIES = 5
# What one commit holds at most. Under a backlog a commit of everything pending grows with it
# (a burst of 500 runs made commits of 9 s on the embedded database), and the lease that
# every commit renews runs out while one is under way: another engine fences a live one. The
# rest goes in the next commit, at once.
MAX_COMMIT_EVENTS = 256
MAX_COMMIT_STATUSES = 128
# A commit that takes this share of the lease or more is logged (see _note_slow_commit).
SLOW_COMMIT_SHARE = 1 / 3
# The log's change feed: inserted events, and of each only what an Event and its tenant are
# made of (the change's _id is its resume token, kept whatever the projection says).
_FEED_FIELDS = ("execution_id", "seq", "type", "time", "data", "attempt_token", "tenant_id")
_FEED_PIPELINE: list[dict[str, Any]] = [
    {"$match": {"operationType": "insert"}},
    {"$project": {f"fullDocument.{name}": 1 for name in _FEED_FIELDS}},
]
# How long one wait of the feed for news lasts on the server (its `next` then gives None).
FEED_AWAIT_MS = 1000
# What a listing leaves behind: the payloads. The attempts stay, without theirs, because
# progress is computed from them.
_SUMMARY_FIELDS = {
    "input": 0,
    "dynamic_properties": 0,
    "history.input_payload": 0,
    "history.output_payload": 0,
    "workflow.description": 0,
}


@dataclass
class _Append:
    event_docs: list[dict[str, Any]]
    execution_id: str
    tenant_id: str
    last_seq: int
    projection: dict[str, Any]
    # Written with the events rather than within PROJECTION_SECONDS: it ended, or waits.
    urgent: bool
    # The lease it was decided under: if that one was fenced since, it is not written.
    lease: LeaseHolder | None
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@domain_errors
class MongoStore:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        # Every write waits for the majority and the journal: an acknowledged event survives
        # a crash of the database as well as of the engine.
        concern = WriteConcern(w="majority", j=True)
        db = client.get_database(
            database, write_concern=concern, read_concern=ReadConcern("majority")
        )
        self._client = client
        self.workflows: AsyncCollection[dict[str, Any]] = db["workflows"]
        self.executions: AsyncCollection[dict[str, Any]] = db["executions"]
        self.events: AsyncCollection[dict[str, Any]] = db["events"]
        self.blobs: AsyncCollection[dict[str, Any]] = db["blobs"]
        self.blob_chunks: AsyncCollection[dict[str, Any]] = db["blob_chunks"]
        self.step_stats: AsyncCollection[dict[str, Any]] = db["step_stats"]
        self.runners: AsyncCollection[dict[str, Any]] = db["runners"]
        self.revoked_tokens: AsyncCollection[dict[str, Any]] = db["revoked_tokens"]
        self.leases: AsyncCollection[dict[str, Any]] = db["engine_leases"]
        self._concern = concern
        # The store's own bookkeeping (migrations under way).
        self.meta: AsyncCollection[dict[str, Any]] = db["meta"]
        self._pending: list[_Append] = []
        # Status documents not written yet: the latest per execution, and since when the
        # oldest of them waits (loop time).
        self._projections: dict[str, _Append] = {}
        self._projections_since: float | None = None
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # This engine's lease (acquire_lease), and the fenced leases it last saw.
        self._lease: LeaseHolder | None = None
        self._slow_commit_said = -float("inf")
        self._fenced: list[str] = []
        # Whether another engine held a live lease when this one last looked; set once it did.
        self.others_alive = False
        self.company = asyncio.Event()

    async def open(self) -> None:
        await self.ensure_indexes()
        self._tasks = [asyncio.create_task(self._write_loop(), name="event-log-writer")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(PyMongoError, Fenced):
            # Not needed for correctness (loads catch up from the log), but listings are
            # right at once after a clean stop.
            await self._commit([], list(self._projections.values()))
        for item in self._pending:
            if not item.done.done():
                item.done.set_exception(StoreUnavailable("the store is closing"))

    async def ensure_indexes(self) -> None:
        await self._adopt_untenanted()
        # The events need no index but their _id (documents.event_id).
        await self._adopt_event_ids()
        await self.executions.create_indexes(
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
                IndexModel(
                    [("tenant_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)]
                ),
                IndexModel(
                    [
                        ("tenant_id", ASCENDING),
                        ("workflow_id", ASCENDING),
                        ("created_at", DESCENDING),
                    ]
                ),
            ]
        )
        await self.workflows.create_indexes(
            [
                IndexModel(
                    [("tenant_id", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)]
                ),
                IndexModel([("tenant_id", ASCENDING), ("name", ASCENDING)]),
            ]
        )
        await self.blobs.create_indexes([IndexModel("execution_id")])
        await self.blob_chunks.create_indexes(
            [IndexModel([("blob_id", ASCENDING), ("n", ASCENDING)], unique=True)]
        )
        await self.step_stats.create_indexes([IndexModel("workflow_id")])
        # Runners come and go with their hosts: a day after its last poll a record goes.
        await self.runners.create_indexes(
            [IndexModel("last_poll_at", expireAfterSeconds=RUNNER_RECORD_TTL_SECONDS)]
        )
        # A revocation matters until the token it names expires, and goes then.
        await self.revoked_tokens.create_indexes([IndexModel("expires_at", expireAfterSeconds=0)])
        await self.leases.create_indexes(
            [
                IndexModel("expires_at"),
                IndexModel("engine_id"),
                IndexModel("fenced_at", expireAfterSeconds=FENCED_LEASE_SECONDS),
            ]
        )
        await self._adopt_engine_leases()

    async def _adopt_untenanted(self) -> None:
        """Data written before tenants existed belongs to the default tenant; the global
        request_id index it had would still refuse one tenant a key another one used. Done
        once: a marker in `meta` spares every later start a scan of every execution."""
        if await self.meta.find_one({"_id": TENANTS_ADOPTED}) is not None:
            return
        for collection in (self.workflows, self.executions):
            await collection.update_many(
                {"tenant_id": {"$exists": False}}, {"$set": {"tenant_id": DEFAULT_TENANT}}
            )
        with contextlib.suppress(OperationFailure):
            await self.executions.drop_index("request_id_1")
        await self.meta.update_one(
            {"_id": TENANTS_ADOPTED}, {"$set": {"at": utc_now()}}, upsert=True
        )

    async def _adopt_engine_leases(self) -> None:
        """Executions leased one by one (before leases were per engine) become orphans, which
        the first engine to look claims; the per-execution lease index goes. Engines of both
        kinds must not share a database: stop the old ones before the first new one starts."""
        if await self.meta.find_one({"_id": LEASES_PER_ENGINE}) is not None:
            return
        await self.executions.update_many(
            {"lease_expires_at": {"$exists": True}},
            [
                {
                    "$set": {
                        "lease_owner": {
                            "$cond": [{"$eq": ["$lease_expires_at", None]}, None, ORPHAN]
                        }
                    }
                },
                {"$unset": "lease_expires_at"},
            ],
        )
        with contextlib.suppress(OperationFailure):
            await self.executions.drop_index("lease_expires_at_1")
        await self.meta.update_one(
            {"_id": LEASES_PER_ENGINE}, {"$set": {"at": utc_now()}}, upsert=True
        )

    async def _adopt_event_ids(self) -> None:
        """Events written before their _id was their place in the log get one, and the
        (execution_id, seq) index they were read through goes. A marker in `meta` says a
        move is under way, so that an interrupted one is finished on the next start."""
        names = [index["name"] async for index in await self.events.list_indexes()]
        if OLD_EVENT_INDEX in names:
            await self.meta.update_one(
                {"_id": EVENT_IDS_MOVE}, {"$set": {"since": utc_now()}}, upsert=True
            )
            # Unique, it would refuse the copies while their originals are still there.
            await self.events.drop_index(OLD_EVENT_INDEX)
        if await self.meta.find_one({"_id": EVENT_IDS_MOVE}) is None:
            return
        moved = 0
        while old := await self.events.find({"_id": {"$type": "objectId"}}).limit(1000).to_list():
            copies = [{**d, "_id": event_id(d["execution_id"], d["seq"])} for d in old]
            try:
                await self.events.insert_many(copies, ordered=False)
            except BulkWriteError as exc:
                if any(e.get("code") != DUPLICATE_KEY for e in exc.details["writeErrors"]):
                    raise
            await self.events.delete_many({"_id": {"$in": [d["_id"] for d in old]}})
            moved += len(old)
        await self.meta.delete_one({"_id": EVENT_IDS_MOVE})
        log.info("events given their place in the log as _id", extra={"events": moved})

    # --- workflows -------------------------------------------------------------------

    async def create_workflow(self, workflow: Workflow) -> None:
        await self.workflows.insert_one(workflow_to_doc(workflow))

    async def get_workflow(self, tenant_id: str, workflow_id: str) -> Workflow | None:
        doc = await self.workflows.find_one({"_id": workflow_id, "tenant_id": tenant_id})
        return workflow_from_doc(doc) if doc else None

    async def list_workflows(
        self, tenant_id: str, page_size: int, page_token: str, name: str
    ) -> Page[Workflow]:
        query: dict[str, Any] = {"tenant_id": tenant_id}
        if name:
            query["name"] = name
        docs, token = await _page(self.workflows, query, page_size, page_token)
        return Page([workflow_from_doc(d) for d in docs], token)

    # --- executions ------------------------------------------------------------------

    async def create_execution(self, state: ExecutionState) -> None:
        doc = execution_to_doc(state)
        doc["lease_owner"] = self._lease_id()
        try:
            await self.executions.insert_one(doc)
        except DuplicateKeyError as exc:
            raise RequestIdTaken(state.request_id) from exc

    async def find_by_request_id(self, tenant_id: str, request_id: str) -> ExecutionState | None:
        doc = await self.executions.find_one(
            {"tenant_id": tenant_id, "request_id": request_id}, {"_id": 1}
        )
        return await self.load_execution(doc["_id"]) if doc else None

    async def load_execution(self, execution_id: str) -> ExecutionState | None:
        doc = await self.executions.find_one({"_id": execution_id})
        if doc is None:
            return None
        doc = self._unwritten(doc)
        state = execution_from_doc(doc)
        await self._read_payloads(state, payloads_in_log(doc))
        # The projection may trail the log by the writes a crash interrupted.
        while True:
            tail = await self.read_events(execution_id, state.last_seq, 1000)
            for event in tail:
                state.apply(event)
            if len(tail) < 1000:
                return state

    async def _read_payloads(self, state: ExecutionState, places: list[int]) -> None:
        """Reads back the payloads of the attempts at `places`, which the status document
        left in the events that carry them."""
        attempts = [state.history[i] for i in places]
        seqs = [s for a in attempts for s in (a.started_seq, a.finished_seq) if s is not None]
        if not seqs:
            return
        ids = [event_id(state.execution_id, seq) for seq in seqs]
        data = {
            d["seq"]: d.get("data") or {}
            async for d in self.events.find({"_id": {"$in": ids}}, {"seq": 1, "data": 1})
        }
        for a in attempts:
            if a.started_seq is not None:
                a.input_payload = data.get(a.started_seq, {}).get("input_payload") or {}
            if a.finished_seq is not None:
                a.output_payload = data.get(a.finished_seq, {}).get("output")

    async def list_executions(
        self, tenant_id: str, page_size: int, page_token: str, workflow_id: str
    ) -> Page[ExecutionState]:
        query: dict[str, Any] = {"tenant_id": tenant_id}
        if workflow_id:
            query["workflow_id"] = workflow_id
        docs, token = await _page(
            self.executions,
            query,
            page_size,
            page_token,
            newest_first=True,
            projection=_SUMMARY_FIELDS,
        )
        return Page([execution_from_doc(self._unwritten(d)) for d in docs], token)

    def _unwritten(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The status document as this store last committed it, written yet or not."""
        unwritten = self._projections.get(doc["_id"])
        return doc if unwritten is None else {**doc, **unwritten.projection}

    # --- the event log ---------------------------------------------------------------

    async def append(self, events: Sequence[Event], state: ExecutionState) -> None:
        item = _Append(
            event_docs=[event_to_doc(e, state.workflow.tenant_id) for e in events],
            execution_id=state.execution_id,
            tenant_id=state.workflow.tenant_id,
            last_seq=state.last_seq,
            projection=status_to_doc(state),
            # An ended run, or one about to be parked, leaves memory: so does its status.
            urgent=state.is_terminal or state.status == WAITING,
            lease=self._current_lease(),
        )
        self._pending.append(item)
        self._wakeup.set()
        await item.done

    async def _write_loop(self) -> None:
        """Commits what is pending, as soon as the commit before it is done; and the status
        documents of the executions still running once the oldest has waited
        PROJECTION_SECONDS."""
        loop = asyncio.get_running_loop()
        while True:
            if self._projections_since is None:
                await self._wakeup.wait()
            else:
                due = self._projections_since + PROJECTION_SECONDS - loop.time()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(due, 0.0)):
                        await self._wakeup.wait()
            self._wakeup.clear()
            batch = self._next_batch()
            try:
                await self._flush(batch)
            except Exception:  # the loop must outlive any one batch
                log.exception("event log batch failed")
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(
                            StoreUnavailable("the event log write failed; retry")
                        )

    def _next_batch(self) -> list[_Append]:
        """The oldest pending appends, up to MAX_COMMIT_EVENTS events (one append at least);
        what is left wakes the loop again at once."""
        taken, events = 0, 0
        while taken < len(self._pending):
            events += len(self._pending[taken].event_docs)
            if taken and events > MAX_COMMIT_EVENTS:
                break
            taken += 1
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        if self._pending:
            self._wakeup.set()
        return batch

    async def _flush(self, batch: list[_Append]) -> None:
        loop = asyncio.get_running_loop()
        aged = self._projections_since is not None and (
            loop.time() - self._projections_since >= PROJECTION_SECONDS
        )
        # The oldest first; those past MAX_COMMIT_STATUSES stay due for the next commit.
        aged_items = list(itertools.islice(self._projections.values(), MAX_COMMIT_STATUSES))
        all_aged = aged and len(aged_items) == len(self._projections)
        failures: dict[int, Exception] = {}
        for i, item in enumerate(batch):
            if item.lease is not self._lease:
                # Decided under a lease that was fenced since: not this engine's to write.
                failures[i] = Fenced("this engine's lease was fenced; retry")
        written: list[_Append] = []
        while len(failures) < len(batch) or aged:
            live = [i for i in range(len(batch)) if i not in failures]
            docs = [(i, doc) for i in live for doc in batch[i].event_docs]
            due = {p.execution_id: p for p in aged_items} if aged else {}
            for i in live:
                if batch[i].urgent:
                    due[batch[i].execution_id] = batch[i]
            try:
                await self._commit([doc for _, doc in docs], list(due.values()))
            except BulkWriteError as exc:
                refused = _refused(exc, [i for i, _ in docs], batch)
                if not refused:
                    raise
                failures.update(refused)
                continue  # the same commit without the appends another engine beat
            except Fenced as exc:
                log.error("this engine's lease was fenced: it writes nothing more under it")
                self._lease = None
                self._projections.clear()
                self._projections_since = None
                failures.update({i: exc for i in live})
                return self._settle(batch, failures, [], aged=False)
            except PyMongoError as exc:
                log.warning("event log write failed: %s", exc)
                failures.update({i: StoreUnavailable("the database is unavailable") for i in live})
                return self._settle(batch, failures, [], aged=False)
            written = list(due.values())
            break
        self._settle(batch, failures, written, aged=all_aged)

    def _settle(
        self,
        batch: list[_Append],
        failures: dict[int, Exception],
        written: list[_Append],
        *,
        aged: bool,
    ) -> None:
        """Tells each append how it went, and keeps the status documents still to write."""
        now = asyncio.get_running_loop().time()
        for item in written:
            # A later append may have replaced it meanwhile: that one is still to write.
            if self._projections.get(item.execution_id) is item:
                del self._projections[item.execution_id]
        for i, item in enumerate(batch):
            if i in failures:
                item.done.set_exception(failures[i])
                continue
            if item.execution_id:
                if item.urgent:
                    self._projections.pop(item.execution_id, None)
                else:
                    self._projections[item.execution_id] = item
            item.done.set_result(None)
        if not self._projections:
            self._projections_since = None
        elif aged or self._projections_since is None:
            self._projections_since = now

    async def _commit(self, docs: list[dict[str, Any]], projections: list[_Append]) -> None:
        """One transaction: the events, the status documents, and the renewal of this
        engine's lease, which finds the lease only while no other engine fenced it."""
        lease = self._lease
        if lease is None:
            raise Fenced("this engine holds no lease; retry")
        updates = [
            UpdateOne(
                {"_id": item.execution_id, "last_seq": {"$lt": item.last_seq}},
                {"$set": item.projection},
            )
            for item in projections
        ]
        began = time.monotonic()
        for attempt in range(1, COMMIT_TRIES + 1):
            try:
                async with self._transaction() as session:
                    if docs:
                        await self.events.insert_many(docs, ordered=False, session=session)
                    if updates:
                        await self.executions.bulk_write(updates, ordered=False, session=session)
                    # Last: the lease document is locked only from here to the commit, and
                    # an engine fencing this one waits for no more than that.
                    renewed = await self.leases.update_one(
                        {"_id": lease.lease_id, "fenced_at": None},
                        {"$set": {"expires_at": utc_now() + lease.duration}},
                        session=session,
                    )
                    if renewed.matched_count == 0:
                        raise Fenced("this engine's lease was fenced; retry")
                self._note_slow_commit(time.monotonic() - began, lease, len(docs), len(updates))
                return
            except PyMongoError as exc:
                if attempt == COMMIT_TRIES or not exc.has_error_label("TransientTransactionError"):
                    raise

    def _note_slow_commit(
        self, seconds: float, lease: LeaseHolder, events: int, statuses: int
    ) -> None:
        """A commit that takes a good part of the lease is the warning before a fence: the
        other engines see the lease run out while it waits, and take this one's executions
        over although it is alive. Said at most once a lease period."""
        period = lease.duration.total_seconds()
        now = time.monotonic()
        if seconds < period * SLOW_COMMIT_SHARE or now - self._slow_commit_said < period:
            return
        self._slow_commit_said = now
        log.warning(
            "a commit took %.1f s of a %.0f s lease: at the full lease other engines take this"
            " one's executions over (relieve the database, or raise ENGINE_LEASE_SECONDS)",
            seconds,
            period,
            extra={"events": events, "status_documents": statuses},
        )

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncClientSession]:
        """A session in a transaction, committed when the block ends and aborted when it
        raises."""
        async with self._client.start_session() as session:
            transaction = await session.start_transaction(
                write_concern=self._concern, read_concern=ReadConcern("majority")
            )
            async with transaction:
                yield session

    @property
    def lease_id(self) -> str | None:
        return self._lease.lease_id if self._lease is not None else None

    def _current_lease(self) -> LeaseHolder:
        if self._lease is None:
            raise Fenced("this engine holds no lease; retry")
        return self._lease

    def _lease_id(self) -> str:
        return self._current_lease().lease_id

    async def read_events(self, execution_id: str, after_seq: int, limit: int) -> list[Event]:
        """The log after `after_seq`, by ids: a few at first, twice as many each time all were
        there, until fewer come back than were asked for (the log is gapless)."""
        events: list[Event] = []
        ask = FIRST_READ
        while len(events) < limit:
            ask = min(ask, limit - len(events))
            first = after_seq + len(events) + 1
            ids = [event_id(execution_id, seq) for seq in range(first, first + ask)]
            docs = await self.events.find({"_id": {"$in": ids}}).to_list()
            docs.sort(key=lambda d: d["seq"])
            for doc in docs:
                if doc["seq"] != after_seq + len(events) + 1:
                    break  # not contiguous: only a writer in the middle of a batch
                events.append(event_from_doc(doc))
            if len(docs) < ask:
                break
            ask = min(ask * 2, MAX_READ)
        return events

    async def follow_events(self, resume_after: ResumeToken | None) -> _EventChanges:
        """A change stream on the log (see repository.EventLogFeed)."""
        try:
            stream = await self.events.watch(
                _FEED_PIPELINE, resume_after=resume_after, max_await_time_ms=FEED_AWAIT_MS
            )
        except OperationFailure as exc:
            # The server refuses to resume from there (its history was pruned, or the token
            # is not one of its own): a failure that asking again would only repeat.
            if resume_after is not None:
                raise HistoryLost(str(exc)) from exc
            raise StoreUnavailable("the event log cannot be followed") from exc
        except PyMongoError as exc:
            raise StoreUnavailable("the database is unavailable") from exc
        return _EventChanges(stream)

    # --- leases ----------------------------------------------------------------------

    async def acquire_lease(
        self, engine_id: str, address: str, seconds: float, *, fence_namesakes: bool
    ) -> str:
        now = utc_now()
        lease = LeaseHolder(str(uuid.uuid4()), timedelta(seconds=seconds))
        await self.leases.insert_one(
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
            earlier = self.leases.find(
                {"engine_id": engine_id, "fenced_at": None, "_id": {"$ne": lease.lease_id}},
                {"_id": 1},
            )
            for doc in await earlier.to_list():
                await self._fence(doc["_id"], now, expired_only=False)
        self._lease = lease
        await self._read_leases()
        return lease.lease_id

    async def renew_lease(self) -> None:
        """Through the write loop (an append of nothing); raises Fenced when another engine
        fenced this one's lease."""
        item = _Append([], "", "", 0, {}, urgent=False, lease=self._current_lease())
        self._pending.append(item)
        self._wakeup.set()
        await item.done

    async def release_lease(self) -> None:
        lease = self._lease
        if lease is not None:
            # Expired now: the other engines fence it and take its executions at their next
            # lease round instead of a lease period later.
            await self.leases.update_one(
                {"_id": lease.lease_id, "fenced_at": None}, {"$set": {"expires_at": utc_now()}}
            )

    async def fence_expired_leases(self, now: datetime) -> None:
        # Never this engine's own: it is alive, and a commit that outlasted the lease renews
        # it (as long as no other engine fenced it meanwhile). Fencing itself would only make
        # it let go of and reload everything it holds.
        expired = self.leases.find(
            {"expires_at": {"$lt": now}, "fenced_at": None, "_id": {"$ne": self.lease_id}},
            {"_id": 1},
        )
        for doc in await expired.to_list():
            await self._fence(doc["_id"], now, expired_only=True)
        await self._read_leases()

    async def _read_leases(self) -> None:
        # A handful of documents: the engines alive, and those that went within
        # FENCED_LEASE_SECONDS.
        now, mine = utc_now(), self.lease_id
        fenced, others = [], False
        async for doc in self.leases.find({}, {"fenced_at": 1, "expires_at": 1}):
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
            functools.partial(self.leases.update_one, query, {"$set": {"fenced_at": now}})
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
        found = await self.executions.find(orphans, {"_id": 1}).to_list()
        if found:
            claimed = await self._unless_in_a_commit(
                functools.partial(
                    self.executions.update_many,
                    {"_id": {"$in": [d["_id"] for d in found]}, **orphans},
                    {"$set": {"lease_owner": mine}},
                )
            )
            if claimed is None:
                log.info("executions in an unfinished commit: claimed at a later round")
        cursor = self.executions.find({"lease_owner": mine}, {"_id": 1})
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
            async with self._transaction() as session:
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
            doc = await self.executions.find_one(
                {"_id": execution_id}, {"lease_owner": 1, "parked": 1}
            )
            owner = doc.get("lease_owner") if doc else None
            if owner == mine:
                return Claim(held=True)
            if doc is not None and (doc.get("parked") is True or owner in claimable):
                result = await self._unless_in_a_commit(
                    functools.partial(
                        self.executions.update_one,
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
            lease = await self.leases.find_one({"_id": owner})
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

    async def park(self, execution_id: str) -> bool:
        result = await self.executions.update_one(
            {"_id": execution_id, "lease_owner": self._lease_id()},
            {"$set": {"lease_owner": None, "parked": True}},
        )
        return result.matched_count == 1

    # --- blobs -----------------------------------------------------------------------

    async def put_blob(self, execution_id: str, data: bytes) -> BlobRef:
        blob_id = str(uuid.uuid4())
        chunks = [
            {"blob_id": blob_id, "n": n, "data": data[offset : offset + BLOB_CHUNK_BYTES]}
            for n, offset in enumerate(range(0, max(len(data), 1), BLOB_CHUNK_BYTES))
        ]
        await self.blob_chunks.insert_many(chunks)
        ref = BlobRef(blob_id, len(data), hashlib.sha256(data).hexdigest())
        # The metadata goes last: a blob without it is an interrupted write, never read.
        await self.blobs.insert_one(
            {
                "_id": blob_id,
                "execution_id": execution_id,
                "size_bytes": ref.size_bytes,
                "sha256": ref.sha256,
                "chunks": len(chunks),
            }
        )
        return ref

    async def read_blob(self, execution_id: str, blob_id: str) -> AsyncIterator[bytes]:
        meta = await self.blobs.find_one({"_id": blob_id, "execution_id": execution_id})
        if meta is None:
            raise BlobNotFound(f"blob {blob_id!r} not found", metadata={"blob_id": blob_id})
        return self._chunks(blob_id, int(meta["chunks"]))

    async def _chunks(self, blob_id: str, count: int) -> AsyncIterator[bytes]:
        for n in range(count):
            try:
                chunk = await self.blob_chunks.find_one({"blob_id": blob_id, "n": n})
            except PyMongoError as exc:
                raise unavailable(exc) from exc
            if chunk is None:
                raise BlobNotFound(f"blob {blob_id!r} is incomplete")
            yield bytes(chunk["data"])

    async def delete_blobs(self, execution_id: str) -> None:
        ids = [d["_id"] async for d in self.blobs.find({"execution_id": execution_id}, {"_id": 1})]
        await self.blobs.delete_many({"_id": {"$in": ids}})
        await self.blob_chunks.delete_many({"blob_id": {"$in": ids}})

    # --- step durations, for estimates -----------------------------------------------

    async def add_step_totals(self, totals: Mapping[tuple[str, str], StepTotal]) -> None:
        if totals:
            await self.step_stats.bulk_write(
                [
                    UpdateOne(
                        {"_id": f"{workflow_id}/{step_name}"},
                        {
                            "$set": {"workflow_id": workflow_id, "step_name": step_name},
                            "$inc": {"count": total.count, "total_seconds": total.seconds},
                        },
                        upsert=True,
                    )
                    for (workflow_id, step_name), total in totals.items()
                ],
                ordered=False,
            )

    async def step_totals(self, workflow_id: str) -> dict[str, StepTotal]:
        docs = await self.step_stats.find({"workflow_id": workflow_id}).to_list()
        return {d["step_name"]: StepTotal(d["count"], d["total_seconds"]) for d in docs}

    # --- the step queue, as every engine sees it -------------------------------------

    async def queue_depths(self) -> list[QueueDepth]:
        cursor = self.executions.find(
            {"queue.state": "ready"}, {"tenant_id": 1, "queue.handler": 1, "queue.queued_at": 1}
        )
        ready = {doc["_id"]: doc async for doc in cursor}
        for execution_id, unwritten in self._projections.items():
            if unwritten.projection["queue"] is None:
                ready.pop(execution_id, None)
            else:
                ready[execution_id] = {
                    "tenant_id": unwritten.tenant_id,
                    "queue": unwritten.projection["queue"],
                }
        counts: dict[tuple[str, str], tuple[int, datetime]] = {}
        for doc in ready.values():
            key = (doc["tenant_id"], doc["queue"]["handler"])
            queued_at = doc["queue"]["queued_at"]
            count, oldest = counts.get(key, (0, queued_at))
            counts[key] = (count + 1, min(oldest, queued_at))
        return [
            QueueDepth(handler, tenant, count, oldest)
            for (tenant, handler), (count, oldest) in sorted(counts.items())
        ]

    async def ready_attempts(self) -> list[ReadyAttempt]:
        # Equality on one indexed field, as queue_depths reads it.
        docs = self.executions.find(
            {"queue.state": "ready"}, {"tenant_id": 1, "queue": 1, "priority": 1}
        )
        return [
            ReadyAttempt(
                execution_id=doc["_id"],
                token=queue["token"],
                handler=queue["handler"],
                tenant=doc.get("tenant_id", DEFAULT_TENANT),
                priority=queue.get("priority", doc.get("priority", DEFAULT_PRIORITY)),
                queued_at=queue["queued_at"],
            )
            async for doc in docs
            # Written before engines shared their queues: no token, its holder hands it out.
            if (queue := doc["queue"]).get("token")
        ]

    async def record_runner(self, runner: RunnerSeen) -> None:
        await self.runners.update_one(
            {"_id": runner.runner_id},
            {
                "$set": {
                    "handlers": list(runner.handlers),
                    "free_slots": runner.free_slots,
                    "last_poll_at": runner.last_poll_at,
                }
            },
            upsert=True,
        )

    async def list_runners(self, since: datetime) -> list[RunnerSeen]:
        cursor = self.runners.find({"last_poll_at": {"$gte": since}}).sort("_id", 1)
        return [
            RunnerSeen(d["_id"], tuple(d["handlers"]), d["free_slots"], d["last_poll_at"])
            async for d in cursor
        ]

    # --- revoked tokens (services/engine/revocations.py) ----------------------------------

    async def revoke_token(self, revoked: RevokedToken) -> None:
        await self.revoked_tokens.update_one(
            {"_id": revoked.token_id},
            {
                "$set": {"revoked_by": revoked.revoked_by, "revoked_at": revoked.revoked_at},
                # Revoked twice: kept until the later of the two expiries.
                "$max": {"expires_at": revoked.expires_at},
            },
            upsert=True,
        )

    async def revoked_token_ids(self, now: datetime) -> list[str]:
        # The TTL monitor deletes expired ones only every minute or so.
        cursor = self.revoked_tokens.find({"expires_at": {"$gt": now}}, {"_id": 1})
        return [d["_id"] async for d in cursor]

    # --- per-tenant usage, for quotas (services/engine/quotas.py) ----------------------

    async def tenant_usage(self, stored_bytes: Mapping[str, int]) -> dict[str, TenantCounts]:
        # One counter document per tenant, shared by every engine: $inc adds without a read.
        usage = self.executions.database["tenant_usage"]
        increments = [
            UpdateOne({"_id": tenant}, {"$inc": {"stored_bytes": size}}, upsert=True)
            for tenant, size in stored_bytes.items()
            if size
        ]
        if increments:
            await usage.bulk_write(increments, ordered=False)
        counts: dict[str, TenantCounts] = {}
        # An execution gives its lease up when it ends (documents.execution_to_doc): the
        # ones with an owner (a string) are the ones not ended. A range, unlike `$ne: None`,
        # is read through the owner index: 7 ms instead of 110 ms over 5,000 executions.
        running = await self.executions.aggregate(
            [
                {"$match": {"lease_owner": {"$gte": ORPHAN}}},
                {"$group": {"_id": "$tenant_id", "running": {"$sum": 1}}},
            ]
        )
        async for doc in running:
            counts[doc["_id"]] = TenantCounts(running=int(doc["running"]))
        # A parked run (waiting to be advanced) holds no lease and has not ended either.
        parked = await self.executions.aggregate(
            [
                {"$match": {"parked": True}},
                {"$group": {"_id": "$tenant_id", "running": {"$sum": 1}}},
            ]
        )
        async for doc in parked:
            counts.setdefault(doc["_id"], TenantCounts()).running += int(doc["running"])
        async for doc in usage.find({}):
            counts.setdefault(doc["_id"], TenantCounts()).stored_bytes = int(doc["stored_bytes"])
        return counts


async def _page(
    collection: AsyncCollection[dict[str, Any]],
    query: dict[str, Any],
    page_size: int,
    page_token: str,
    *,
    newest_first: bool = False,
    projection: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """One page of `collection` in (created_at, _id) order, oldest or newest first, and the
    token of the next page ("" after the last), which carries where this one ended: a page
    follows on from its token whatever was added meanwhile."""
    beyond, order = ("$lt", DESCENDING) if newest_first else ("$gt", ASCENDING)
    if page_token:
        edge, edge_id = decode_page_token(page_token)
        query = {
            **query,
            "$or": [
                {"created_at": {beyond: edge}},
                {"created_at": edge, "_id": {beyond: edge_id}},
            ],
        }
    cursor = collection.find(query, projection).sort([("created_at", order), ("_id", order)])
    docs = await cursor.limit(page_size + 1).to_list()
    token = ""
    if len(docs) > page_size:
        last = docs[page_size - 1]
        token = encode_page_token(last["created_at"], last["_id"])
    return docs[:page_size], token


class _EventChanges:
    """One change stream on the log (repository.CommittedEvents)."""

    def __init__(self, stream: AsyncChangeStream[dict[str, Any]]) -> None:
        self._stream = stream

    @property
    def resume_token(self) -> ResumeToken | None:
        return self._stream.resume_token

    async def next(self) -> CommittedEvent | None:
        while True:
            try:
                change = await self._stream.try_next()
            except PyMongoError as exc:
                # pymongo has already tried to resume once; whoever follows opens the feed
                # again from `resume_token`, which tells a hiccup from lost history.
                raise StoreUnavailable(f"the event log's change stream broke off: {exc}") from exc
            if change is None:
                return None
            doc = change.get("fullDocument") or {}
            try:
                return CommittedEvent(event_from_doc(doc), doc.get("tenant_id", ""))
            except KeyError:
                # Not an event this engine wrote: nothing a watcher could be given.
                log.warning("event feed skipped a document with fields %s", sorted(doc))

    async def close(self) -> None:
        with contextlib.suppress(PyMongoError):
            await self._stream.close()


def _refused(exc: BulkWriteError, owners: list[int], batch: list[_Append]) -> dict[int, Exception]:
    """The appends (by place in `batch`) whose events the commit refused: a seq that is
    taken means another engine wrote that execution."""
    refused: dict[int, Exception] = {}
    for error in exc.details.get("writeErrors", []):
        i = owners[error["index"]]
        if error.get("code") == DUPLICATE_KEY:
            execution_id = batch[i].execution_id
            refused[i] = NotOwner(f"execution {execution_id} was written by another engine")
        else:
            log.warning("event log write refused: %s", error.get("errmsg"))
            refused[i] = StoreUnavailable("the event log write failed; retry")
    return refused
