"""Workflow versions: when a definition sent again is the same one, and what the next version
of a workflow is.

A workflow keeps its id, name, tenant and creation time across versions; what a client
defines (description, steps, input schema, concurrency) is what a version changes. Two
definitions are compared once validated (new_workflow), so that a default spelled out equals
the default left out.

A step keeps its step_id across versions while it keeps its name: the id names the step of
this workflow, whatever its handler or bounds in a version, and what is kept by step (the
ETA's typical durations, keyed by workflow and step name) carries over. A step that is new in
a version gets the id new_workflow gave it.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from services.engine.domain.workflow import Workflow

# What is the workflow's own rather than its definition's: blanked before two are compared.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _definition(workflow: Workflow) -> Workflow:
    # dataclasses.replace keeps every other field: one added to Workflow or StepDefinition
    # later is compared without a change here.
    return dataclasses.replace(
        workflow,
        workflow_id="",
        tenant_id="",
        created_at=_EPOCH,
        version=0,
        updated_at=None,
        steps=tuple(dataclasses.replace(step, step_id="") for step in workflow.steps),
    )


def same_definition(a: Workflow, b: Workflow) -> bool:
    """Whether `a` and `b` define the same workflow, ids, versions and times aside."""
    return _definition(a) == _definition(b)


def next_version(current: Workflow, proposed: Workflow, now: datetime) -> Workflow:
    """`proposed` (a definition fresh from new_workflow) as the version after `current`."""
    step_ids = {step.name: step.step_id for step in current.steps}
    return dataclasses.replace(
        proposed,
        workflow_id=current.workflow_id,
        name=current.name,
        tenant_id=current.tenant_id,
        created_at=current.created_at,
        version=current.version + 1,
        updated_at=now,
        steps=tuple(
            dataclasses.replace(step, step_id=step_ids.get(step.name, step.step_id))
            for step in proposed.steps
        ),
    )
