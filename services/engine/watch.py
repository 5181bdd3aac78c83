"""Following one execution: replay of the log after a seq, then the live tail.

The subscription to the hub is taken before the log is read, so an event is either in what
the replay reads or in the subscription's queue (or both, and then dropped by seq): the hub
is given every event committed by any engine replica (by the log's change feed, which is
following the log before the engine serves), so however the execution moves between
engines, its live tail is complete. A gap in it (an event published by its engine before the
feed brought the one before, a queue that overflowed), or the feed telling that it may have
missed events, sends the watcher back to the log.

An execution this engine holds is answered from memory (`Held`): its state, and its recent
events when they reach back to where the watcher starts.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from services.engine.domain.errors import ExecutionNotFound, InvalidArgument, WatcherTooSlow
from services.engine.domain.events import Event
from services.engine.domain.execution import ExecutionState
from services.engine.hub import EventHub
from services.engine.store.repository import ExecutionStore

REPLAY_BATCH = 500


class Held(Protocol):
    """What the engine holding executions knows of them without reading the store."""

    async def snapshot(
        self, execution_id: str, after_seq: int | None
    ) -> tuple[ExecutionState, list[Event] | None] | None:
        """A copy of the state, and the events after `after_seq` when memory still has them
        all; None when the execution is not held here."""
        ...


async def watch(
    store: ExecutionStore,
    hub: EventHub,
    execution_id: str,
    after_seq: int | None,
    *,
    tenant: str,
    held: Held | None = None,
) -> AsyncGenerator[ExecutionState | Event]:
    """Yields a snapshot first when `after_seq` is None, then every event after it, in
    order and once each; returns after the terminal event (the last one, when a retry took
    the execution on past an earlier end)."""
    subscription = hub.subscribe(execution_id)
    try:
        remembered = await held.snapshot(execution_id, after_seq) if held else None
        state: ExecutionState | None
        recent: list[Event] | None
        if remembered is not None:
            state, recent = remembered
        else:
            state, recent = await store.load_execution(execution_id), None
        # Another tenant's execution is answered exactly as a missing one.
        if state is None or state.workflow.tenant_id != tenant:
            raise ExecutionNotFound(execution_id)
        if after_seq is None:
            yield state
            last = state.last_seq
        elif not 0 <= after_seq <= state.last_seq:
            raise InvalidArgument(
                "after_seq", f"must be from 0 to the last seq ({state.last_seq}), got {after_seq}"
            )
        else:
            last = after_seq
        if state.is_terminal and last >= state.last_seq:
            return
        while True:
            if recent is not None:
                replayed, recent = [e for e in recent if e.seq > last], None
            else:
                replayed = await store.read_events(execution_id, last, REPLAY_BATCH)
            for event in replayed:
                yield event
                last = event.seq
                # An end the log goes on past was retried (RetryExecution): follow on.
                if event.is_terminal and event.seq >= state.last_seq:
                    return
            if len(replayed) == REPLAY_BATCH:
                continue
            while True:
                if subscription.overflowed:
                    raise WatcherTooSlow(
                        f"watcher fell behind; resume with after_seq={last}",
                        metadata={"last_seq": str(last)},
                    )
                live = await subscription.get()
                if live is None or live.seq > last + 1:
                    break  # events may be missing: the log has them
                if live.seq <= last:
                    continue
                yield live
                last = live.seq
                if live.is_terminal:
                    return
    finally:
        hub.unsubscribe(subscription)
