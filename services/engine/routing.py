"""Where a command for an execution goes: to its actor here, to an execution this engine can
take (claimed, then loaded: an orphan, a parked run, its own dropped one), or to the engine
that holds it (HeldElsewhere, which the RPC layer forwards). Where another engine holds an
execution is remembered while that engine's lease, as read, holds: a runner's reports reach
any engine, and those forwarded need no read of the database each."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from services.engine.actors import Actor, Actors, Produce, Released, shielded
from services.engine.clock import utc_now
from services.engine.domain import execution as ex
from services.engine.domain.errors import (
    AlreadyTerminal,
    ExecutionNotFound,
    Fenced,
    HeldElsewhere,
    NotOwner,
    Unavailable,
)

# Looks at an execution that moves between engines (ends, is parked, is taken over) while a
# command looks for it, before the command is refused as UNAVAILABLE.
MAX_COMMAND_LOOKS = 10
# Executions known to be held by another engine; the oldest go first.
MAX_KNOWN_HOLDERS = 10_000


@dataclass(frozen=True)
class _Holder:
    """Where another engine holds an execution, and until when its lease, as read, holds."""

    tenant_id: str
    address: str
    until: datetime


class Commands:
    def __init__(self, actors: Actors) -> None:
        self._actors = actors
        self._holders: OrderedDict[str, _Holder] = OrderedDict()

    async def command(
        self, execution_id: str, produce: Produce, tenant: str | None
    ) -> ex.ExecutionState:
        """Runs a command against an execution this engine holds or can take; one held by
        another engine raises HeldElsewhere. A caller of `tenant` (None: any) sees another
        tenant's execution as missing before anything says where it is held."""
        actors = self._actors
        for _ in range(MAX_COMMAND_LOOKS):
            try:
                actor = actors.get(execution_id)
                if actor is None:
                    holder = self._known_holder(execution_id)
                    if holder is not None:
                        if tenant not in (None, holder.tenant_id):
                            raise ExecutionNotFound(execution_id)
                        raise HeldElsewhere(execution_id, holder.address)
                    state = await actors.store.load_execution(execution_id)
                    if state is None or tenant not in (None, state.workflow.tenant_id):
                        raise ExecutionNotFound(execution_id)
                    if state.is_terminal:
                        # Nothing changes a terminal execution: a command can only verify or
                        # refuse.
                        if produce(state, utc_now()):
                            raise AlreadyTerminal(f"execution {execution_id} is {state.status}")
                        return state
                    actor = await self._actor(execution_id, state.workflow.tenant_id)
                actor.commands += 1
                try:
                    # Shielded: once a change has begun, a caller that gives up (deadline,
                    # disconnect) must not leave the actor half-way between memory and log.
                    return await shielded(actors.change(actor, produce))
                finally:
                    actor.commands -= 1
            except HeldElsewhere:
                raise
            except Fenced:
                await actors.leases.relet()
            except (Released, NotOwner):
                continue  # it ended, or moved, while the command waited: look again
        raise Unavailable(f"execution {execution_id} is moving between engines; retry")

    async def _actor(self, execution_id: str, tenant_id: str) -> Actor:
        claim = await self._actors.recover_if_ours(execution_id)
        actor = self._actors.get(execution_id)
        if actor is not None:
            return actor
        if claim.owner_address is not None:
            if claim.owner_until is not None:
                self._holders[execution_id] = _Holder(
                    tenant_id, claim.owner_address, claim.owner_until
                )
                self._holders.move_to_end(execution_id)
                if len(self._holders) > MAX_KNOWN_HOLDERS:
                    self._holders.popitem(last=False)
            raise HeldElsewhere(execution_id, claim.owner_address)
        raise Released(f"execution {execution_id} moved; look again")

    def _known_holder(self, execution_id: str) -> _Holder | None:
        """The engine that held the execution when last looked at, while its lease as read
        then holds: an execution it let go since is looked for again by that engine."""
        holder = self._holders.get(execution_id)
        if holder is not None and holder.until <= utc_now():
            del self._holders[execution_id]
            return None
        return holder

    def forget_holder(self, execution_id: str) -> None:
        """The engine that held it did not answer: the next call looks in the database."""
        self._holders.pop(execution_id, None)
