"""`GET /executions` narrowed by status, workflow, time and name; a filter it does not know,
or a bad value, is a 400 naming it (it was silently ignored: every status came back)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.gateway.harness import Api


async def found(api: Api, query: str) -> set[str]:
    status, body = await api.call("GET", f"/executions?limit=1000&{query}")
    assert status == 200, body
    return {e["execution_id"] for e in body["executions"]}


async def test_failed_runs_of_the_last_hour_and_nothing_else(api: Api) -> None:
    tag = uuid.uuid4().hex[:8]
    fine = await api.workflow({"name": "read", "handler": "echo"}, name=f"intake {tag}")
    doomed = await api.workflow(
        {"name": "refuse", "handler": "fail", "retry": {"max_attempts": 1}}, name=f"rejects {tag}"
    )
    done = [await api.start(fine) for _ in range(2)]
    failed = [await api.start(doomed) for _ in range(2)]
    for execution_id in done + failed:
        await api.wait_terminal(execution_id)
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")

    assert await found(api, f"status=failed&name={tag}&created_after={hour_ago}") == set(failed)
    assert await found(api, f"status=failed,completed&name={tag.upper()}") == set(done + failed)
    assert await found(api, f"status=completed&status=failed&name={tag}") == set(done + failed)
    assert await found(api, f"workflow_id={fine}") == set(done)
    assert await found(api, f"status=failed&workflow_id={fine}") == set()
    assert await found(api, f"name={tag}&created_before={hour_ago}") == set()


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        ("state=failed", "state", "unknown query parameter"),
        ("status=broken", "status", "not one of"),
        ("status=", "status", "not one of"),
        ("created_before=", "created_before", "ISO 8601"),
        ("status=failed&limit=0", "limit", "from 1 to"),
        ("created_after=yesterday", "created_after", "ISO 8601"),
        ("created_before=2026-11-29T10:00:00", "created_before", "time zone"),
        ("created_after=0001-01-01T00:00:00%2B01:00", "created_after", "ISO 8601"),
        ("name=a&name=b", "name", "once at most"),
    ],
)
async def test_a_bad_or_unknown_filter_is_a_400_naming_it(
    api: Api, query: str, field: str, words: str
) -> None:
    status, body = await api.call("GET", f"/executions?{query}")
    assert status == 400, body
    error: dict[str, Any] = body["error"]
    assert error["details"]["field"] == field
    assert words in error["message"]


async def test_a_range_that_ends_before_it_begins_is_a_400(api: Api) -> None:
    status, body = await api.call(
        "GET",
        "/executions?created_after=2026-11-29T10:00:00Z&created_before=2026-11-28T10:00:00Z",
    )
    assert status == 400, body
    assert body["error"]["details"]["field"] == "created_before"
