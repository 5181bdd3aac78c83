"""How long each step of a workflow typically takes, for the ETAs in status answers.

Measured from the queue to the end of every successful attempt. The sums are kept in memory
and added to the store together now and then (`flush`), so that a finished step costs no
write of its own; the store is read once per workflow. Figures from other engines reach this
one when it reads a workflow it has not seen yet: estimates, not accounts.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from services.engine.domain.errors import DiscoveryError
from services.engine.store.repository import ExecutionStore, StepTotal

log = logging.getLogger(__name__)

# Workflows whose figures are kept; beyond it the least recently read are forgotten.
MAX_WORKFLOWS = 10_000


class StepDurations:
    def __init__(self, store: ExecutionStore) -> None:
        self._store = store
        # (workflow_id, step_name) -> what was measured here and is not stored yet.
        self._unsaved: defaultdict[tuple[str, str], StepTotal] = defaultdict(StepTotal)
        # workflow_id -> step_name -> everything known: stored when read, plus measured since.
        self._known: dict[str, dict[str, StepTotal]] = {}

    def record(self, workflow_id: str, step_name: str, seconds: float) -> None:
        self._unsaved[(workflow_id, step_name)].add(1, seconds)
        known = self._known.get(workflow_id)
        if known is not None:
            known.setdefault(step_name, StepTotal()).add(1, seconds)

    async def typical_seconds(self, workflow_id: str) -> dict[str, float]:
        known = self._known.pop(workflow_id, None)
        if known is None:
            known = await self._store.step_totals(workflow_id)
            for (workflow, step), unsaved in self._unsaved.items():
                if workflow == workflow_id:
                    known.setdefault(step, StepTotal()).add(unsaved.count, unsaved.seconds)
            if len(self._known) >= MAX_WORKFLOWS:
                del self._known[next(iter(self._known))]
        self._known[workflow_id] = known  # the most recently read last
        return {step: t.seconds / t.count for step, t in known.items() if t.count}

    async def flush(self) -> None:
        """Adds what was measured since the last flush to the store; kept for the next one if
        the store does not answer."""
        if not self._unsaved:
            return
        unsaved, self._unsaved = self._unsaved, defaultdict(StepTotal)
        try:
            await self._store.add_step_totals(dict(unsaved))
        except DiscoveryError as exc:
            log.warning("step durations not stored: %s", exc)
            for key, total in unsaved.items():
                self._unsaved[key].add(total.count, total.seconds)
