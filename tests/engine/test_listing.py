"""The newest-first listing over windows of creation time (store/listing.py) gives the pages a
sort of every match would: executions minutes, days and years old, ties on created_at, each
filter and the caller's time bounds, paged to the end from each token, and windows that hold
more than one query fetches at once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from services.engine.clock import utc_now
from services.engine.store import listing
from services.engine.store.database import Database
from services.engine.store.listing import newest_executions
from services.engine.store.repository import ExecutionFilter
from services.engine.store.schema import ensure_schema

AGES = [
    timedelta(seconds=5),
    timedelta(minutes=3),
    timedelta(minutes=30),
    timedelta(hours=5),
    timedelta(days=2),
    timedelta(days=40),
    timedelta(days=400),
    timedelta(days=4000),  # beyond the last window: found by the unbounded query
]


STATUSES = ["completed", "failed", "cancelled", "running"]
WORKFLOWS = ["Invoices", "Contracts", "invoice audit"]


def doc(doc_id: str, tenant: str, created: datetime, status: str, workflow: str) -> dict[str, Any]:
    return {
        "_id": doc_id,
        "tenant_id": tenant,
        "created_at": created,
        "status": status,
        "workflow_id": f"wf-{WORKFLOWS.index(workflow)}",
        "workflow": {"name": workflow},
    }


@pytest.fixture
async def collection(mongo_server: str, database: str) -> AsyncIterator[AsyncCollection[Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server, tz_aware=True)
    store = Database(client, database)
    await ensure_schema(store)  # the indexes the engine's queries are answered from
    yield store.executions
    await client.drop_database(database)
    await client.close()


async def fill(collection: AsyncCollection[Any], now: datetime) -> list[dict[str, Any]]:
    docs = []
    for i, age in enumerate(AGES):
        # Three at each age, two of them at the same instant (ties go by _id).
        for j, skew in enumerate((0, 0, 1)):
            docs.append(
                doc(
                    f"{i:02d}-{j}-{uuid.uuid4().hex[:6]}",
                    "t" if j < 2 or i % 2 else "u",
                    now - age - timedelta(milliseconds=skew),
                    STATUSES[(i + j) % len(STATUSES)],
                    WORKFLOWS[(i * 3 + j) % len(WORKFLOWS)],
                )
            )
    docs.append(doc("future", "t", now + timedelta(minutes=1), "running", WORKFLOWS[0]))
    await collection.insert_many(docs)
    return docs


async def pages(
    collection: AsyncCollection[Any], only: ExecutionFilter, size: int, tenant: str = "t"
) -> list[list[str]]:
    found, token = [], ""
    while True:
        docs, token = await newest_executions(collection, tenant, only, size, token)
        found.append([d["_id"] for d in docs])
        if not token:
            return found


def sorted_ids(docs: list[dict[str, Any]], keep: Any) -> list[str]:
    ordered = sorted(
        (d for d in docs if keep(d)), key=lambda d: (d["created_at"], d["_id"]), reverse=True
    )
    return [d["_id"] for d in ordered]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 50])
async def test_pages_are_those_of_a_whole_sort(collection: AsyncCollection[Any], size: int) -> None:
    now = utc_now()
    docs = await fill(collection, now)
    expected = sorted_ids(docs, lambda d: d["tenant_id"] == "t")
    found = await pages(collection, ExecutionFilter(), size)
    assert [i for p in found for i in p] == expected
    assert all(len(p) == size for p in found[:-1]) and 0 < len(found[-1]) <= size


async def test_the_callers_time_bounds_hold(collection: AsyncCollection[Any]) -> None:
    now = utc_now()
    docs = await fill(collection, now)
    after, before = now - timedelta(days=41), now - timedelta(minutes=1)
    expected = sorted_ids(
        docs, lambda d: d["tenant_id"] == "t" and after <= d["created_at"] < before
    )
    bounded = ExecutionFilter(created_after=after, created_before=before)
    assert [i for p in await pages(collection, bounded, 2) for i in p] == expected
    only_old = ExecutionFilter(created_before=now - timedelta(days=1000))
    assert [i for p in await pages(collection, only_old, 2) for i in p] == sorted_ids(
        docs, lambda d: d["tenant_id"] == "t" and d["created_at"] < now - timedelta(days=1000)
    )


FILTERS = {
    "statuses": ExecutionFilter(statuses=frozenset({"failed", "cancelled"})),
    "one status": ExecutionFilter(statuses=frozenset({"completed"})),
    "workflow": ExecutionFilter(workflow_id="wf-1"),
    "workflow and status": ExecutionFilter(workflow_id="wf-0", statuses=frozenset({"running"})),
    "name": ExecutionFilter(workflow_name_contains="INVOICE"),
    "name and statuses": ExecutionFilter(
        workflow_name_contains="audit", statuses=frozenset({"completed", "failed"})
    ),
}


def lets_through(only: ExecutionFilter, d: dict[str, Any]) -> bool:
    return (
        d["tenant_id"] == "t"
        and (not only.statuses or d["status"] in only.statuses)
        and (not only.workflow_id or d["workflow_id"] == only.workflow_id)
        and only.workflow_name_contains.lower() in d["workflow"]["name"].lower()
    )


@pytest.mark.parametrize("name", FILTERS)
@pytest.mark.parametrize("size", [1, 3])
async def test_each_filter_pages_like_a_whole_sort(
    collection: AsyncCollection[Any], name: str, size: int
) -> None:
    only = FILTERS[name]
    docs = await fill(collection, utc_now())
    expected = sorted_ids(docs, lambda d: lets_through(only, d))
    assert expected, "the data has no match for this filter"
    assert [i for p in await pages(collection, only, size) for i in p] == expected


async def test_a_window_holding_more_than_a_query_fetches_narrows(
    collection: AsyncCollection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listing, "SCAN_LIMIT", 4)
    now = utc_now()
    # 30 in one second, 5 of them in the same millisecond: more than SCAN_LIMIT at the
    # narrowest window too.
    burst = [
        doc(f"b{i:02d}", "t", now - timedelta(milliseconds=min(i, 25) * 30), "failed", "Invoices")
        for i in range(30)
    ]
    await collection.insert_many(burst)
    assert [i for p in await pages(collection, ExecutionFilter(), 7) for i in p] == sorted_ids(
        burst, lambda d: True
    )


async def test_a_bound_at_an_executions_very_millisecond_keeps_it(
    collection: AsyncCollection[Any],
) -> None:
    now = utc_now()
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # as BSON keeps it
    docs = await fill(collection, now)
    for age in (timedelta(minutes=30), timedelta(days=40)):
        at = now - age
        after = ExecutionFilter(created_after=at)
        assert [i for p in await pages(collection, after, 2) for i in p] == sorted_ids(
            docs, lambda d, at=at: d["tenant_id"] == "t" and d["created_at"] >= at
        )
        before = ExecutionFilter(created_before=at)
        assert [i for p in await pages(collection, before, 2) for i in p] == sorted_ids(
            docs, lambda d, at=at: d["tenant_id"] == "t" and d["created_at"] < at
        )


async def test_nothing_to_list(collection: AsyncCollection[Any]) -> None:
    assert await newest_executions(collection, "t", ExecutionFilter(), 20, "") == ([], "")
