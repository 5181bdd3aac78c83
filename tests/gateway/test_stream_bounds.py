"""Every queue that holds events for one client is bounded in bytes (issue 14, finding 7): the
snapshot, the replay ring's backlog and the live events all count, a client over its bound is
cut off with 1013 as any slow client, a snapshot too big for the bound comes as a pointer to
the status route, and one event is encoded once however many clients it goes to."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import step_queue_service_pb2 as sq
from discovery.engine.v1 import step_report_service_pb2 as sr
from google.protobuf import struct_pb2

from services.auth import RUNNER
from services.gateway.state import STREAMS
from services.gateway.websocket import WatchSocket
from tests.gateway.harness import Api, Gateway, GatewayStack, gateway_for
from tests.stack import token

KIB = 1024
BOUND = 256 * KIB
EXTERNAL = {"name": "fetch_user", "handler": "external", "heartbeat_timeout_seconds": 30}
# Under the engine's blob threshold (64 KiB a string), so it stays in the step's input and in
# the status document's history: 600 KB of it.
BIG_INPUT = {"parts": ["x" * 50_000 for _ in range(12)]}
OMITTED = [
    "context.dynamic_properties",
    "steps_history[].input_payload",
    "steps_history[].output_payload",
]


def _small_receive_buffer(addr_info: Any) -> socket.socket:
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


@pytest.fixture
async def slow_session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(socket_factory=_small_receive_buffer)
    async with aiohttp.ClientSession(
        connector=connector, headers={"Authorization": f"Bearer {token()}"}
    ) as session:
        yield session


@pytest.fixture
async def bounded(gw_stack: GatewayStack) -> AsyncIterator[Gateway]:
    """A gateway whose clients each get BOUND bytes of queue, and a small kernel buffer."""
    async with gateway_for(
        gw_stack.engine.port,
        stream_queue_bytes=BOUND,
        stream_send_buffer_bytes=4096,
        ws_heartbeat_seconds=60,
    ) as gateway:
        yield gateway


async def wait_for(condition: Callable[[], bool], seconds: float = 15) -> None:
    """Polls a gauge of the gateway (it has no event to wait on) until it holds."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110  # a gauge read, not a signal
            await asyncio.sleep(0.05)


async def started(api: Api, stack: GatewayStack, document: dict[str, Any]) -> tuple[str, Any]:
    """An execution whose one step the test runs: started, with its input in the history."""
    workflow_id = await api.workflow(EXTERNAL)
    execution_id = await api.start(workflow_id, document)
    attempt: sq.StepTask = await stack.external.next_attempt(execution_id)
    return execution_id, attempt


async def report_big_progress(stack: GatewayStack, execution_id: str, attempt: Any, n: int) -> None:
    """n step_progress events of about 12 KB each (the engine allows 16 KiB of custom data)."""
    for i in range(n):
        custom = struct_pb2.Struct()
        custom.update({"pad": "p" * 12_000, "i": i})
        await stack.client.reports.ReportStepProgress(
            sr.ReportStepProgressRequest(
                execution_id=execution_id,
                step_name="fetch_user",
                attempt_token=attempt.attempt_token,
                progress=ex_pb.StepProgress(percentage=10, message=f"page {i}", custom_data=custom),
            ),
            timeout=10,
        )


async def complete(api: Api, execution_id: str, attempt: Any) -> None:
    status, body = await api.call(
        "POST",
        f"/executions/{execution_id}/steps/fetch_user/complete",
        {"success": True},
        headers={
            "Authorization": f"Bearer {token(RUNNER)}",
            "X-Attempt-Token": attempt.attempt_token,
        },
    )
    assert status == 200, body


def cut_off_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "slow WebSocket client disconnected"]


async def read_all(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        async for message in ws:
            messages.append(json.loads(message.data))
    return messages


def sockets(gateway: Gateway) -> list[WatchSocket]:
    return [s for s in gateway.app[STREAMS].streams if isinstance(s, WatchSocket)]


async def test_a_client_that_never_reads_is_held_to_its_byte_bound_and_cut_off(
    api: Api,
    gw_stack: GatewayStack,
    bounded: Gateway,
    slow_session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A big status (600 KB of input in the history) and big events (12 KB each) after it.
    execution_id, attempt = await started(api, gw_stack, BIG_INPUT)
    slow = await slow_session.ws_connect(f"{bounded.ws_url}/ws/{execution_id}")
    await wait_for(lambda: len(sockets(bounded)) == 1)
    session = sockets(bounded)[0]
    reporting = asyncio.create_task(report_big_progress(gw_stack, execution_id, attempt, 100))
    await wait_for(lambda: bool(cut_off_records(caplog)))
    # Whatever it held at any time (the snapshot included, and what the socket's transport
    # buffered) stayed within the bound.
    assert session.queue.peak_bytes <= BOUND
    record = cut_off_records(caplog)[0]
    assert record.peak_bytes <= BOUND  # type: ignore[attr-defined]
    # It reads again (within the closing handshake's 5 s): it finds the close, 1013.
    messages = await read_all(slow)
    assert slow.close_code == 1013
    assert messages[0]["event"] == "snapshot" and messages[0]["omitted"] == OMITTED
    assert len(messages) < 101
    await reporting
    await complete(api, execution_id, attempt)


async def test_a_snapshot_over_the_limit_is_a_pointer_to_the_status(
    api: Api, gw_stack: GatewayStack, session: aiohttp.ClientSession
) -> None:
    execution_id, attempt = await started(api, gw_stack, BIG_INPUT)
    async with gateway_for(gw_stack.engine.port, stream_snapshot_bytes=64 * KIB) as gateway:
        async with session.ws_connect(f"{gateway.ws_url}/ws/{execution_id}") as ws:
            raw = await ws.receive_str(timeout=10)
        async with session.get(f"{gateway.url}/executions/{execution_id}/events") as response:
            assert response.status == 200
            lines: list[bytes] = []
            async with asyncio.timeout(10):
                while not any(line.startswith(b"data: ") for line in lines):
                    lines.append(await response.content.readline())
            sse = json.loads(next(line for line in lines if line.startswith(b"data: "))[6:])
    await complete(api, execution_id, attempt)
    assert len(raw) <= 64 * KIB
    snapshot = json.loads(raw)
    assert sse == snapshot  # the same form on both streams
    # The contract's snapshot keys, plus where the rest is and what was left out.
    assert set(snapshot) == {
        "event",
        "execution_id",
        "seq",
        "timestamp",
        "status",
        "status_url",
        "omitted",
    }
    assert snapshot["event"] == "snapshot"
    assert snapshot["status_url"] == f"/executions/{execution_id}/status"
    assert snapshot["omitted"] == OMITTED
    status = snapshot["status"]
    assert status["status"] == "running" and status["last_seq"] == snapshot["seq"]
    assert status["current_step"]["name"] == "fetch_user"
    assert "dynamic_properties" not in status["context"]
    assert [e["step_name"] for e in status["steps_history"]] == ["fetch_user"]
    assert "input_payload" not in status["steps_history"][0]
    # The pointer leads to the whole document.
    code, full = await api.call("GET", snapshot["status_url"])
    assert code == 200
    assert full["steps_history"][0]["input_payload"] == BIG_INPUT


async def test_a_small_snapshot_stays_whole(
    api: Api, gw_stack: GatewayStack, bounded: Gateway
) -> None:
    execution_id, attempt = await started(api, gw_stack, {"nombre_documento": "doc.pdf"})
    async with api.session.ws_connect(f"{bounded.ws_url}/ws/{execution_id}") as ws:
        snapshot = await ws.receive_json(timeout=10)
    await complete(api, execution_id, attempt)
    assert set(snapshot) == {"event", "execution_id", "seq", "timestamp", "status"}
    history = snapshot["status"]["steps_history"]
    assert history[0]["input_payload"] == {"nombre_documento": "doc.pdf"}


async def test_replaying_a_big_backlog_after_a_reconnect_keeps_to_the_bound(
    api: Api,
    gw_stack: GatewayStack,
    bounded: Gateway,
    slow_session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    execution_id, attempt = await started(api, gw_stack, {})
    url = f"{bounded.ws_url}/ws/{execution_id}"
    # A reader that keeps up holds the execution's shared feed (and its ring) open.
    fast = await api.session.ws_connect(url)
    first = await fast.receive_json(timeout=10)

    async def keep_up() -> None:
        while (await fast.receive_json(timeout=10))["seq"] < first["seq"] + 100:
            pass

    reading = asyncio.create_task(keep_up())
    await report_big_progress(gw_stack, execution_id, attempt, 100)
    await reading
    # 1.2 MB of events after seq 1, more than the client's socket and its bound take
    # together: a client coming back from there never reads.
    slow = await slow_session.ws_connect(f"{url}?after_seq=1")
    await wait_for(lambda: bool(cut_off_records(caplog)))
    assert cut_off_records(caplog)[0].peak_bytes <= BOUND  # type: ignore[attr-defined]
    messages = await read_all(slow)
    assert slow.close_code == 1013
    assert [m["seq"] for m in messages] == list(range(2, 2 + len(messages)))
    # Back from where it got to, as a client does each time it is cut off (one that reads
    # as fast as it can may be too, while its backlog comes faster than it reads): the rest,
    # once each.
    await complete(api, execution_id, attempt)
    for _ in range(100):
        async with api.session.ws_connect(f"{url}?after_seq={messages[-1]['seq']}") as resumed:
            messages.extend(await read_all(resumed))
        if messages[-1]["event"] == "workflow_completed":
            break
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(2, seqs[-1] + 1)) and messages[-1]["event"] == "workflow_completed"
    await fast.close()


async def test_one_event_is_encoded_once_for_all_its_clients(
    api: Api, gw_stack: GatewayStack, slow_session: aiohttp.ClientSession
) -> None:
    execution_id, attempt = await started(api, gw_stack, {})
    async with gateway_for(
        gw_stack.engine.port, stream_send_buffer_bytes=4096, ws_heartbeat_seconds=60
    ) as gateway:
        url = f"{gateway.ws_url}/ws/{execution_id}?after_seq=0"
        clients = [await slow_session.ws_connect(url) for _ in range(3)]
        await wait_for(lambda: len(sockets(gateway)) == 3)
        # 1.8 MB for clients that read nothing: more than their sockets take, less than the
        # 4 MiB each may hold, so the rest waits in their queues.
        await report_big_progress(gw_stack, execution_id, attempt, 150)
        last = (await api.status(execution_id))["last_seq"]
        await wait_for(
            lambda: all(
                max((m.seq or 0 for m in s.queue), default=0) == last for s in sockets(gateway)
            )
        )
        # The same big message waits in each queue as one shared object, not one copy each.
        waiting = [{m.seq: m for m in s.queue} for s in sockets(gateway)]
        common = set.intersection(*(set(w) for w in waiting))
        assert len(common) > 10
        for seq in common:
            assert waiting[0][seq] is waiting[1][seq] is waiting[2][seq]
        await complete(api, execution_id, attempt)
        for ws in clients:
            await ws.close()
