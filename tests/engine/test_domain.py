"""The execution state machine, on its own: no database, no network."""

from __future__ import annotations

import ast
import pathlib
from datetime import UTC, datetime, timedelta

import pytest

from services.engine.domain import events as ev
from services.engine.domain import execution as ex
from services.engine.domain import progress as pg
from services.engine.domain.decisions import Decision, decide
from services.engine.domain.errors import InvalidArgument
from services.engine.domain.workflow import new_workflow

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_state(mode: str = ex.AUTOMATIC, **step: object) -> ex.ExecutionState:
    steps = [
        {"name": "load", "handler": "sleep", "heartbeat_timeout_seconds": 5, **step},
        {"name": "extract", "handler": "sleep", **step},
    ]
    workflow = new_workflow("docs", "", steps, T0, tenant_id="t")
    return ex.ExecutionState("e1", workflow, mode, {"k": 1}, T0, T0)


def run(state: ex.ExecutionState, now: datetime) -> list[ev.Event]:
    """Applies every event `decide` wants at `now`."""
    out = []
    while (decision := decide(state, now)).event is not None:
        event = state.numbered(decision.event, now)
        state.apply(event)
        out.append(event)
    return out


def latest(state: ex.ExecutionState) -> ex.Attempt:
    """The attempt logged last: in a workflow of steps in line, the current step's."""
    return state.history[-1]


def take(state: ex.ExecutionState, now: datetime, runner: str = "r1") -> ev.Event:
    """A runner takes the queued attempt, as the engine logs it."""
    attempt = latest(state)
    assert attempt is not None and attempt.status == ex.ATTEMPT_QUEUED
    event = state.numbered(ev.step_started(state, attempt, runner, now), now)
    state.apply(event)
    return event


def finish(state: ex.ExecutionState, status: str, now: datetime, **kw: object) -> None:
    attempt = latest(state)
    assert attempt is not None
    event = state.numbered(ev.step_finished(attempt, status, now=now, **kw), now)  # type: ignore[arg-type]
    state.apply(event)


def test_automatic_run_goes_step_by_step_and_merges_outputs() -> None:
    state = make_state()
    events = run(state, T0)
    assert [e.type for e in events] == [ev.WORKFLOW_STARTED, ev.STEP_QUEUED]
    assert events[1].data["handler"] == "sleep"
    assert events[1].attempt_token
    assert pg.step_state(state, 0) == "queued"
    started = take(state, T0 + timedelta(seconds=2))
    assert started.data["input_payload"] == {"k": 1}
    assert started.data["queued_seconds"] == 2.0
    assert pg.step_state(state, 0) == "running"
    finish(state, ex.ATTEMPT_SUCCESS, T0 + timedelta(seconds=3), output={"pages": 3})
    assert state.history[0].duration_seconds == 1.0, "the run, not the wait"
    events = run(state, T0)
    assert [e.type for e in events] == [ev.STEP_QUEUED]
    assert take(state, T0).data["input_payload"] == {"k": 1, "pages": 3}
    finish(state, ex.ATTEMPT_SUCCESS, T0, output={"sections": 2})
    assert [e.type for e in run(state, T0)] == [ev.WORKFLOW_COMPLETED]
    assert state.status == ex.COMPLETED
    assert state.dynamic_properties == {"pages": 3, "sections": 2}
    assert state.last_seq == 8


def test_heartbeat_timeout_then_retry_with_backoff_then_failure() -> None:
    state = make_state(retry={"max_attempts": 2, "initial_backoff_seconds": 3})
    run(state, T0)
    take(state, T0)
    decision = decide(state, T0)
    assert decision.wake_at == T0 + timedelta(seconds=5)
    events = run(state, T0 + timedelta(seconds=5))
    assert events[0].data["status"] == ex.ATTEMPT_TIMED_OUT
    assert events[0].data["error"]["reason"] == "heartbeat_timeout"
    assert decide(state, T0 + timedelta(seconds=6)).wake_at == T0 + timedelta(seconds=8)
    events = run(state, T0 + timedelta(seconds=8))
    assert [(e.type, e.data["attempt"]) for e in events] == [(ev.STEP_QUEUED, 2)]
    take(state, T0 + timedelta(seconds=8))
    finish(state, ex.ATTEMPT_FAILED, T0 + timedelta(seconds=9), error={"reason": "step_failed"})
    events = run(state, T0 + timedelta(seconds=9))
    assert [e.type for e in events] == [ev.WORKFLOW_FAILED]
    assert events[0].data["error"]["step_name"] == "load"
    assert state.status == ex.FAILED and state.is_terminal
    assert decide(state, T0 + timedelta(days=1)) == Decision()


def test_hard_timeout_wins_over_heartbeats() -> None:
    state = make_state(timeout_seconds=4, retry={"max_attempts": 1})
    run(state, T0)
    take(state, T0)
    latest(state).heartbeat_at = T0 + timedelta(seconds=3.9)
    events = run(state, T0 + timedelta(seconds=4))
    assert events[0].data["error"]["reason"] == "timeout"
    assert events[-1].type == ev.WORKFLOW_FAILED


def test_manual_mode_waits_before_each_step() -> None:
    state = make_state(ex.MANUAL)
    assert [e.type for e in run(state, T0)] == [ev.WORKFLOW_STARTED, ev.WORKFLOW_WAITING]
    assert state.status == ex.WAITING
    assert pg.step_state(state, 0) == "waiting"
    state.apply(state.numbered(ev.NewEvent(ev.WORKFLOW_ADVANCED, {"data": {"ok": True}}), T0))
    events = run(state, T0)
    assert [e.type for e in events] == [ev.STEP_QUEUED]
    assert take(state, T0).data["input_payload"]["ok"] is True
    finish(state, ex.ATTEMPT_SUCCESS, T0, output={})
    assert [e.type for e in run(state, T0)] == [ev.WORKFLOW_WAITING]
    assert state.step_index == 1


def test_progress_and_estimate() -> None:
    state = make_state()
    run(state, T0)
    take(state, T0)
    attempt = latest(state)
    assert attempt is not None
    attempt.last_progress = {"percentage": 50.0, "estimated_remaining_seconds": 10}
    p = pg.progress(state, {"extract": 20.0}, T0)
    assert p.percentage == 25.0
    assert p.estimated_remaining_seconds == 30.0
    assert pg.progress(state, {}, T0).estimated_remaining_seconds is None
    assert p.is_running and not p.is_completed


def test_events_must_come_in_order() -> None:
    state = make_state()
    with pytest.raises(ValueError):
        state.apply(ev.Event("e1", 2, ev.WORKFLOW_STARTED, T0, {}))


@pytest.mark.parametrize(
    ("steps", "field"),
    [
        ([], "steps"),
        ([{"name": "a", "handler": "x"}, {"name": "a", "handler": "x"}], "steps[1].name"),
        ([{"name": "a", "handler": ""}], "steps[0].handler"),
        ([{"name": "a", "handler": "x", "timeout_seconds": -1}], "steps[0].timeout_seconds"),
        (
            [{"name": "a", "handler": "x", "retry": {"max_attempts": 99}}],
            "steps[0].retry.max_attempts",
        ),
    ],
)
def test_bad_definitions_name_the_field(steps: list[dict[str, object]], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        new_workflow("w", "", steps, T0, tenant_id="t")
    assert caught.value.field == field


SERVICES = pathlib.Path(__file__).parents[2] / "services"


def imported(path: pathlib.Path) -> list[str]:
    """The top-level names of what `path` imports."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module.split(".")[0])
    return names


def test_domain_imports_no_transport_or_driver() -> None:
    banned = {"grpc", "pymongo", "aiohttp", "bson", "secantus", "google"}
    for path in (SERVICES / "engine" / "domain").glob("*.py"):
        found = banned.intersection(imported(path))
        assert not found, f"{path.name} imports {found}"


def test_nothing_above_the_store_imports_the_database_driver() -> None:
    """The store raises domain errors only (store/errors.py); the composition root that opens
    the client is the one exception."""
    allowed = {SERVICES / "engine" / "app.py"}
    store = SERVICES / "engine" / "store"
    for path in SERVICES.rglob("*.py"):
        if store in path.parents or path in allowed:
            continue
        found = {"pymongo", "bson", "secantus"}.intersection(imported(path))
        assert not found, f"{path.relative_to(SERVICES)} imports {found}"


def test_invalid_input_is_not_retried() -> None:
    state = make_state(retry={"max_attempts": 5})
    run(state, T0)
    take(state, T0)
    finish(state, ex.ATTEMPT_FAILED, T0, error={"reason": "invalid_input", "message": "not a PDF"})
    events = run(state, T0)
    assert [e.type for e in events] == [ev.WORKFLOW_FAILED]
    assert events[0].data["error"]["message"] == "not a PDF"


def test_a_queued_attempt_waits_without_a_deadline() -> None:
    state = make_state(timeout_seconds=4)
    run(state, T0)
    # Neither the step's timeout nor its heartbeat timeout runs while it waits.
    assert decide(state, T0 + timedelta(days=30)) == Decision()
    assert latest(state).status == ex.ATTEMPT_QUEUED
    take(state, T0 + timedelta(days=30))
    assert decide(state, T0 + timedelta(days=30)).wake_at == T0 + timedelta(days=30, seconds=4)


def test_schedule_to_start_timeout_fails_the_step_without_retry() -> None:
    state = make_state(schedule_to_start_timeout_seconds=10, retry={"max_attempts": 5})
    run(state, T0)
    assert decide(state, T0).wake_at == T0 + timedelta(seconds=10)
    events = run(state, T0 + timedelta(seconds=10))
    assert [e.type for e in events] == [ev.STEP_FINISHED, ev.WORKFLOW_FAILED]
    assert events[0].data["error"]["reason"] == "schedule_to_start_timeout"
    assert events[0].data["duration_seconds"] == 0.0
    assert state.history[0].started_at is None


def test_the_estimate_counts_the_wait_in_the_queue() -> None:
    state = make_state()
    run(state, T0)
    # Typical times run from the queue to the end: 20 s for load, 30 s for extract.
    typical = {"load": 20.0, "extract": 30.0}
    assert pg.estimate_remaining(state, typical, T0 + timedelta(seconds=5)) == 45.0
    take(state, T0 + timedelta(seconds=8))
    assert pg.estimate_remaining(state, typical, T0 + timedelta(seconds=10)) == 40.0


def test_a_log_from_before_the_step_queue_still_folds() -> None:
    state = make_state()
    state.apply(state.numbered(ev.NewEvent(ev.WORKFLOW_STARTED, {"mode": ex.AUTOMATIC}), T0))
    legacy = ev.NewEvent(
        ev.STEP_STARTED,
        {"step": "load", "step_id": "s", "order": 1, "attempt": 1, "input_payload": {"k": 1}},
        attempt_token="tok",
    )
    state.apply(state.numbered(legacy, T0))
    attempt = latest(state)
    assert attempt is not None
    assert (attempt.status, attempt.token, attempt.queued_at) == (ex.ATTEMPT_RUNNING, "tok", T0)
    assert attempt.input_payload == {"k": 1}
