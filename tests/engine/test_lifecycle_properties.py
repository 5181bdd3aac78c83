"""A Hypothesis state machine drives the execution lifecycle through the runner, with an
in-memory store and a runner that polls the step queue when the machine says so, including
duplicate and stale reports, crashes with recovery from the store, and watchers that
reconnect anywhere in the log.

Invariants: legal transitions only, terminal states final, seq contiguous, history matching
the events, every queued attempt taken at most once, and every watcher receiving a prefix of
the log without duplicates.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from services.engine.domain import events as ev
from services.engine.domain import execution as ex
from services.engine.domain.errors import DiscoveryError, StaleAttempt
from services.engine.hub import EventHub
from services.engine.runner import Runner, RunnerSettings
from tests.fakes.memory_store import InMemoryStore

LEGAL = {
    ex.PENDING: {ex.PENDING, ex.RUNNING, ex.WAITING, ex.CANCELLED},
    ex.RUNNING: {ex.RUNNING, ex.WAITING, *ex.TERMINAL},
    ex.WAITING: {ex.WAITING, ex.RUNNING, ex.CANCELLED},
    ex.COMPLETED: {ex.COMPLETED},
    ex.FAILED: {ex.FAILED},
    ex.CANCELLED: {ex.CANCELLED},
}
TENANT = "machine-tenant"
STEP = {"handler": "sleep", "heartbeat_timeout_seconds": 3600, "timeout_seconds": 3600}


class Lifecycle(RuleBasedStateMachine):
    executions = Bundle("executions")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.store = InMemoryStore()
        # Attempt tokens the machine's step runner took, by execution, oldest first.
        self.taken: dict[str, list[str]] = {}
        self.runner = self._new_runner()
        self.statuses: dict[str, str] = {}
        self.completions: dict[str, tuple[str, bool, dict[str, Any]]] = {}

    def _new_runner(self) -> Runner:
        runner = Runner(
            self.store,
            EventHub(capacity=10_000),
            RunnerSettings(engine_id="machine", lease_seconds=3600),
        )
        self.run(runner.open())
        return runner

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def settle(self) -> None:
        """Lets what is due run: retries after their 1 ms backoff."""
        self.loop.run_until_complete(asyncio.sleep(0.01))

    def teardown(self) -> None:
        self.loop.run_until_complete(self.runner.close())
        self.loop.close()

    @initialize()
    def workflow(self) -> None:
        self.poll()  # the runner makes its handler known
        workflow, _ = self.run(
            self.runner.workflows.create(
                "machine",
                "",
                [
                    {
                        "name": "a",
                        **STEP,
                        "retry": {"max_attempts": 2, "initial_backoff_seconds": 0.001},
                    },
                    {"name": "b", **STEP, "retry": {"max_attempts": 1}},
                ],
                tenant=TENANT,
            )
        )
        self.workflow_id = workflow.workflow_id

    @rule(target=executions, manual=st.booleans())
    def start(self, manual: bool) -> str:
        state = self.run(self.runner.start(self.workflow_id, {"n": 1}, manual, "", tenant=TENANT))
        self.statuses[state.execution_id] = state.status
        return str(state.execution_id)

    @rule()
    def poll(self) -> None:
        for task in self.run(
            self.runner.dispatch.poll("machine-runner", frozenset({"sleep"}), 5, 0)
        ):
            assert task.attempt_token not in self.taken.get(task.execution_id, [])
            self.taken.setdefault(task.execution_id, []).append(task.attempt_token)

    def _current(self, execution_id: str) -> tuple[ex.ExecutionState, str | None]:
        state = self.run(self.runner.get(execution_id, tenant=TENANT))
        tokens = self.taken.get(execution_id, [])
        return state, (tokens[-1] if tokens else None)

    def _step_name(self, state: ex.ExecutionState) -> str:
        attempt = state.history[-1] if state.history else None
        return attempt.step_name if attempt else "a"

    @rule(execution_id=executions, percentages=st.lists(st.floats(0, 100), max_size=3))
    def progress(self, execution_id: str, percentages: list[float]) -> None:
        # None, one or several reports in one call: a heartbeat, or reports that piled up.
        state, token = self._current(execution_id)
        if token is None:
            return
        before = state.last_seq
        try:
            self.run(
                self.runner.reports.report_progress(
                    execution_id,
                    self._step_name(state),
                    token,
                    [{"percentage": p} for p in percentages],
                )
            )
        except StaleAttempt:
            after = self.run(self.runner.get(execution_id, tenant=TENANT))
            assert after.last_seq == before, "a refused report wrote something"

    @rule(execution_id=executions, success=st.booleans())
    def complete(self, execution_id: str, success: bool) -> None:
        state, token = self._current(execution_id)
        if token is None:
            return
        name = self._step_name(state)
        result = {"ok": success}
        try:
            self.run(
                self.runner.reports.complete_step(execution_id, name, token, success, result, None)
            )
            self.completions[execution_id] = (token, success, result)
        except StaleAttempt:
            pass

    @rule(execution_id=executions)
    def duplicate_complete(self, execution_id: str) -> None:
        if execution_id not in self.completions:
            return
        token, success, result = self.completions[execution_id]
        state = self.run(self.runner.get(execution_id, tenant=TENANT))
        attempt = state.attempt_by_token(token)
        assert attempt is not None
        before = state.last_seq
        try:
            self.run(
                self.runner.reports.complete_step(
                    execution_id, attempt.step_name, token, success, result, None
                )
            )
        except StaleAttempt:
            # Only when the attempt ended some other way (cancelled) before this retry.
            assert attempt.status == ex.ATTEMPT_CANCELLED
        assert self.run(self.runner.get(execution_id, tenant=TENANT)).last_seq == before

    @rule(execution_id=executions)
    def stale_send(self, execution_id: str) -> None:
        tokens = self.taken.get(execution_id, [])
        if len(tokens) < 2:
            return
        state = self.run(self.runner.get(execution_id, tenant=TENANT))
        old = state.attempt_by_token(tokens[0])
        assert old is not None
        before = state.last_seq
        try:
            self.run(
                self.runner.reports.complete_step(
                    execution_id, old.step_name, tokens[0], True, {"x": 1}, None
                )
            )
        except StaleAttempt:
            pass
        else:
            raise AssertionError("a completion from an older attempt was accepted")
        assert self.run(self.runner.get(execution_id, tenant=TENANT)).last_seq == before

    @rule(execution_id=executions)
    def cancel(self, execution_id: str) -> None:
        try:
            self.run(self.runner.cancel(execution_id, "machine", tenant=TENANT))
        except DiscoveryError:
            assert self.run(self.runner.get(execution_id, tenant=TENANT)).is_terminal

    @rule(execution_id=executions)
    def advance(self, execution_id: str) -> None:
        try:
            self.run(self.runner.advance(execution_id, {"step": "go"}, tenant=TENANT))
        except DiscoveryError:
            assert self.run(self.runner.get(execution_id, tenant=TENANT)).status != ex.WAITING

    @rule()
    def crash_and_recover(self) -> None:
        self.run(self.runner.close())
        self.runner = self._new_runner()

    @rule(execution_id=executions, data=st.data())
    def reconnect_watch(self, execution_id: str, data: st.DataObject) -> None:
        head = self.run(self.runner.get(execution_id, tenant=TENANT)).last_seq
        after = data.draw(st.integers(0, head), label="after_seq")

        async def collect() -> list[ev.Event]:
            stream = self.runner.watch(execution_id, after, tenant=TENANT)
            got: list[ev.Event] = []
            try:
                while True:
                    item = await asyncio.wait_for(anext(stream), 0.02)
                    got.append(item)
            except (TimeoutError, StopAsyncIteration):
                pass
            finally:
                await stream.aclose()
            return got

        got = self.run(collect())
        log = self.run(self.store.read_events(execution_id, 0, 10**9))
        assert [e.seq for e in got] == list(range(after + 1, after + 1 + len(got)))
        assert got == log[after : after + len(got)]

    @invariant()
    def logs_are_contiguous_and_transitions_legal(self) -> None:
        self.settle()
        for execution_id, previous in self.statuses.items():
            # Read without yielding to the loop: nothing runs while the invariant looks.
            events = list(self.store.events[execution_id])
            seqs = [d["seq"] for d in events]
            assert seqs == list(range(1, len(seqs) + 1))
            state = self.run(self.store.load_execution(execution_id))
            assert state is not None and state.last_seq == len(events)
            assert state.status in LEGAL[previous], f"{previous} -> {state.status}"
            self.statuses[execution_id] = state.status
            queued = [
                (d["data"]["order"], d["data"]["attempt"])
                for d in events
                if d["type"] == ev.STEP_QUEUED
            ]
            started = [
                (d["data"]["order"], d["data"]["attempt"])
                for d in events
                if d["type"] == ev.STEP_STARTED
            ]
            assert len(queued) == len(state.history)
            assert len(set(started)) == len(started), "an attempt was taken twice"
            assert set(started) <= set(queued)
            finished = [d for d in events if d["type"] == ev.STEP_FINISHED]
            assert len({(d["data"]["order"], d["data"]["attempt"]) for d in finished}) == len(
                finished
            )
            terminal = [d for d in events if d["type"] in ev.TERMINAL_EVENTS]
            assert len(terminal) <= 1 and (not terminal or terminal[0] is events[-1])


Lifecycle.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
test_lifecycle_state_machine = Lifecycle.TestCase
