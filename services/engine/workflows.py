"""What callers ask of workflow definitions: create one, change it (a new version), read the
current version or any other, list them.

A name is unique within a tenant. Creating a name again with the same definition returns the
workflow that has it (so a create can be retried, or a file applied twice); with another
definition it is refused (WorkflowNameTaken), since an update is what changes a definition.
An update that changes nothing makes no version.

A start runs its workflow's current version as read from the store at most START_READ_SECONDS
before (`for_start`): a version made on this engine is seen by its next start, one made on
another engine within that long (a read per start cost the embedded database 1.2 of its
~10 ms per run in the throughput bench). An execution carries the definition it started
with (its document embeds it), and runs it to its end whatever versions come after.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from services.engine.clock import utc_now
from services.engine.domain.errors import (
    InvalidArgument,
    StoreUnavailable,
    WorkflowNameTaken,
    WorkflowNotFound,
    WorkflowVersionNotFound,
)
from services.engine.domain.versions import next_version, same_definition
from services.engine.domain.workflow import Workflow, new_workflow
from services.engine.store.repository import ExecutionStore, Page, WorkflowNameExists

# Updates of one workflow that raced another update and lost, before the caller is told to
# retry: each round reads the version that won.
MAX_UPDATE_ROUNDS = 20
MAX_VERSION = 2**31 - 1  # Workflow.version is an int32
# How old a current version a start may run; workflows whose current version is kept.
START_READ_SECONDS = 1.0
MAX_KEPT = 10_000

OfferedHandlers = Callable[[], Awaitable[set[str]]]


class Workflows:
    def __init__(self, store: ExecutionStore, offered_handlers: OfferedHandlers) -> None:
        """`offered_handlers`: the handlers the step runners that polled lately offer."""
        self._store = store
        self._offered_handlers = offered_handlers
        # workflow_id -> (its current version, the monotonic time it was read or made).
        self._current: dict[str, tuple[Workflow, float]] = {}

    async def for_start(self, workflow_id: str, *, tenant: str) -> Workflow:
        """The current version, as read at most START_READ_SECONDS ago."""
        kept = self._current.get(workflow_id)
        if kept is not None and time.monotonic() - kept[1] < START_READ_SECONDS:
            if kept[0].tenant_id != tenant:
                raise WorkflowNotFound(workflow_id)
            return kept[0]
        workflow = await self.get(workflow_id, tenant=tenant)
        self._keep(workflow)
        return workflow

    def _keep(self, workflow: Workflow) -> None:
        self._current.pop(workflow.workflow_id, None)
        self._current[workflow.workflow_id] = (workflow, time.monotonic())
        if len(self._current) > MAX_KEPT:
            del self._current[next(iter(self._current))]  # the longest unread

    async def create(
        self,
        name: str,
        description: str,
        steps: list[dict[str, Any]],
        *,
        tenant: str,
        input_schema: dict[str, Any] | None = None,
        max_parallel_steps: int = 0,
    ) -> tuple[Workflow, bool]:
        """The workflow of that name, and whether this call created it."""
        proposed = new_workflow(
            name,
            description,
            steps,
            utc_now(),
            tenant_id=tenant,
            input_schema=input_schema,
            max_parallel_steps=max_parallel_steps,
        )
        existing = await self._named(tenant, name)
        if existing is not None:
            return self._same_or_refused(existing, proposed), False
        await self._check_handlers(proposed)
        try:
            await self._store.create_workflow(proposed)
        except WorkflowNameExists:
            # Another create of the name came first, since the look above.
            existing = await self._named(tenant, name)
            if existing is None:  # pragma: no cover - the unique index says it exists
                raise StoreUnavailable("the workflow name is taken but not readable") from None
            return self._same_or_refused(existing, proposed), False
        return proposed, True

    async def update(
        self,
        workflow_id: str,
        name: str,
        description: str,
        steps: list[dict[str, Any]],
        *,
        tenant: str,
        input_schema: dict[str, Any] | None = None,
        max_parallel_steps: int = 0,
    ) -> tuple[Workflow, bool]:
        """The workflow's current version after the call, and whether the call made it.
        `name`: empty, or the workflow's own."""
        current = await self.get(workflow_id, tenant=tenant)
        if name and name != current.name:
            raise InvalidArgument(
                "name",
                f"a workflow keeps its name: this one is {current.name!r}"
                " (create a workflow to have another name)",
            )
        proposed = new_workflow(
            current.name,
            description,
            steps,
            utc_now(),
            tenant_id=tenant,
            input_schema=input_schema,
            max_parallel_steps=max_parallel_steps,
        )
        checked = False
        for _ in range(MAX_UPDATE_ROUNDS):
            if same_definition(current, proposed):
                return current, False
            if not checked:
                await self._check_handlers(proposed)
                checked = True
            if current.version >= MAX_VERSION:
                raise InvalidArgument("workflow", f"at most {MAX_VERSION} versions")
            version = next_version(current, proposed, utc_now())
            if await self._store.add_workflow_version(version, current.version):
                self._keep(version)
                return version, True
            current = await self.get(workflow_id, tenant=tenant)
        raise StoreUnavailable(f"workflow {workflow_id} is being updated by others; retry")

    async def get(self, workflow_id: str, *, tenant: str, version: int = 0) -> Workflow:
        """The current version, or `version` (0: the current one)."""
        if version < 0:
            raise InvalidArgument("version", "must be 0 (the current one) or more")
        workflow = await self._store.get_workflow(tenant, workflow_id) if workflow_id else None
        if workflow is None:
            raise WorkflowNotFound(workflow_id)
        if version in (0, workflow.version):
            return workflow
        found = (
            await self._store.get_workflow_version(tenant, workflow_id, version)
            if version < workflow.version
            else None
        )
        if found is None:
            raise WorkflowVersionNotFound(workflow_id, version)
        return found

    async def versions(
        self, workflow_id: str, *, tenant: str, page_size: int, page_token: str
    ) -> Page[Workflow]:
        """Newest first."""
        await self.get(workflow_id, tenant=tenant)  # NOT_FOUND for an unknown one
        return await self._store.list_workflow_versions(tenant, workflow_id, page_size, page_token)

    async def listing(
        self, *, tenant: str, page_size: int, page_token: str, name: str
    ) -> Page[Workflow]:
        """Oldest first; `name`, when given, only the one named so."""
        return await self._store.list_workflows(tenant, page_size, page_token, name)

    async def _named(self, tenant: str, name: str) -> Workflow | None:
        page = await self._store.list_workflows(tenant, 1, "", name)
        return page.items[0] if page.items else None

    @staticmethod
    def _same_or_refused(existing: Workflow, proposed: Workflow) -> Workflow:
        if not same_definition(existing, proposed):
            raise WorkflowNameTaken(existing.name, existing.workflow_id)
        return existing

    async def _check_handlers(self, workflow: Workflow) -> None:
        offered = await self._offered_handlers()
        for i, step in enumerate(workflow.steps):
            if step.handler not in offered:
                raise InvalidArgument(
                    f"steps[{i}].handler",
                    f"no step runner offers a handler named {step.handler!r}"
                    f" (offered: {', '.join(sorted(offered)) or 'none: no runner has polled'})",
                )
