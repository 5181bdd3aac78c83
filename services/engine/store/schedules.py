"""Cron schedules in MongoDB (collection `schedules`, one document per schedule).

Every engine's scheduler asks for the due ones with one range on `next_run_time`, a
single-field index that holds only the schedules that run (a paused one has no
next_run_time): a round that finds nothing costs one index lookup. Every change is written
over the version it was decided on (`version`), so of several engines deciding the same
round, or a round and a pause, one write goes in and the others learn they came second.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.engine.domain.schedule import Schedule
from services.engine.store.database import Database
from services.engine.store.errors import domain_errors
from services.engine.store.listing import page
from services.engine.store.repository import Page

# What changes after a schedule is created; the rest is written once.
_CHANGING = (
    "paused",
    "next_run_time",
    "paused_next_run_time",
    "last_run_time",
    "last_execution_id",
    "runs",
    "skipped_runs",
    "version",
)


@domain_errors
class ScheduleRecords:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_schedule(self, schedule: Schedule) -> None:
        await self._db.schedules.insert_one(_to_doc(schedule))

    async def get_schedule(self, tenant_id: str, schedule_id: str) -> Schedule | None:
        doc = await self._db.schedules.find_one({"_id": schedule_id, "tenant_id": tenant_id})
        return _from_doc(doc) if doc else None

    async def list_schedules(
        self, tenant_id: str, page_size: int, page_token: str, workflow_id: str
    ) -> Page[Schedule]:
        query: dict[str, Any] = {"tenant_id": tenant_id}
        if workflow_id:
            query["workflow_id"] = workflow_id
        docs, token = await page(self._db.schedules, query, page_size, page_token)
        return Page([_from_doc(d) for d in docs], token)

    async def save_schedule(self, schedule: Schedule) -> bool:
        doc = _to_doc(schedule)
        changed = {key: doc[key] for key in _CHANGING if key in doc}
        gone = {key: "" for key in _CHANGING if key not in doc}
        update: dict[str, Any] = {"$set": changed}
        if gone:
            update["$unset"] = gone
        result = await self._db.schedules.update_one(
            {"_id": schedule.schedule_id, "version": schedule.version - 1}, update
        )
        return result.matched_count == 1

    async def delete_schedule(self, tenant_id: str, schedule_id: str) -> bool:
        result = await self._db.schedules.delete_one({"_id": schedule_id, "tenant_id": tenant_id})
        return result.deleted_count == 1

    async def due_schedules(self, until: datetime, limit: int) -> list[Schedule]:
        # Soonest first: a round that gets `limit` of them gets those due first. What the
        # range matches (the times of the next seconds and those overdue) is few, so the
        # sort is cheap on SecantusDB, which sorts what a query matches.
        cursor = self._db.schedules.find({"next_run_time": {"$lte": until}}).sort(
            [("next_run_time", 1), ("_id", 1)]
        )
        return [_from_doc(d) for d in await cursor.limit(limit).to_list()]


def _to_doc(schedule: Schedule) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": schedule.schedule_id,
        "tenant_id": schedule.tenant_id,
        "workflow_id": schedule.workflow_id,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "input": schedule.input,
        "overlap": schedule.overlap,
        "catchup_limit": schedule.catchup_limit,
        "priority": schedule.priority,
        "created_at": schedule.created_at,
        "paused": schedule.paused,
        "runs": schedule.runs,
        "skipped_runs": schedule.skipped_runs,
        "version": schedule.version,
    }
    # Left out when unset: the index on next_run_time holds only the schedules that run.
    for key in ("next_run_time", "paused_next_run_time", "last_run_time", "last_execution_id"):
        value = getattr(schedule, key)
        if value is not None:
            doc[key] = value
    return doc


def _from_doc(doc: dict[str, Any]) -> Schedule:
    return Schedule(
        schedule_id=doc["_id"],
        tenant_id=doc["tenant_id"],
        workflow_id=doc["workflow_id"],
        cron=doc["cron"],
        timezone=doc["timezone"],
        input=doc.get("input") or {},
        overlap=doc["overlap"],
        catchup_limit=doc["catchup_limit"],
        priority=doc.get("priority", 0),
        created_at=doc["created_at"],
        paused=doc.get("paused", False),
        next_run_time=doc.get("next_run_time"),
        paused_next_run_time=doc.get("paused_next_run_time"),
        last_run_time=doc.get("last_run_time"),
        last_execution_id=doc.get("last_execution_id"),
        runs=doc.get("runs", 0),
        skipped_runs=doc.get("skipped_runs", 0),
        version=doc.get("version", 0),
    )
