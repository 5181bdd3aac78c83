"""The legacy WebSocket `/ws/{execution_id}` as clients use it (seed, CONTRACT.md) and as they
break it (RELIABILITY.md 17-21)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import step_report_service_pb2 as sr

from discovery_client.requests import struct
from services.auth import RUNNER
from services.gateway.state import FEEDS, STREAMS
from tests.gateway.harness import (
    Api,
    Gateway,
    GatewayStack,
    gateway_for,
    sleep_step,
    start_gateway,
)
from tests.stack import Stack, start_stack, token

EXTERNAL = {"name": "fetch_user", "handler": "external", "heartbeat_timeout_seconds": 20}
EVENT_KEYS = {"event", "execution_id", "seq", "timestamp"}


async def read_until_closed(
    ws: aiohttp.ClientWebSocketResponse, seconds: float = 20
) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    async with asyncio.timeout(seconds):
        async for message in ws:
            assert message.type == WSMsgType.TEXT, message
            messages.append(json.loads(message.data))
    return messages


def assert_contiguous(messages: list[dict[str, Any]], after: int) -> None:
    previous = after
    for message in messages:
        assert message["seq"] == previous + 1, (previous, message)
        previous = message["seq"]


async def test_javascript_style_client_sees_every_kind_of_event(api: Api, gateway: Gateway) -> None:
    workflow_id = await api.workflow(sleep_step("fetch_user"), {"name": "store", "handler": "echo"})
    status, started = await api.call(
        "POST",
        "/execute-async/",
        {"workflow_id": workflow_id, "data": {"seconds": 0.6, "nombre_documento": "doc.pdf"}},
    )
    assert status == 202
    seen: dict[str, list[dict[str, Any]]] = {}
    # As the seed's JavaScript does: open websocket_url and switch on `event`; from seq 0, so
    # the events from before the socket opened are replayed first.
    url = f"{gateway.ws_url}{started['websocket_url']}?after_seq=0"
    async with api.session.ws_connect(url) as ws:
        messages = await read_until_closed(ws)
        assert ws.close_code == 1000
    for data in messages:
        assert set(data) >= EVENT_KEYS
        assert data["execution_id"] == started["execution_id"]
        seen.setdefault(data["event"], []).append(data)
    assert_contiguous(messages, 0)
    assert list(seen) == [
        "workflow_started",
        "step_queued",
        "step_started",
        "step_progress",
        "step_finished",
        "workflow_completed",
    ]
    assert [e["step"] for e in seen["step_queued"]] == ["fetch_user", "store"]
    # The legacy step_started keeps its keys and meaning: the step began to run.
    assert [e["step"] for e in seen["step_started"]] == ["fetch_user", "store"]
    assert all(e["runner_id"] == "test-pioneer" for e in seen["step_started"])
    progress = seen["step_progress"][0]
    assert progress["step_name"] == "fetch_user"
    assert 0 < progress["progress"]["percentage"] <= 100
    assert progress["progress"]["message"].startswith("sleeping")
    assert progress["progress"]["current_task"] == "sleep"
    finished = seen["step_finished"][0]
    assert finished["step"] == "fetch_user" and finished["status"] == "success"
    assert finished["output"] == {"slept_seconds": 0.6, "success": True}
    assert messages[-1]["event"] == "workflow_completed"
    assert messages[-1]["timestamp"].endswith("Z")


async def test_a_failing_run_ends_with_workflow_failed_and_its_error(
    api: Api, gateway: Gateway
) -> None:
    workflow_id = await api.workflow(
        {"name": "validate", "handler": "fail", "retry": {"max_attempts": 1}}
    )
    execution_id = await api.start(workflow_id, {"message": "usuario no válido"})
    async with api.session.ws_connect(f"{gateway.ws_url}/ws/{execution_id}?after_seq=0") as ws:
        messages = await read_until_closed(ws)
        assert ws.close_code == 1000
    assert_contiguous(messages, 0)
    assert [m["event"] for m in messages] == [
        "workflow_started",
        "step_queued",
        "step_started",
        "step_finished",
        "workflow_failed",
    ]
    assert messages[3]["status"] == "failed"
    error = messages[-1]["error"]
    assert error["message"] == "usuario no válido" and error["step_name"] == "validate"


async def test_snapshot_first_then_everything_after_it(api: Api, gateway: Gateway) -> None:
    workflow_id = await api.workflow(sleep_step())
    execution_id = await api.start(workflow_id, {"seconds": 0.5})
    async with api.session.ws_connect(f"{gateway.ws_url}/ws/{execution_id}") as ws:
        messages = await read_until_closed(ws)
    snapshot = messages[0]
    assert snapshot["event"] == "snapshot"
    assert snapshot["status"]["execution_id"] == execution_id
    assert snapshot["status"]["last_seq"] == snapshot["seq"]
    assert_contiguous(messages[1:], snapshot["seq"])
    assert messages[-1]["event"] == "workflow_completed"


async def test_client_that_drops_mid_run_resumes_missing_nothing_and_nothing_twice(
    api: Api, gateway: Gateway
) -> None:
    workflow_id = await api.workflow(sleep_step(), sleep_step("again"))
    execution_id = await api.start(workflow_id, {"seconds": 1.0})
    received: list[dict[str, Any]] = []
    async with api.session.ws_connect(f"{gateway.ws_url}/ws/{execution_id}") as ws:
        snapshot = await ws.receive_json(timeout=5)
        for _ in range(3):
            received.append(await ws.receive_json(timeout=5))
    # Gone for a while, during which the run goes on.
    await asyncio.sleep(0.8)
    last = received[-1]["seq"]
    async with api.session.ws_connect(f"{gateway.ws_url}/ws/{execution_id}?after_seq={last}") as ws:
        received.extend(await read_until_closed(ws))
        assert ws.close_code == 1000
    assert_contiguous(received, snapshot["seq"])
    assert received[-1]["event"] == "workflow_completed"
    kinds = [m["event"] for m in received]
    assert kinds.count("step_finished") == 2


async def test_five_watchers_see_identical_sequences(api: Api, gateway: Gateway) -> None:
    workflow_id = await api.workflow(sleep_step(), {"name": "b", "handler": "echo"})
    execution_id = await api.start(workflow_id, {"seconds": 0.6})

    async def watch() -> list[tuple[int, str]]:
        url = f"{gateway.ws_url}/ws/{execution_id}?after_seq=0"
        async with api.session.ws_connect(url) as ws:
            messages = await read_until_closed(ws)
            assert ws.close_code == 1000
        assert_contiguous(messages, 0)
        return [(m["seq"], m["event"]) for m in messages]

    sequences = await asyncio.gather(*(watch() for _ in range(5)))
    assert all(s == sequences[0] for s in sequences)
    assert sequences[0][-1][1] == "workflow_completed"


async def test_resume_points_at_the_edges(api: Api, gateway: Gateway) -> None:
    workflow_id = await api.workflow({"name": "a", "handler": "echo"})
    execution_id = await api.start(workflow_id)
    head = (await api.wait_terminal(execution_id))["last_seq"]
    base = f"{gateway.ws_url}/ws/{execution_id}"
    async with api.session.ws_connect(f"{base}?after_seq=0") as ws:
        everything = await read_until_closed(ws)
    assert [m["seq"] for m in everything] == list(range(1, head + 1))
    async with api.session.ws_connect(f"{base}?after_seq={head}") as ws:
        assert await read_until_closed(ws) == []
        assert ws.close_code == 1000
    for bad in ("-1", "abc", "1.5", str(head + 1), ""):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await api.session.ws_connect(f"{base}?after_seq={bad}")
        assert refused.value.status == 400, bad


async def test_unknown_execution_gets_an_error_message_then_a_close(
    api: Api, gateway: Gateway
) -> None:
    async with api.session.ws_connect(f"{gateway.ws_url}/ws/no-such-execution") as ws:
        messages = await read_until_closed(ws, seconds=5)
        assert ws.close_code == 4404
    assert len(messages) == 1
    assert messages[0]["event"] == "error"
    assert messages[0]["error"]["code"] == "EXECUTION_NOT_FOUND"


async def test_plain_http_on_the_websocket_path_is_426(api: Api) -> None:
    status, body = await api.call("GET", "/ws/anything")
    assert status == 426 and body["error"]["code"] == "UPGRADE_REQUIRED"


async def test_oversized_client_frame_closes_that_socket_only(api: Api, gateway: Gateway) -> None:
    workflow_id = await api.workflow(sleep_step())
    execution_id = await api.start(workflow_id, {"seconds": 1.0})
    url = f"{gateway.ws_url}/ws/{execution_id}"
    async with api.session.ws_connect(url) as bystander, api.session.ws_connect(url) as ws:
        await ws.receive_json(timeout=5)
        await ws.send_str("x" * (100 * 1024))
        async with asyncio.timeout(5):
            while (await ws.receive()).type not in (WSMsgType.CLOSE, WSMsgType.CLOSED):
                pass
        assert ws.close_code == 1009
        messages = await read_until_closed(bystander)
        assert messages[-1]["event"] == "workflow_completed"


async def _wait_for(condition: Any, seconds: float) -> None:
    """Polls a gauge of the gateway (it has no event to wait on) until it holds."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110  # a gauge read, not a signal
            await asyncio.sleep(0.05)


async def test_a_client_that_stops_answering_pings_is_dropped(
    api: Api, gw_stack: GatewayStack
) -> None:
    workflow_id = await api.workflow(sleep_step())
    execution_id = await api.start(workflow_id, {"seconds": 30})
    heartbeat = 1.0
    async with gateway_for(gw_stack.engine.port, ws_heartbeat_seconds=heartbeat) as gateway:
        streams = gateway.app[STREAMS]
        ws = await api.session.ws_connect(f"{gateway.ws_url}/ws/{execution_id}")
        await _wait_for(lambda: streams.count == 1, 2)
        began = time.monotonic()
        # The client reads nothing, so it answers no ping.
        await _wait_for(lambda: streams.count == 0, heartbeat * 1.5 + 1)
        assert time.monotonic() - began <= heartbeat * 1.5 + 1
        ws._response.close()
        await ws.close()
    await api.call("POST", f"/executions/{execution_id}/cancel")


async def test_stream_caps_refuse_extra_sockets_with_429(api: Api, gw_stack: GatewayStack) -> None:
    workflow_id = await api.workflow(sleep_step())
    execution_id = await api.start(workflow_id, {"seconds": 30})
    async with gateway_for(gw_stack.engine.port, max_streams_per_client=2) as gateway:
        url = f"{gateway.ws_url}/ws/{execution_id}"
        first = await api.session.ws_connect(url)
        second = await api.session.ws_connect(url)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await api.session.ws_connect(url)
        assert refused.value.status == 429
        status, body = await Api(api.session, gateway.url).call("GET", "/health")
        assert status == 200 and body["streams"] == 2
        await first.close()
        await _wait_for(lambda: gateway.app[STREAMS].count == 1, 2)
        third = await api.session.ws_connect(url)
        await third.close()
        await second.close()
    await api.call("POST", f"/executions/{execution_id}/cancel")


async def test_origins_outside_the_allowlist_are_refused(api: Api, gw_stack: GatewayStack) -> None:
    allowed = "https://app.example"
    async with gateway_for(gw_stack.engine.port, ws_allowed_origins=(allowed,)) as gateway:
        url = f"{gateway.ws_url}/ws/whatever"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await api.session.ws_connect(url, origin="https://evil.example")
        assert refused.value.status == 403
        async with api.session.ws_connect(url, origin=allowed) as ws:
            await read_until_closed(ws, seconds=5)
            assert ws.close_code == 4404


async def test_shutdown_tells_clients_to_go_away(api: Api, gw_stack: GatewayStack) -> None:
    workflow_id = await api.workflow(sleep_step())
    execution_id = await api.start(workflow_id, {"seconds": 30})
    gateway = await start_gateway(gw_stack.engine.port)
    ws = await api.session.ws_connect(f"{gateway.ws_url}/ws/{execution_id}")
    await ws.receive_json(timeout=5)
    reading = asyncio.create_task(read_until_closed(ws, seconds=10))
    began = time.monotonic()
    await gateway.stop()
    await reading
    assert ws.close_code == 1001
    assert time.monotonic() - began < 3
    await api.call("POST", f"/executions/{execution_id}/cancel")


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


async def test_a_slow_consumer_is_cut_off_alone_and_resumes_without_loss(
    api: Api,
    gw_stack: GatewayStack,
    slow_session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    workflow_id = await api.workflow(EXTERNAL)
    execution_id = await api.start(workflow_id)
    attempt = await gw_stack.external.next_attempt(execution_id)
    queue = 20
    async with gateway_for(
        gw_stack.engine.port, stream_queue_messages=queue, ws_heartbeat_seconds=30
    ) as gateway:
        url = f"{gateway.ws_url}/ws/{execution_id}?after_seq=0"
        fast_messages: list[dict[str, Any]] = []
        latencies: list[float] = []

        async def fast_reader(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for message in ws:
                data = json.loads(message.data)
                fast_messages.append(data)
                sent = data.get("progress", {}).get("custom_data", {}).get("sent")
                if sent is not None:
                    latencies.append(time.time() - sent)

        fast = await api.session.ws_connect(url)
        slow = await slow_session.ws_connect(url)  # and then it reads nothing for a while
        reading = asyncio.create_task(fast_reader(fast))
        await _wait_for(lambda: len(fast_messages) >= 2, 5)

        async def report(i: int) -> None:
            await gw_stack.client.reports.ReportStepProgress(
                sr.ReportStepProgressRequest(
                    execution_id=execution_id,
                    step_name="fetch_user",
                    attempt_token=attempt.attempt_token,
                    progress=ex_pb.StepProgress(
                        percentage=10,
                        message=f"page {i}",
                        custom_data=struct({"pad": "x" * 4000, "sent": time.time()}),
                    ),
                ),
                timeout=10,
            )

        burst = 300
        for start in range(0, burst, 10):
            await asyncio.gather(*(report(i) for i in range(start, start + 10)))
        await _wait_for(lambda: len(fast_messages) >= 2 + burst, 10)
        # The slow one was cut off, and only it: once it reads again it finds a close, 1013.
        assert any("slow WebSocket client" in r.getMessage() for r in caplog.records)
        slow_messages: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            async for message in slow:
                slow_messages.append(json.loads(message.data))
        assert slow.close_code == 1013
        await _wait_for(lambda: gateway.app[STREAMS].count == 1, 2)
        assert 0 < len(slow_messages) < 2 + burst
        assert_contiguous(slow_messages, 0)

        # Back, from the last seq it holds: everything else, exactly once.
        last = slow_messages[-1]["seq"]
        resumed = await api.session.ws_connect(
            f"{gateway.ws_url}/ws/{execution_id}?after_seq={last}"
        )
        status, _ = await api.call(
            "POST",
            f"/executions/{execution_id}/steps/fetch_user/complete",
            {"success": True},
            headers={
                "Authorization": f"Bearer {token(RUNNER)}",
                "X-Attempt-Token": attempt.attempt_token,
            },
        )
        assert status == 200
        slow_messages.extend(await read_until_closed(resumed))
        await asyncio.wait_for(reading, 10)
    assert_contiguous(slow_messages, 0)
    assert [m["seq"] for m in slow_messages] == [m["seq"] for m in fast_messages]
    assert slow_messages[-1]["event"] == "workflow_completed"
    p99 = statistics.quantiles(latencies, n=100)[98]
    print(
        f"fast client during the burst: p50 {statistics.median(latencies) * 1000:.1f} ms,"
        f" p99 {p99 * 1000:.1f} ms"
    )
    assert p99 < 0.5


async def test_engine_dropping_a_slow_watcher_is_invisible_to_the_client(
    mongo_server: str,
    database: str,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A hub queue of one event: every commit of two events (a step's end and the next one's
    # start) overflows a live watcher, and the engine ends its stream with WATCHER_TOO_SLOW.
    stack: Stack = await start_stack(mongo_server, database, watch_queue=1)
    try:
        async with gateway_for(stack.engine.port) as gateway:
            api = Api(session, gateway.url)
            workflow_id = await api.workflow(sleep_step("a"), sleep_step("b"), sleep_step("c"))
            execution_id = await api.start(workflow_id, {"seconds": 0.3})
            caplog.set_level(logging.INFO, logger="services.gateway.feeds")
            async with session.ws_connect(f"{gateway.ws_url}/ws/{execution_id}?after_seq=0") as ws:
                messages = await read_until_closed(ws)
                assert ws.close_code == 1000
    finally:
        await stack.stop()
    assert_contiguous(messages, 0)
    assert messages[-1]["event"] == "workflow_completed"
    resumed = [r for r in caplog.records if r.getMessage() == "watch resumed"]
    assert any(getattr(r, "reason", "") == "WATCHER_TOO_SLOW" for r in resumed)


async def test_watchers_of_one_execution_share_one_engine_stream(
    api: Api, gw_stack: GatewayStack
) -> None:
    workflow_id = await api.workflow(sleep_step())
    execution_id = await api.start(workflow_id, {"seconds": 1.2})
    hub = gw_stack.engine.runner.hub  # type: ignore[union-attr]
    before = hub.watcher_count
    async with gateway_for(gw_stack.engine.port, feed_ring_messages=3) as gateway:
        feeds = gateway.app[FEEDS]
        url = f"{gateway.ws_url}/ws/{execution_id}"
        live = [await api.session.ws_connect(url) for _ in range(3)]
        firsts = [await ws.receive_json(timeout=5) for ws in live]
        assert feeds.engine_streams == 1 and hub.watcher_count == before + 1
        readers = [asyncio.create_task(read_until_closed(ws)) for ws in live]
        await asyncio.sleep(0.8)  # more events than the ring keeps
        # From the start: further back than the ring, so a replay of its own.
        async with api.session.ws_connect(f"{url}?after_seq=0") as late:
            assert (await late.receive_json(timeout=5))["seq"] == 1
            assert feeds.engine_streams == 2
            everything = [{"seq": 1}, *await read_until_closed(late)]
        for first, reader in zip(firsts, readers, strict=True):
            messages = await reader
            assert_contiguous(messages, first["seq"])
            assert messages[-1]["seq"] == everything[-1]["seq"]
        assert_contiguous(everything, 0)
        await _wait_for(lambda: feeds.engine_streams == 0, 2)


class _Captured(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 300_000])
async def test_frames_written_directly_are_what_aiohttp_writes(size: int) -> None:
    from aiohttp.base_protocol import BaseProtocol
    from aiohttp.http import WebSocketWriter

    from services.gateway.websocket import frame_header

    transport = _Captured()
    writer = WebSocketWriter(BaseProtocol(asyncio.get_running_loop()), transport)
    payload = ("é" * size).encode()[:size]
    await writer.send_frame(payload, WSMsgType.TEXT)
    assert frame_header(len(payload)) + payload == bytes(transport.written)
