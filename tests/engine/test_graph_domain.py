"""Steps side by side and retries in the state machine on its own: no database, no network."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.engine.domain import events as ev
from services.engine.domain import execution as ex
from services.engine.domain import progress as pg
from services.engine.domain.decisions import decide
from services.engine.domain.errors import InvalidArgument, NotRetryable
from services.engine.domain.retry import retried
from services.engine.domain.workflow import new_workflow

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def diamond(mode: str = ex.AUTOMATIC, **step: object) -> ex.ExecutionState:
    steps = [
        {"name": "a", "handler": "h", **step},
        {"name": "b", "handler": "h", "after": ["a"], **step},
        {"name": "c", "handler": "h", "after": ["a"], **step},
        {"name": "d", "handler": "h", "after": ["b", "c"], **step},
    ]
    workflow = new_workflow("diamond", "", steps, T0, tenant_id="t")
    return ex.ExecutionState("e1", workflow, mode, {}, T0, T0)


def run(state: ex.ExecutionState, now: datetime) -> list[ev.Event]:
    out = []
    while (decision := decide(state, now)).event is not None:
        event = state.numbered(decision.event, now)
        state.apply(event)
        out.append(event)
    return out


def apply(state: ex.ExecutionState, new: ev.NewEvent, now: datetime = T0) -> None:
    state.apply(state.numbered(new, now))


def take_all(state: ex.ExecutionState, now: datetime = T0) -> None:
    for attempt in state.live_attempts():
        if attempt.status == ex.ATTEMPT_QUEUED:
            apply(state, ev.step_started(state, attempt, "r", now), now)


def finish(state: ex.ExecutionState, name: str, status: str, now: datetime = T0) -> None:
    (attempt,) = [a for a in state.live_attempts() if a.step_name == name]
    error = None if status == ex.ATTEMPT_SUCCESS else {"reason": "step_failed", "message": "x"}
    apply(state, ev.step_finished(attempt, status, output={name: 1}, error=error, now=now), now)


def queued(events: list[ev.Event]) -> list[str]:
    return [e.data["step"] for e in events if e.type == ev.STEP_QUEUED]


def test_the_branches_are_queued_together_once_their_dependency_succeeded() -> None:
    state = diamond()
    assert queued(run(state, T0)) == ["a"]
    take_all(state)
    finish(state, "a", ex.ATTEMPT_SUCCESS)
    assert queued(run(state, T0)) == ["b", "c"]
    assert [s.name for s in state.running_steps] == ["b", "c"]
    assert state.current_step is not None and state.current_step.name == "b"
    take_all(state)
    finish(state, "c", ex.ATTEMPT_SUCCESS)
    assert run(state, T0) == []  # d waits for b too
    assert state.current_step.name == "b"
    finish(state, "b", ex.ATTEMPT_SUCCESS)
    assert queued(run(state, T0)) == ["d"]


def test_the_estimate_follows_the_longest_branch_not_the_sum() -> None:
    state = diamond()
    run(state, T0)
    take_all(state)
    finish(state, "a", ex.ATTEMPT_SUCCESS)
    run(state, T0)
    typical = {"a": 5.0, "b": 10.0, "c": 30.0, "d": 4.0}
    # b and c side by side: the longer, c, then d.
    assert pg.estimate_remaining(state, typical, T0) == 34.0
    take_all(state)
    (c,) = [a for a in state.live_attempts() if a.step_name == "c"]
    c.last_progress = {"percentage": 50.0, "estimated_remaining_seconds": 3.0}
    # c says 3 s: now b (10 s typical) is the longer branch.
    assert pg.estimate_remaining(state, typical, T0) == 14.0
    b_and_c_half = pg.progress(state, typical, T0).percentage
    assert b_and_c_half == round((1 + 0.5) / 4 * 100, 2)


def test_a_manual_run_of_a_graph_waits_before_each_step_in_turn() -> None:
    state = diamond(ex.MANUAL)
    assert [e.type for e in run(state, T0)] == [ev.WORKFLOW_STARTED, ev.WORKFLOW_WAITING]
    for name in "abcd":
        assert state.status == ex.WAITING and state.current_step.name == name  # type: ignore[union-attr]
        apply(state, ev.workflow_advanced({}))
        assert queued(run(state, T0)) == [name]
        take_all(state)
        finish(state, name, ex.ATTEMPT_SUCCESS)
        run(state, T0)
    assert state.status == ex.COMPLETED


def test_a_step_out_of_retries_cancels_its_sibling_then_fails_the_run() -> None:
    state = diamond(retry={"max_attempts": 1})
    run(state, T0)
    take_all(state)
    finish(state, "a", ex.ATTEMPT_SUCCESS)
    run(state, T0)
    take_all(state)
    finish(state, "b", ex.ATTEMPT_FAILED)
    events = run(state, T0)
    assert [(e.type, e.data.get("step")) for e in events] == [
        (ev.STEP_FINISHED, "c"),
        (ev.WORKFLOW_FAILED, None),
    ]
    assert events[0].data["status"] == ex.ATTEMPT_CANCELLED
    assert state.error is not None and state.error["step_name"] == "b"


def test_a_retry_runs_the_failed_step_and_what_depends_on_it_again() -> None:
    state = diamond(retry={"max_attempts": 2, "initial_backoff_seconds": 1})
    run(state, T0)
    take_all(state)
    finish(state, "a", ex.ATTEMPT_SUCCESS)
    run(state, T0)
    take_all(state)
    finish(state, "c", ex.ATTEMPT_SUCCESS)
    finish(state, "b", ex.ATTEMPT_FAILED)
    assert run(state, T0) == []  # b's backoff
    later = T0 + timedelta(seconds=1)
    assert queued(run(state, later)) == ["b"]
    take_all(state, later)
    finish(state, "b", ex.ATTEMPT_FAILED, later)
    assert run(state, later)[-1].type == ev.WORKFLOW_FAILED

    with pytest.raises(InvalidArgument):
        retried(state, "z", None)
    event = retried(state, "", "r1")
    assert event.data == {"from_step": "b", "steps": ["b", "d"], "request_id": "r1"}
    apply(state, event, later)
    assert state.status == ex.RUNNING and state.error is None and state.retry_request_ids == ["r1"]
    # b runs again with its attempts counted afresh (2 allowed), numbered on from 3.
    (again,) = [e for e in run(state, later) if e.type == ev.STEP_QUEUED]
    assert (again.data["step"], again.data["attempt"]) == ("b", 3)
    assert pg.step_state(state, 2) == ex.ATTEMPT_SUCCESS  # c keeps its output
    take_all(state, later)
    finish(state, "b", ex.ATTEMPT_FAILED, later)
    assert queued(run(state, later + timedelta(seconds=1))) == ["b"]

    with pytest.raises(NotRetryable):
        retried(state, "", None)


def test_a_retry_from_an_earlier_step_reruns_its_whole_downstream() -> None:
    state = diamond(retry={"max_attempts": 1})
    run(state, T0)
    take_all(state)
    finish(state, "a", ex.ATTEMPT_SUCCESS)
    run(state, T0)
    take_all(state)
    finish(state, "c", ex.ATTEMPT_SUCCESS)
    finish(state, "b", ex.ATTEMPT_FAILED)
    run(state, T0)
    assert retried(state, "a", None).data["steps"] == ["a", "b", "c", "d"]
    assert retried(state, "c", None).data["steps"] == ["b", "c", "d"]
