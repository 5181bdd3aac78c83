"""The event log's change feed: every event any engine commits, in commit order, resumable."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import OperationFailure, PyMongoError

from services.engine.domain.errors import StoreUnavailable
from services.engine.store.documents import event_from_doc
from services.engine.store.repository import CommittedEvent, HistoryLost, ResumeToken

log = logging.getLogger(__name__)

# The log's change feed: inserted events, and of each only what an Event and its tenant are
# made of (the change's _id is its resume token, kept whatever the projection says).
_FEED_FIELDS = ("execution_id", "seq", "type", "time", "data", "attempt_token", "tenant_id")
_FEED_PIPELINE: list[dict[str, Any]] = [
    {"$match": {"operationType": "insert"}},
    {"$project": {f"fullDocument.{name}": 1 for name in _FEED_FIELDS}},
]
# How long one wait of the feed for news lasts on the server (its `next` then gives None).
FEED_AWAIT_MS = 1000


async def follow_events(
    events: AsyncCollection[dict[str, Any]], resume_after: ResumeToken | None
) -> EventChanges:
    """A change stream on the log (see repository.EventLogFeed)."""
    try:
        stream = await events.watch(
            _FEED_PIPELINE, resume_after=resume_after, max_await_time_ms=FEED_AWAIT_MS
        )
    except OperationFailure as exc:
        # The server refuses to resume from there (its history was pruned, or the token
        # is not one of its own): a failure that asking again would only repeat.
        if resume_after is not None:
            raise HistoryLost(str(exc)) from exc
        raise StoreUnavailable("the event log cannot be followed") from exc
    except PyMongoError as exc:
        raise StoreUnavailable("the database is unavailable") from exc
    return EventChanges(stream)


class EventChanges:
    """One change stream on the log (repository.CommittedEvents)."""

    def __init__(self, stream: AsyncChangeStream[dict[str, Any]]) -> None:
        self._stream = stream

    @property
    def resume_token(self) -> ResumeToken | None:
        return self._stream.resume_token

    async def next(self) -> CommittedEvent | None:
        while True:
            try:
                change = await self._stream.try_next()
            except PyMongoError as exc:
                # pymongo has already tried to resume once; whoever follows opens the feed
                # again from `resume_token`, which tells a hiccup from lost history.
                raise StoreUnavailable(f"the event log's change stream broke off: {exc}") from exc
            if change is None:
                return None
            doc = change.get("fullDocument") or {}
            try:
                return CommittedEvent(event_from_doc(doc), doc.get("tenant_id", ""))
            except KeyError:
                # Not an event this engine wrote: nothing a watcher could be given.
                log.warning("event feed skipped a document with fields %s", sorted(doc))

    async def close(self) -> None:
        with contextlib.suppress(PyMongoError):
            await self._stream.close()
