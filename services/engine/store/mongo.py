"""The MongoDB store, through pymongo's AsyncMongoClient: what the engine stores, behind the
repository's interface (repository.py), made of

- database.py: the collections, and transactions on them; schema.py: their indexes, and the
  upgrades of what earlier versions wrote;
- commits.py: the event log's writer (group commits, the status documents written apart);
- leases.py: which engine holds which executions; fences and claims;
- feed.py: the log's change feed; blobs.py: large payloads; records.py: what the engine keeps
  beside executions (step durations, runners, revoked tokens, tenant usage);
- retention.py: what retention deletes (ended executions with all they stored, and blobs
  whose execution never came);
- schedules.py: cron schedules.

Every public coroutine raises domain errors only (store/errors.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from services.auth import DEFAULT_TENANT
from services.engine.domain.events import Event
from services.engine.domain.execution import DEFAULT_PRIORITY, ExecutionState
from services.engine.domain.schedule import Schedule
from services.engine.domain.workflow import Workflow
from services.engine.step_queue import ReadyAttempt
from services.engine.store.blobs import Blobs
from services.engine.store.commits import EventLogWriter
from services.engine.store.database import Database
from services.engine.store.documents import (
    event_from_doc,
    event_id,
    execution_from_doc,
    execution_to_doc,
    payloads_in_log,
    queued_attempts,
    workflow_from_doc,
)
from services.engine.store.errors import domain_errors
from services.engine.store.feed import EventChanges, follow_events
from services.engine.store.leases import EngineLeases
from services.engine.store.listing import newest_executions, page
from services.engine.store.records import Records
from services.engine.store.repository import (
    BlobRef,
    Claim,
    ExecutionFilter,
    Page,
    QueueDepth,
    RequestIdTaken,
    ResumeToken,
    RevokedToken,
    RunnerSeen,
    StepTotal,
    Swept,
    TenantCounts,
)
from services.engine.store.retention import RetentionSweeps
from services.engine.store.schedules import ScheduleRecords
from services.engine.store.schema import ensure_schema
from services.engine.store.workflows import WorkflowDocuments

# Events read by id at first, and at most, per round trip (see read_events).
FIRST_READ = 16
MAX_READ = 512
# What a listing leaves behind: the payloads. The attempts stay, without theirs, because
# progress is computed from them.
_SUMMARY_FIELDS = {
    "input": 0,
    "dynamic_properties": 0,
    "history.input_payload": 0,
    "history.output_payload": 0,
    "workflow.description": 0,
}


@domain_errors
class MongoStore:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], database: str) -> None:
        self._db = Database(client, database)
        self._leases = EngineLeases(self._db)
        self._log = EventLogWriter(self._db, self._leases)
        self._blobs = Blobs(self._db)
        self._records = Records(self._db)
        self._retention = RetentionSweeps(self._db)
        self._schedules = ScheduleRecords(self._db)
        self._workflows = WorkflowDocuments(self._db)

    async def open(self) -> None:
        await ensure_schema(self._db)
        self._log.start()

    async def close(self) -> None:
        await self._log.stop()

    def observe_commits(self, callback: Callable[[int, float], None]) -> None:
        """`callback(events, seconds)` after every commit of the event log (metrics)."""
        self._log.on_commit = callback

    # --- workflows -------------------------------------------------------------------

    async def create_workflow(self, workflow: Workflow) -> None:
        await self._workflows.create(workflow)

    async def get_workflow(self, tenant_id: str, workflow_id: str) -> Workflow | None:
        doc = await self._db.workflows.find_one({"_id": workflow_id, "tenant_id": tenant_id})
        return workflow_from_doc(doc) if doc else None

    async def list_workflows(
        self, tenant_id: str, page_size: int, page_token: str, name: str
    ) -> Page[Workflow]:
        query: dict[str, Any] = {"tenant_id": tenant_id}
        if name:
            query["name"] = name
        docs, token = await page(self._db.workflows, query, page_size, page_token)
        return Page([workflow_from_doc(d) for d in docs], token)

    async def add_workflow_version(self, workflow: Workflow, previous: int) -> bool:
        return await self._workflows.add_version(workflow, previous)

    async def get_workflow_version(
        self, tenant_id: str, workflow_id: str, version: int
    ) -> Workflow | None:
        return await self._workflows.version(tenant_id, workflow_id, version)

    async def list_workflow_versions(
        self, tenant_id: str, workflow_id: str, page_size: int, page_token: str
    ) -> Page[Workflow]:
        return await self._workflows.versions(tenant_id, workflow_id, page_size, page_token)

    # --- executions ------------------------------------------------------------------

    async def create_execution(self, state: ExecutionState) -> None:
        doc = execution_to_doc(state)
        doc["lease_owner"] = self._leases.current().lease_id
        try:
            await self._db.executions.insert_one(doc)
        except DuplicateKeyError as exc:
            raise RequestIdTaken(state.request_id) from exc

    async def find_by_request_id(self, tenant_id: str, request_id: str) -> ExecutionState | None:
        doc = await self._db.executions.find_one(
            {"tenant_id": tenant_id, "request_id": request_id}, {"_id": 1}
        )
        return await self.load_execution(doc["_id"]) if doc else None

    async def load_execution(self, execution_id: str) -> ExecutionState | None:
        doc = await self._db.executions.find_one({"_id": execution_id})
        if doc is None:
            return None
        doc = self._log.unwritten(doc)
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
            async for d in self._db.events.find({"_id": {"$in": ids}}, {"seq": 1, "data": 1})
        }
        for a in attempts:
            if a.started_seq is not None:
                a.input_payload = data.get(a.started_seq, {}).get("input_payload") or {}
            if a.finished_seq is not None:
                a.output_payload = data.get(a.finished_seq, {}).get("output")

    async def list_executions(
        self, tenant_id: str, page_size: int, page_token: str, only: ExecutionFilter
    ) -> Page[ExecutionState]:
        # The status documents of running executions trail their logs by up to
        # PROJECTION_SECONDS (commits.py); an ended or waiting one's is written with its last
        # events, so a search for failed runs misses none.
        docs, token = await newest_executions(
            self._db.executions,
            tenant_id,
            only,
            page_size,
            page_token,
            projection=_SUMMARY_FIELDS,
        )
        return Page([execution_from_doc(self._log.unwritten(d)) for d in docs], token)

    # --- the event log ---------------------------------------------------------------

    async def append(self, events: Sequence[Event], state: ExecutionState) -> None:
        await self._log.append(events, state)

    async def read_events(self, execution_id: str, after_seq: int, limit: int) -> list[Event]:
        """The log after `after_seq`, by ids: a few at first, twice as many each time all were
        there, until fewer come back than were asked for (the log is gapless)."""
        events: list[Event] = []
        ask = FIRST_READ
        while len(events) < limit:
            ask = min(ask, limit - len(events))
            first = after_seq + len(events) + 1
            ids = [event_id(execution_id, seq) for seq in range(first, first + ask)]
            docs = await self._db.events.find({"_id": {"$in": ids}}).to_list()
            docs.sort(key=lambda d: d["seq"])
            for doc in docs:
                if doc["seq"] != after_seq + len(events) + 1:
                    break  # not contiguous: only a writer in the middle of a batch
                events.append(event_from_doc(doc))
            if len(docs) < ask:
                break
            ask = min(ask * 2, MAX_READ)
        return events

    async def follow_events(self, resume_after: ResumeToken | None) -> EventChanges:
        return await follow_events(self._db.events, resume_after)

    # --- leases (leases.py) ----------------------------------------------------------

    @property
    def lease_id(self) -> str | None:
        return self._leases.lease_id

    @property
    def others_alive(self) -> bool:
        return self._leases.others_alive

    @property
    def company(self) -> asyncio.Event:
        return self._leases.company

    async def acquire_lease(
        self, engine_id: str, address: str, seconds: float, *, fence_namesakes: bool
    ) -> str:
        return await self._leases.acquire(
            engine_id, address, seconds, fence_namesakes=fence_namesakes
        )

    async def renew_lease(self) -> None:
        """Through the log's writer (an append of nothing); raises Fenced when another
        engine fenced this one's lease."""
        await self._log.renew()

    async def release_lease(self) -> None:
        await self._leases.release()

    async def fence_expired_leases(self, now: datetime) -> None:
        await self._leases.fence_expired(now)

    async def claim_orphans(self) -> list[str]:
        return await self._leases.claim_orphans()

    async def claim_execution(self, execution_id: str) -> Claim:
        return await self._leases.claim_execution(execution_id)

    async def park(self, execution_id: str) -> bool:
        return await self._leases.park(execution_id)

    async def reopen(self, execution_id: str, last_seq: int) -> bool:
        return await self._leases.reopen(execution_id, last_seq)

    # --- blobs (blobs.py) ------------------------------------------------------------

    async def put_blob(
        self, execution_id: str, data: bytes, *, part_of_input: bool = False
    ) -> BlobRef:
        return await self._blobs.put(execution_id, data, part_of_input=part_of_input)

    async def read_blob(self, execution_id: str, blob_id: str) -> AsyncIterator[bytes]:
        return await self._blobs.read(execution_id, blob_id)

    async def delete_blobs(self, execution_id: str) -> None:
        await self._blobs.delete(execution_id)

    # --- schedules (schedules.py) ----------------------------------------------------

    async def create_schedule(self, schedule: Schedule) -> None:
        await self._schedules.create_schedule(schedule)

    async def get_schedule(self, tenant_id: str, schedule_id: str) -> Schedule | None:
        return await self._schedules.get_schedule(tenant_id, schedule_id)

    async def list_schedules(
        self, tenant_id: str, page_size: int, page_token: str, workflow_id: str
    ) -> Page[Schedule]:
        return await self._schedules.list_schedules(tenant_id, page_size, page_token, workflow_id)

    async def save_schedule(self, schedule: Schedule) -> bool:
        return await self._schedules.save_schedule(schedule)

    async def delete_schedule(self, tenant_id: str, schedule_id: str) -> bool:
        return await self._schedules.delete_schedule(tenant_id, schedule_id)

    async def due_schedules(self, until: datetime, limit: int) -> list[Schedule]:
        return await self._schedules.due_schedules(until, limit)

    # --- retention (retention.py) ----------------------------------------------------

    async def delete_ended(self, before: datetime, limit: int) -> tuple[Swept, bool]:
        return await self._retention.delete_ended(before, limit)

    async def collect_stranded_blobs(
        self, now: datetime, grace: timedelta, limit: int
    ) -> tuple[Swept, bool]:
        return await self._retention.collect_stranded_blobs(now, grace, limit)

    # --- records (records.py) --------------------------------------------------------

    async def add_step_totals(self, totals: Mapping[tuple[str, str], StepTotal]) -> None:
        await self._records.add_step_totals(totals)

    async def step_totals(self, workflow_id: str) -> dict[str, StepTotal]:
        return await self._records.step_totals(workflow_id)

    async def record_runner(self, runner: RunnerSeen) -> None:
        await self._records.record_runner(runner)

    async def list_runners(self, since: datetime) -> list[RunnerSeen]:
        return await self._records.list_runners(since)

    async def revoke_token(self, revoked: RevokedToken) -> None:
        await self._records.revoke_token(revoked)

    async def revoked_token_ids(self, now: datetime) -> list[str]:
        return await self._records.revoked_token_ids(now)

    async def tenant_usage(self, stored_bytes: Mapping[str, int]) -> dict[str, TenantCounts]:
        return await self._records.tenant_usage(stored_bytes)

    # --- the step queue, as every engine sees it -------------------------------------

    async def queue_depths(self) -> list[QueueDepth]:
        cursor = self._db.executions.find({"queue.state": "ready"}, {"tenant_id": 1, "queue": 1})
        ready = {doc["_id"]: doc async for doc in cursor}
        for execution_id, unwritten in self._log.unwritten_statuses.items():
            if unwritten.projection["queue"] is None:
                ready.pop(execution_id, None)
            else:
                ready[execution_id] = {
                    "tenant_id": unwritten.tenant_id,
                    "queue": unwritten.projection["queue"],
                }
        counts: dict[tuple[str, str], tuple[int, datetime]] = {}
        for doc in ready.values():
            for attempt in queued_attempts(doc["queue"]):
                key = (doc["tenant_id"], attempt["handler"])
                queued_at = attempt["queued_at"]
                count, oldest = counts.get(key, (0, queued_at))
                counts[key] = (count + 1, min(oldest, queued_at))
        return [
            QueueDepth(handler, tenant, count, oldest)
            for (tenant, handler), (count, oldest) in sorted(counts.items())
        ]

    async def ready_attempts(self) -> list[ReadyAttempt]:
        # Equality on one indexed field, as queue_depths reads it.
        docs = self._db.executions.find(
            {"queue.state": "ready"}, {"tenant_id": 1, "queue": 1, "priority": 1}
        )
        return [
            ReadyAttempt(
                execution_id=doc["_id"],
                token=queued["token"],
                handler=queued["handler"],
                tenant=doc.get("tenant_id", DEFAULT_TENANT),
                priority=queued.get("priority", doc.get("priority", DEFAULT_PRIORITY)),
                queued_at=queued["queued_at"],
                order=queued.get("order", 0),
            )
            async for doc in docs
            for queued in queued_attempts(doc["queue"])
            # Written before engines shared their queues: no token, its holder hands it out.
            if queued.get("token")
        ]
