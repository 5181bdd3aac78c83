"""Pages of a collection in creation order, and the newest-first listing of executions.

A page token carries where its page ended (created_at, _id), so a page follows on from its
token whatever was added meanwhile.

Executions are listed newest first by looking back over windows of creation time, each
fetched whole with queries SecantusDB answers from an index, until a page is full: SecantusDB
(the embedded default) sorts what a query matches in Python rather than walking the index in
order, and scans the whole collection for a query it cannot answer from one index (`$in`,
`$or`, a regex, two equalities), so one page of the newest of 100,000 executions took ~40 s
sorted whole. A window costs what it holds; windows grow at the pace executions were found
and narrow when one holds too many. MongoDB walks the index either way; the windows cost it
a few more round trips only when the newest executions are old.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection

from services.engine.clock import utc_now
from services.engine.store.documents import decode_page_token, encode_page_token
from services.engine.store.repository import ExecutionFilter

# The first window back from now (or from the page token's edge), the narrowest one, and how
# far a window may grow before the listing asks for everything that is left.
FIRST_WINDOW = timedelta(minutes=10)
MIN_WINDOW = timedelta(milliseconds=1)
LAST_WINDOW = timedelta(days=3650)
# How much a window grows after one that did not fill the page: enough to find the rest at
# the pace seen in it, within these bounds.
MIN_GROWTH = 4
MAX_GROWTH = 64
# The most executions one query of a window fetches; more, and the window narrows.
SCAN_LIMIT = 2000
# "At or after t" is asked as "after t - 1 ms" (BSON keeps milliseconds, so the two are the
# same): SecantusDB 0.7.0b3 answers `$gte` from a descending index as `$gt`, and left out
# the executions created at the very millisecond a search starts from.
ONE_TICK = timedelta(milliseconds=1)


async def page(
    collection: AsyncCollection[dict[str, Any]],
    query: dict[str, Any],
    page_size: int,
    page_token: str,
    *,
    newest_first: bool = False,
    projection: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """One page of `collection` in (created_at, _id) order, oldest or newest first, and the
    token of the next page ("" after the last)."""
    beyond, order = ("$lt", DESCENDING) if newest_first else ("$gt", ASCENDING)
    if page_token:
        edge, edge_id = decode_page_token(page_token)
        query = {
            **query,
            "$or": [
                {"created_at": {beyond: edge}},
                {"created_at": edge, "_id": {beyond: edge_id}},
            ],
        }
    cursor = collection.find(query, projection).sort([("created_at", order), ("_id", order)])
    docs = await cursor.limit(page_size + 1).to_list()
    token = ""
    if len(docs) > page_size:
        last = docs[page_size - 1]
        token = encode_page_token(last["created_at"], last["_id"])
    return docs[:page_size], token


async def newest_executions(
    collection: AsyncCollection[dict[str, Any]],
    tenant_id: str,
    only: ExecutionFilter,
    page_size: int,
    page_token: str,
    *,
    projection: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """One page of the tenant's executions that `only` lets through, newest first, and the
    next page's token ("" after the last)."""
    edge = decode_page_token(page_token) if page_token else None
    floor = only.created_after
    # What the scan has not looked at yet: older than `top` (at or older, for a page token's
    # edge, whose ties `_wanted` sorts out); None: no bound (a clock ahead of this one).
    top: datetime | None = edge[0] if edge else None
    if only.created_before is not None and (top is None or only.created_before <= top):
        top, edge = only.created_before, None
    inclusive = edge is not None
    wanted = _wanted(only, edge)
    found: list[dict[str, Any]] = []
    window = FIRST_WINDOW
    while True:
        start = (top or utc_now()) - window
        last = window >= LAST_WINDOW or (floor is not None and start <= floor)
        created: dict[str, datetime] = {}
        if not last:
            created["$gt"] = start - ONE_TICK
        elif floor is not None:
            created["$gt"] = floor - ONE_TICK
        if top is not None:
            created["$lte" if inclusive else "$lt"] = top
        # The narrowest window is fetched whole, however many it holds.
        limit = SCAN_LIMIT if window > MIN_WINDOW else None
        docs, complete = await _scan(
            collection, _queries(tenant_id, only), created, projection, limit
        )
        if not complete:
            window = max(window / MIN_GROWTH**2, MIN_WINDOW)  # too many at once: look closer
            continue
        matches = [doc for doc in docs if wanted(doc)]
        found += matches
        if len(found) > page_size or last:
            break
        top, inclusive = start, False
        # Grow towards where the rest of the page should be, at the pace seen so far.
        need = (page_size + 1 - len(found)) / max(len(matches), 1)
        window = min(window * min(MAX_GROWTH, max(MIN_GROWTH, 2 * need)), LAST_WINDOW)
    token = ""
    if len(found) > page_size:
        end = found[page_size - 1]
        token = encode_page_token(end["created_at"], end["_id"])
    return found[:page_size], token


def _queries(tenant_id: str, only: ExecutionFilter) -> list[dict[str, Any]]:
    """Disjoint queries SecantusDB answers from an index (an equality on a field that leads
    one, and the created_at range): one for the workflow, or one per status, or the tenant's.
    It scans the whole collection for `$in`, `$or`, a regex or two such equalities together,
    so the rest of the filter is applied here (`_wanted`)."""
    base: dict[str, Any] = {"tenant_id": tenant_id}
    if only.workflow_id:
        return [{**base, "workflow_id": only.workflow_id}]
    if only.statuses:
        return [{**base, "status": status} for status in sorted(only.statuses)]
    return [base]


def _wanted(only: ExecutionFilter, edge: tuple[datetime, str] | None) -> Any:
    needle = only.workflow_name_contains.casefold()

    def wanted(doc: dict[str, Any]) -> bool:
        if only.statuses and doc["status"] not in only.statuses:
            return False
        if only.workflow_id and doc["workflow_id"] != only.workflow_id:
            return False
        if needle and needle not in doc["workflow"]["name"].casefold():
            return False
        # Ties with the last execution of the page before: those up to it were on that page.
        return edge is None or (doc["created_at"], doc["_id"]) < edge

    return wanted


async def _scan(
    collection: AsyncCollection[dict[str, Any]],
    queries: list[dict[str, Any]],
    created: dict[str, datetime],
    projection: Mapping[str, Any] | None,
    limit: int | None,
) -> tuple[list[dict[str, Any]], bool]:
    """Every execution of `queries` created in `created`, newest first; False when one query
    found more than `limit` (the window is too wide to fetch at once)."""
    docs: list[dict[str, Any]] = []
    for query in queries:
        if created:
            query = {**query, "created_at": created}
        cursor = collection.find(query, projection)
        part = await (cursor if limit is None else cursor.limit(limit + 1)).to_list()
        if limit is not None and len(part) > limit:
            return [], False
        docs += part
    docs.sort(key=lambda doc: (doc["created_at"], doc["_id"]), reverse=True)
    return docs, True
