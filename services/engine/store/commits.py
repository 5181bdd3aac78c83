"""The event log's writer: group commits, each in one transaction with the lease's renewal.

Appends from every execution that arrive while a commit is in flight go out together in one
`insert_many`. A lone append costs one round trip; two hundred busy executions cost a few. An
event's _id is its place in the log (`execution_id:seq`), which is what makes a lost race
between two writers impossible to miss.

The status document (the projection of the log that listings read) is written apart from the
events, at most once a `PROJECTION_SECONDS` per execution, and right after the events when the
execution ends: rewriting the whole document for every event was most of what the database
spent per event. Until it is written, the store answers from the unwritten document
(`unwritten`), and a load catches up from the log, so both are exact in this engine; another
engine's listing may be that much behind.

Every commit goes in one transaction with an update of this engine's lease document that
finds it only while it is not fenced (store/leases.py): an engine another engine fenced
writes nothing afterwards. A commit also renews the lease; the lease loop renews it through
the same writer (`renew`), so that this engine's own writes never conflict with each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, PyMongoError

from services.engine.clock import utc_now
from services.engine.domain.errors import Fenced, NotOwner, StoreUnavailable
from services.engine.domain.events import Event
from services.engine.domain.execution import WAITING, ExecutionState
from services.engine.store.database import DUPLICATE_KEY, Database
from services.engine.store.documents import event_to_doc, status_to_doc
from services.engine.store.leases import EngineLeases
from services.engine.store.repository import LeaseHolder

log = logging.getLogger(__name__)

# How far behind the log an execution's status document may be (see the module docstring).
PROJECTION_SECONDS = 5.0
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


@dataclass
class Append:
    """One execution's new events and status document, waiting for a commit (a renewal of
    the lease alone has neither)."""

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


class EventLogWriter:
    def __init__(self, db: Database, leases: EngineLeases) -> None:
        self._db = db
        self._leases = leases
        self._pending: list[Append] = []
        # Status documents not written yet: the latest per execution, and since when the
        # oldest of them waits (loop time).
        self._projections: dict[str, Append] = {}
        self._projections_since: float | None = None
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._slow_commit_said = -float("inf")
        # Told the events and the seconds of every commit that succeeded (metrics).
        self.on_commit: Callable[[int, float], None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._write_loop(), name="event-log-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(PyMongoError, Fenced):
            # Not needed for correctness (loads catch up from the log), but listings are
            # right at once after a clean stop.
            await self._commit([], list(self._projections.values()))
        for item in self._pending:
            if not item.done.done():
                item.done.set_exception(StoreUnavailable("the store is closing"))

    def unwritten(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The status document `doc` as this engine last committed it, written yet or not."""
        unwritten = self._projections.get(doc["_id"])
        return doc if unwritten is None else {**doc, **unwritten.projection}

    @property
    def unwritten_statuses(self) -> Mapping[str, Append]:
        return self._projections

    async def append(self, events: Sequence[Event], state: ExecutionState) -> None:
        item = Append(
            event_docs=[event_to_doc(e, state.workflow.tenant_id) for e in events],
            execution_id=state.execution_id,
            tenant_id=state.workflow.tenant_id,
            last_seq=state.last_seq,
            projection=status_to_doc(state),
            # An ended run, or one about to be parked, leaves memory: so does its status.
            urgent=state.is_terminal or state.status == WAITING,
            lease=self._leases.current(),
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

    def _next_batch(self) -> list[Append]:
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

    async def _flush(self, batch: list[Append]) -> None:
        loop = asyncio.get_running_loop()
        aged = self._projections_since is not None and (
            loop.time() - self._projections_since >= PROJECTION_SECONDS
        )
        # The oldest first; those past MAX_COMMIT_STATUSES stay due for the next commit.
        aged_items = list(itertools.islice(self._projections.values(), MAX_COMMIT_STATUSES))
        all_aged = aged and len(aged_items) == len(self._projections)
        failures: dict[int, Exception] = {}
        for i, item in enumerate(batch):
            if item.lease is not self._leases.held:
                # Decided under a lease that was fenced since: not this engine's to write.
                failures[i] = Fenced("this engine's lease was fenced; retry")
        written: list[Append] = []
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
                self._leases.lost()
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
        batch: list[Append],
        failures: dict[int, Exception],
        written: list[Append],
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

    async def _commit(self, docs: list[dict[str, Any]], projections: list[Append]) -> None:
        """One transaction: the events, the status documents, and the renewal of this
        engine's lease, which finds the lease only while no other engine fenced it."""
        lease = self._leases.held
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
                async with self._db.transaction() as session:
                    if docs:
                        await self._db.events.insert_many(docs, ordered=False, session=session)
                    if updates:
                        await self._db.executions.bulk_write(
                            updates, ordered=False, session=session
                        )
                    # Last: the lease document is locked only from here to the commit, and
                    # an engine fencing this one waits for no more than that.
                    renewed = await self._db.leases.update_one(
                        {"_id": lease.lease_id, "fenced_at": None},
                        {"$set": {"expires_at": utc_now() + lease.duration}},
                        session=session,
                    )
                    if renewed.matched_count == 0:
                        raise Fenced("this engine's lease was fenced; retry")
                seconds = time.monotonic() - began
                self._note_slow_commit(seconds, lease, len(docs), len(updates))
                if self.on_commit is not None:
                    self.on_commit(len(docs), seconds)
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

    async def renew(self) -> None:
        """Through the write loop (an append of nothing); raises Fenced when another engine
        fenced this one's lease."""
        item = Append([], "", "", 0, {}, urgent=False, lease=self._leases.current())
        self._pending.append(item)
        self._wakeup.set()
        await item.done


def _refused(exc: BulkWriteError, owners: list[int], batch: list[Append]) -> dict[int, Exception]:
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
