"""Server-Sent Events at `/executions/{id}/events`, read the way `EventSource` reads them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.gateway.harness import Api, Gateway, sleep_step


async def read_events(
    response: aiohttp.ClientResponse, limit: int | None = None
) -> list[tuple[int | None, dict[str, Any]]]:
    """(id, data) of each event, as EventSource parses them; comments are skipped."""
    events: list[tuple[int | None, dict[str, Any]]] = []
    event_id: int | None = None
    data: list[str] = []
    async with asyncio.timeout(20):
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and data:
                events.append((event_id, json.loads("\n".join(data))))
                event_id, data = None, []
                if limit is not None and len(events) >= limit:
                    break
    return events


async def test_event_stream_from_snapshot_to_the_end(api: Api, gateway: Gateway) -> None:
    workflow_id = await api.workflow(sleep_step(), {"name": "b", "handler": "echo"})
    execution_id = await api.start(workflow_id, {"seconds": 0.5})
    url = f"{gateway.url}/executions/{execution_id}/events"
    async with api.session.get(url, headers={"Accept": "text/event-stream"}) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        events = await read_events(response)
    snapshot_id, snapshot = events[0]
    assert snapshot["event"] == "snapshot" and snapshot_id == snapshot["seq"]
    seqs = [event_id for event_id, _ in events[1:]]
    assert seqs == list(range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(seqs)))
    assert all(data["seq"] == event_id for event_id, data in events)
    assert events[-1][1]["event"] == "workflow_completed"


async def test_last_event_id_resumes_exactly_after_it(api: Api, gateway: Gateway) -> None:
    workflow_id = await api.workflow(sleep_step())
    execution_id = await api.start(workflow_id, {"seconds": 1.0})
    url = f"{gateway.url}/executions/{execution_id}/events"
    async with api.session.get(url) as response:
        first = await read_events(response, limit=3)
    await asyncio.sleep(0.5)  # events go on while the client is away
    last_id = first[-1][0]
    async with api.session.get(url, headers={"Last-Event-ID": str(last_id)}) as response:
        rest = await read_events(response)
    seqs = [event_id for event_id, _ in first[1:] + rest]
    assert seqs == list(range(first[0][0] + 1, seqs[-1] + 1))  # type: ignore[operator]
    assert rest[-1][1]["event"] == "workflow_completed"
    # From the end, nothing more: 204 tells EventSource to stop reconnecting.
    async with api.session.get(url, headers={"Last-Event-ID": str(seqs[-1])}) as response:
        assert response.status == 204


async def test_event_stream_refusals(api: Api, gateway: Gateway) -> None:
    status, body = await api.call("GET", "/executions/nope/events")
    assert status == 404 and body["error"]["code"] == "EXECUTION_NOT_FOUND"
    workflow_id = await api.workflow({"name": "a", "handler": "echo"})
    execution_id = await api.start(workflow_id)
    head = (await api.wait_terminal(execution_id))["last_seq"]
    for headers in ({"Last-Event-ID": "x"}, {"Last-Event-ID": str(head + 1)}):
        status, body = await api.call("GET", f"/executions/{execution_id}/events", headers=headers)
        assert status == 400, body
