"""An in-memory ExecutionStore: the repository's contract without a database.

Everything goes in and out through the same documents the MongoDB store writes, so a test
sees the copies a real store would give back, never shared objects.
"""

from __future__ import annotations

import copy
import hashlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from services.engine.domain.errors import BlobNotFound, Fenced, NotOwner
from services.engine.domain.events import Event
from services.engine.domain.execution import ExecutionState
from services.engine.domain.workflow import Workflow
from services.engine.store.documents import (
    event_from_doc,
    event_to_doc,
    execution_from_doc,
    execution_to_doc,
    payloads_in_log,
    queued_attempts,
)
from services.engine.store.repository import (
    BlobRef,
    Claim,
    ExecutionFilter,
    Page,
    QueueDepth,
    RequestIdTaken,
    RunnerSeen,
    StepTotal,
    WorkflowNameExists,
)


class InMemoryStore:
    def __init__(self) -> None:
        self.workflows: dict[str, Workflow] = {}
        # Every version, oldest first, by workflow id.
        self.workflow_versions: dict[str, list[Workflow]] = {}
        self.executions: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.blobs: dict[str, tuple[str, bytes]] = {}
        self.durations: dict[tuple[str, str], StepTotal] = {}
        self.runners: dict[str, RunnerSeen] = {}
        self._lease: str | None = None
        self.fenced: set[str] = set()

    async def create_workflow(self, workflow: Workflow) -> None:
        if any(
            (w.tenant_id, w.name) == (workflow.tenant_id, workflow.name)
            for w in self.workflows.values()
        ):
            raise WorkflowNameExists(workflow.name)
        self.workflows[workflow.workflow_id] = workflow
        self.workflow_versions[workflow.workflow_id] = [workflow]

    async def add_workflow_version(self, workflow: Workflow, previous: int) -> bool:
        current = self.workflows.get(workflow.workflow_id)
        if current is None or current.version != previous:
            return False
        self.workflows[workflow.workflow_id] = workflow
        self.workflow_versions[workflow.workflow_id].append(workflow)
        return True

    async def get_workflow_version(
        self, tenant_id: str, workflow_id: str, version: int
    ) -> Workflow | None:
        return next(
            (
                w
                for w in self.workflow_versions.get(workflow_id, [])
                if (w.tenant_id, w.version) == (tenant_id, version)
            ),
            None,
        )

    async def list_workflow_versions(
        self, tenant_id: str, workflow_id: str, page_size: int, page_token: str
    ) -> Page[Workflow]:
        newest_first = [
            w
            for w in reversed(self.workflow_versions.get(workflow_id, []))
            if w.tenant_id == tenant_id
        ]
        start = int(page_token or 0)
        rest = newest_first[start:]
        token = str(start + page_size) if len(rest) > page_size else ""
        return Page(rest[:page_size], token)

    async def get_workflow(self, tenant_id: str, workflow_id: str) -> Workflow | None:
        workflow = self.workflows.get(workflow_id)
        return workflow if workflow is not None and workflow.tenant_id == tenant_id else None

    async def list_workflows(
        self, tenant_id: str, page_size: int, page_token: str, name: str
    ) -> Page[Workflow]:
        items = [
            w
            for w in self.workflows.values()
            if w.tenant_id == tenant_id and (not name or w.name == name)
        ]
        return Page(items[:page_size], "")

    async def create_execution(self, state: ExecutionState) -> None:
        if state.request_id and any(
            (d.get("tenant_id"), d.get("request_id"))
            == (state.workflow.tenant_id, state.request_id)
            for d in self.executions.values()
        ):
            raise RequestIdTaken(state.request_id)
        doc = execution_to_doc(state)
        doc["lease_owner"] = self._lease_of_caller()
        self.executions[state.execution_id] = copy.deepcopy(doc)
        self.events[state.execution_id] = []

    async def find_by_request_id(self, tenant_id: str, request_id: str) -> ExecutionState | None:
        for execution_id, doc in self.executions.items():
            if (doc.get("tenant_id"), doc.get("request_id")) == (tenant_id, request_id):
                return await self.load_execution(execution_id)
        return None

    async def load_execution(self, execution_id: str) -> ExecutionState | None:
        doc = self.executions.get(execution_id)
        if doc is None:
            return None
        state = execution_from_doc(copy.deepcopy(doc))
        logged = {d["seq"]: d["data"] for d in copy.deepcopy(self.events[execution_id])}
        for i in payloads_in_log(doc):
            attempt = state.history[i]
            attempt.input_payload = logged[attempt.started_seq or 0].get("input_payload") or {}
            if attempt.finished_seq is not None:
                attempt.output_payload = logged[attempt.finished_seq].get("output")
        for event in await self.read_events(execution_id, state.last_seq, 10**9):
            state.apply(event)
        return state

    async def list_executions(
        self, tenant_id: str, page_size: int, page_token: str, only: ExecutionFilter
    ) -> Page[ExecutionState]:
        ids = [
            i
            for i, d in self.executions.items()
            if d["tenant_id"] == tenant_id
            and (d["workflow_id"] == only.workflow_id or not only.workflow_id)
        ]
        states = [s for s in [await self.load_execution(i) for i in reversed(ids)] if s]
        listed = [
            s
            for s in states
            if (not only.statuses or s.status in only.statuses)
            and (only.created_after is None or s.created_at >= only.created_after)
            and (only.created_before is None or s.created_at < only.created_before)
            and only.workflow_name_contains.lower() in s.workflow.name.lower()
        ]
        return Page(listed[:page_size], "")

    async def append(self, events: Sequence[Event], state: ExecutionState) -> None:
        self._lease_of_caller()
        log = self.events[state.execution_id]
        taken = {d["seq"] for d in log}
        if any(e.seq in taken for e in events):
            raise NotOwner(f"execution {state.execution_id} was written by another engine")
        log.extend(copy.deepcopy(event_to_doc(e)) for e in events)
        doc = self.executions[state.execution_id]
        if doc["last_seq"] < state.last_seq or not events:
            doc.update(copy.deepcopy(execution_to_doc(state)))

    async def read_events(self, execution_id: str, after_seq: int, limit: int) -> list[Event]:
        docs = sorted(self.events.get(execution_id, []), key=lambda d: d["seq"])
        return [event_from_doc(copy.deepcopy(d)) for d in docs if d["seq"] > after_seq][:limit]

    # One engine at a time: its lease is the store's (a restart takes a new one).

    @property
    def lease_id(self) -> str | None:
        return self._lease

    def _lease_of_caller(self) -> str:
        if self._lease is None or self._lease in self.fenced:
            raise Fenced("this engine's lease was fenced")
        return self._lease

    async def acquire_lease(
        self, engine_id: str, address: str, seconds: float, *, fence_namesakes: bool
    ) -> str:
        if self._lease is not None and fence_namesakes:
            self.fenced.add(self._lease)
        self._lease = str(uuid.uuid4())
        return self._lease

    async def renew_lease(self) -> None:
        self._lease_of_caller()

    async def release_lease(self) -> None:
        pass

    async def fence_expired_leases(self, now: datetime) -> None:
        pass

    async def claim_orphans(self) -> list[str]:
        mine = self._lease_of_caller()
        for doc in self.executions.values():
            if doc.get("lease_owner") in self.fenced:
                doc["lease_owner"] = mine
        return [i for i, d in self.executions.items() if d.get("lease_owner") == mine]

    async def claim_execution(self, execution_id: str) -> Claim:
        mine = self._lease_of_caller()
        doc = self.executions.get(execution_id)
        if doc is None:
            return Claim(held=False)
        if doc.get("lease_owner") not in (mine, *self.fenced) and not doc.get("parked"):
            return Claim(held=False)
        doc["lease_owner"] = mine
        doc.pop("parked", None)
        return Claim(held=True)

    async def reopen(self, execution_id: str, last_seq: int) -> bool:
        doc = self.executions.get(execution_id)
        if doc is None or doc["last_seq"] != last_seq or doc.get("lease_owner") is not None:
            return False
        doc["lease_owner"] = self._lease_of_caller()
        doc.pop("ended_at", None)
        return True

    async def park(self, execution_id: str) -> bool:
        doc = self.executions.get(execution_id)
        if doc is None or doc.get("lease_owner") != self._lease_of_caller():
            return False
        doc.update(lease_owner=None, parked=True)
        return True

    async def put_blob(
        self, execution_id: str, data: bytes, *, part_of_input: bool = False
    ) -> BlobRef:
        blob_id = str(uuid.uuid4())
        self.blobs[blob_id] = (execution_id, data)
        return BlobRef(blob_id, len(data), hashlib.sha256(data).hexdigest())

    async def read_blob(self, execution_id: str, blob_id: str) -> AsyncIterator[bytes]:
        owner, data = self.blobs.get(blob_id, ("", b""))
        if owner != execution_id:
            raise BlobNotFound(f"blob {blob_id!r} not found")

        async def one() -> AsyncIterator[bytes]:
            yield data

        return one()

    async def delete_blobs(self, execution_id: str) -> None:
        for blob_id in [b for b, (owner, _) in self.blobs.items() if owner == execution_id]:
            del self.blobs[blob_id]

    async def add_step_totals(self, totals: Mapping[tuple[str, str], StepTotal]) -> None:
        for key, total in totals.items():
            self.durations.setdefault(key, StepTotal()).add(total.count, total.seconds)

    async def step_totals(self, workflow_id: str) -> dict[str, StepTotal]:
        return {
            step: StepTotal(total.count, total.seconds)
            for (workflow, step), total in self.durations.items()
            if workflow == workflow_id
        }

    async def queue_depths(self) -> list[QueueDepth]:
        counts: dict[tuple[str, str], tuple[int, datetime]] = {}
        for doc in self.executions.values():
            queue = doc.get("queue")
            for queued in queued_attempts(queue) if queue else []:
                key = (doc["tenant_id"], queued["handler"])
                count, oldest = counts.get(key, (0, queued["queued_at"]))
                counts[key] = (count + 1, min(oldest, queued["queued_at"]))
        return [QueueDepth(h, t, n, oldest) for (t, h), (n, oldest) in sorted(counts.items())]

    async def record_runner(self, runner: RunnerSeen) -> None:
        self.runners[runner.runner_id] = runner

    async def list_runners(self, since: datetime) -> list[RunnerSeen]:
        return [r for r in self.runners.values() if r.last_poll_at >= since]
