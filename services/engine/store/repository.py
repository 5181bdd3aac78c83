"""What the engine needs from storage, as an interface the runner and RPC layer depend on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from services.engine.domain.events import Event
from services.engine.domain.execution import ExecutionState
from services.engine.domain.schedule import Schedule
from services.engine.domain.workflow import Workflow

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


class RequestIdTaken(Exception):
    """An execution with this request_id exists already."""


class WorkflowNameExists(Exception):
    """The tenant has a workflow of this name already (names are unique per tenant)."""


@dataclass(frozen=True)
class ExecutionFilter:
    """Which executions a listing returns: all of what is set applies."""

    workflow_id: str = ""
    # Execution statuses (execution.PENDING, …); empty: any.
    statuses: frozenset[str] = frozenset()
    created_after: datetime | None = None  # at or after
    created_before: datetime | None = None
    # Matched against the workflow's name, whatever the case.
    workflow_name_contains: str = ""


@dataclass(frozen=True)
class BlobRef:
    blob_id: str
    size_bytes: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"blob_id": self.blob_id, "size_bytes": self.size_bytes, "sha256": self.sha256}


@dataclass
class StepTotal:
    """Successful attempts of one step, and the seconds they took from queue to end."""

    count: int = 0
    seconds: float = 0.0

    def add(self, count: int, seconds: float) -> None:
        self.count += count
        self.seconds += seconds


@dataclass(frozen=True)
class QueueDepth:
    """Attempts of one handler waiting in the step queue; `tenant` is empty on a total."""

    handler: str
    tenant: str
    ready: int
    oldest_queued_at: datetime


@dataclass(frozen=True)
class LeaseHolder:
    """This engine's lease: every write it makes is conditioned on it (store/commits.py)."""

    lease_id: str
    duration: timedelta


@dataclass(frozen=True)
class Claim:
    """Whether this engine holds an execution now; if another engine does, where it is."""

    held: bool
    owner_address: str | None = None
    # When the owner's lease, as read, runs out: until then calls for it may go straight
    # there without another look.
    owner_until: datetime | None = None


@dataclass(frozen=True)
class RunnerSeen:
    """A step runner as its last recorded poll described it."""

    runner_id: str
    handlers: tuple[str, ...]
    free_slots: int
    last_poll_at: datetime


class ExecutionStore(Protocol):
    async def create_workflow(self, workflow: Workflow) -> None:
        """Stores a new workflow as its version 1. Raises WorkflowNameExists when the tenant
        has a workflow of that name."""
        ...

    async def get_workflow(self, tenant_id: str, workflow_id: str) -> Workflow | None: ...

    async def list_workflows(
        self, tenant_id: str, page_size: int, page_token: str, name: str
    ) -> Page[Workflow]:
        """The tenant's, oldest first."""
        ...

    async def add_workflow_version(self, workflow: Workflow, previous: int) -> bool:
        """Makes `workflow` (its id, the next version number) its workflow's current
        version and keeps it among the versions, if the current one is still `previous`;
        False when another update came first."""
        ...

    async def get_workflow_version(
        self, tenant_id: str, workflow_id: str, version: int
    ) -> Workflow | None: ...

    async def list_workflow_versions(
        self, tenant_id: str, workflow_id: str, page_size: int, page_token: str
    ) -> Page[Workflow]:
        """Newest first; empty for a workflow the tenant does not have."""
        ...

    async def create_execution(self, state: ExecutionState) -> None:
        """Inserts a new execution at seq 0, held by this engine's lease.

        Raises RequestIdTaken when its request_id is already used."""
        ...

    async def find_by_request_id(
        self, tenant_id: str, request_id: str
    ) -> ExecutionState | None: ...

    async def load_execution(self, execution_id: str) -> ExecutionState | None:
        """The execution as of its last logged event (the projection plus any tail),
        whatever its tenant: the runner holds executions for all of them and checks the
        caller's tenant itself (`Runner.visible`)."""
        ...

    async def list_executions(
        self, tenant_id: str, page_size: int, page_token: str, only: ExecutionFilter
    ) -> Page[ExecutionState]:
        """The tenant's that `only` lets through, newest first, without history."""
        ...

    async def append(self, events: Sequence[Event], state: ExecutionState) -> None:
        """Appends events to the log, and the status projection to `state` with them or
        soon after, under this engine's lease.

        Durable when it returns. Raises NotOwner when another writer took one of the seqs,
        Fenced when this engine's lease was fenced (it must let go of everything),
        StoreUnavailable when the database cannot be reached."""
        ...

    async def read_events(self, execution_id: str, after_seq: int, limit: int) -> list[Event]: ...

    # Leases are per engine process: an execution is held by the lease in its lease_owner.

    @property
    def lease_id(self) -> str | None:
        """This engine's lease now; None after a fence, until it takes a new one."""
        ...

    async def acquire_lease(
        self, engine_id: str, address: str, seconds: float, *, fence_namesakes: bool
    ) -> str:
        """Takes a new lease for this engine, which calls at `address` reach, and makes it
        the one every later write is conditioned on. `fence_namesakes`: fence the leases of
        earlier processes with the same `engine_id` (a restart), so their executions are
        orphans at once."""
        ...

    async def renew_lease(self) -> None:
        """Extends this engine's lease; raises Fenced when another engine fenced it."""
        ...

    async def release_lease(self) -> None:
        """Lets this engine's lease run out now: others take its executions at once."""
        ...

    async def fence_expired_leases(self, now: datetime) -> None:
        """Fences every lease that ran out but this engine's own: their engines can write
        nothing more, and their executions are orphans (`claim_orphans`)."""
        ...

    async def claim_orphans(self) -> list[str]:
        """Moves every orphan (its lease fenced) to this engine's lease; returns every
        execution this engine's lease holds."""
        ...

    async def claim_execution(self, execution_id: str) -> Claim:
        """Moves one execution to this engine's lease if it holds it already, it is an
        orphan, or it is parked; otherwise says where the engine holding it is."""
        ...

    async def reopen(self, execution_id: str, last_seq: int) -> bool:
        """Holds, under this engine's lease, an execution that ended (no engine holds one) and
        is still at `last_seq`, so that a retry can log its going on; it is not an ended one
        any more for retention. False when it is not so (another retry came first)."""
        ...

    async def park(self, execution_id: str) -> bool:
        """Lets go of an execution this engine holds that waits for a command (a manual run
        waiting to be advanced): no engine holds it, none claims it as an orphan, and the
        next command moves it to the engine it reaches (`claim_execution`). Whether this
        engine held it."""
        ...

    async def put_blob(
        self, execution_id: str, data: bytes, *, part_of_input: bool = False
    ) -> BlobRef:
        """Stores `data` for the execution. `part_of_input`: a value of a start's input,
        whose bytes the tenant is charged with the input's; otherwise (a step's) on their
        own, and given back when retention deletes it."""
        ...

    async def read_blob(self, execution_id: str, blob_id: str) -> AsyncIterator[bytes]: ...

    async def delete_blobs(self, execution_id: str) -> None: ...

    async def add_step_totals(self, totals: Mapping[tuple[str, str], StepTotal]) -> None:
        """Adds to the totals of (workflow_id, step_name)."""
        ...

    async def step_totals(self, workflow_id: str) -> dict[str, StepTotal]: ...

    async def queue_depths(self) -> list[QueueDepth]:
        """Queued attempts by tenant and handler, as the status projections say, whichever
        engine holds them."""
        ...

    async def record_runner(self, runner: RunnerSeen) -> None: ...

    async def list_runners(self, since: datetime) -> list[RunnerSeen]:
        """Runners whose last poll was at `since` or later."""
        ...


@dataclass(frozen=True)
class CommittedEvent:
    """An event as the log's change feed gives it: durable, whichever engine wrote it, with
    the tenant of its execution (which `Event.data`, what clients see, does not carry)."""

    event: Event
    # Empty for an event written by an engine older than the feed.
    tenant_id: str


# Where a feed of the log stands, opaque to all but the store that gave it.
ResumeToken = Mapping[str, Any]


class HistoryLost(Exception):
    """The log's change history no longer reaches back to the resume token: events
    committed since may never be given. Follow from now, and read the log again."""


class CommittedEvents(Protocol):
    """One open feed of the events committed to the log."""

    @property
    def resume_token(self) -> ResumeToken | None:
        """Where to resume to miss nothing after what `next` has given."""
        ...

    async def next(self) -> CommittedEvent | None:
        """The next event committed, in commit order; None after a quiet spell (about a
        second), so that a caller may look up. Raises StoreUnavailable when the database
        cannot be reached and HistoryLost when the feed cannot go on where it was."""
        ...

    async def close(self) -> None: ...


class EventLogFeed(Protocol):
    async def follow_events(self, resume_after: ResumeToken | None) -> CommittedEvents:
        """The events committed after `resume_after`, or from now on when None: once it
        returns, nothing committed later is missed. Raises HistoryLost when the token is too
        old, StoreUnavailable when the database cannot be reached."""
        ...


@dataclass(frozen=True)
class RevokedToken:
    token_id: str
    expires_at: datetime
    revoked_at: datetime
    # Who revoked it (subject@tenant), for the audit.
    revoked_by: str


class RevocationStore(Protocol):
    async def revoke_token(self, revoked: RevokedToken) -> None: ...

    async def revoked_token_ids(self, now: datetime) -> list[str]:
        """The ids of revoked tokens that expire after `now`."""
        ...


@dataclass
class TenantCounts:
    """What one tenant holds, as the database counts it (services/engine/quotas.py)."""

    running: int = 0
    stored_bytes: int = 0


class TenantUsageStore(Protocol):
    async def tenant_usage(self, stored_bytes: Mapping[str, int]) -> dict[str, TenantCounts]:
        """Adds `stored_bytes` (by tenant) to the tenants' stored-bytes counters, then reads
        every tenant's counter and counts its executions not yet ended, whichever engine
        holds them."""
        ...


@dataclass(frozen=True)
class Swept:
    """What one retention round (or one batch of it) deleted (services/engine/retention.py)."""

    executions: int = 0
    events: int = 0
    blobs: int = 0
    # The blobs' sizes; and what was taken off the tenants' stored-bytes counters (inputs as
    # charged, and the blobs steps wrote).
    blob_bytes: int = 0
    tenant_bytes: int = 0

    def __add__(self, other: Swept) -> Swept:
        return Swept(
            self.executions + other.executions,
            self.events + other.events,
            self.blobs + other.blobs,
            self.blob_bytes + other.blob_bytes,
            self.tenant_bytes + other.tenant_bytes,
        )


class RetentionStore(Protocol):
    async def delete_ended(self, before: datetime, limit: int) -> tuple[Swept, bool]:
        """Deletes up to `limit` executions that ended before `before`, with everything
        stored for them, and takes their bytes off their tenants' counters; and whether
        there may be more. Idempotent, and safe while other engines do the same; never
        touches an execution that has not ended."""
        ...

    async def collect_stranded_blobs(
        self, now: datetime, grace: timedelta, limit: int
    ) -> tuple[Swept, bool]:
        """Looks at up to `limit` blobs stored `grace` ago or longer that were never looked
        at, and deletes those whose execution does not exist (a start refused or cut short
        after its input's blobs were written); and whether there may be more."""
        ...


class ScheduleStore(Protocol):
    """Cron schedules (services/engine/schedules.py, scheduler.py)."""

    async def create_schedule(self, schedule: Schedule) -> None: ...

    async def get_schedule(self, tenant_id: str, schedule_id: str) -> Schedule | None: ...

    async def list_schedules(
        self, tenant_id: str, page_size: int, page_token: str, workflow_id: str
    ) -> Page[Schedule]:
        """The tenant's (only `workflow_id`'s, when given), oldest first."""
        ...

    async def save_schedule(self, schedule: Schedule) -> bool:
        """Writes what changed in `schedule` over the version it was decided on
        (`schedule.version - 1`); False when another writer changed or deleted it first."""
        ...

    async def delete_schedule(self, tenant_id: str, schedule_id: str) -> bool:
        """Whether there was one to delete."""
        ...

    async def due_schedules(self, until: datetime, limit: int) -> list[Schedule]:
        """Up to `limit` schedules not paused whose next_run_time is at or before `until`,
        soonest first, whatever their tenant."""
        ...
