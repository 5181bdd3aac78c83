"""The client's `watch` and its resume rules, blocking and async alike, against a fake
ExecutionService on a real socket: the faults the real engine only shows under load (a
watcher too slow, a stream deadline, a repeated event, a gap) are played here on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from discovery.engine.v1 import execution_pb2 as ex_pb
from discovery.engine.v1 import execution_service_pb2 as es
from discovery.engine.v1 import execution_service_pb2_grpc as es_grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from discovery_client import AsyncClient, Client, EngineError, Resumed, Settings
from tests.stack import token

EXECUTION = "e-1"
LAST = 6


def event(seq: int) -> es.WatchExecutionResponse:
    kind = ex_pb.EVENT_TYPE_WORKFLOW_COMPLETED if seq == LAST else ex_pb.EVENT_TYPE_STEP_PROGRESS
    return es.WatchExecutionResponse(
        event=ex_pb.ExecutionEvent(execution_id=EXECUTION, seq=seq, type=kind)
    )


def status(code: grpc.StatusCode, reason: str, message: str) -> Any:
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="discovery.engine"))
    return rpc_status.to_status(
        status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=[info])
    )


class FlakyExecutions(es_grpc.ExecutionServiceServicer):
    """Each stream plays the next script: the seqs to send, then how it ends."""

    def __init__(self, scripts: list[tuple[list[int], str]]) -> None:
        self.scripts = scripts
        self.asked: list[int | None] = []

    async def WatchExecution(
        self, request: es.WatchExecutionRequest, context: Any
    ) -> AsyncIterator[es.WatchExecutionResponse]:
        self.asked.append(request.after_seq if request.HasField("after_seq") else None)
        seqs, ending = self.scripts.pop(0)
        for seq in seqs:
            yield event(seq)
        if ending == "too slow":
            await context.abort_with_status(
                status(grpc.StatusCode.RESOURCE_EXHAUSTED, "WATCHER_TOO_SLOW", "fell behind")
            )
        elif ending == "stall":
            await asyncio.sleep(5)  # until the client's segment deadline
        elif ending == "not found":
            await context.abort_with_status(
                status(
                    grpc.StatusCode.NOT_FOUND, "EXECUTION_NOT_FOUND", "execution 'e-1' not found"
                )
            )


Serve = Callable[[FlakyExecutions], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Starts a gRPC server on port 0 with the given fake; gives its address."""
    servers: list[Any] = []

    async def start(fake: FlakyExecutions) -> str:
        server = grpc.aio.server()
        es_grpc.add_ExecutionServiceServicer_to_server(fake, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.stop(0)


Follow = Callable[..., Awaitable[tuple[list[int], list[Resumed]]]]


def follow_blocking(
    target: str, after_seq: int | None, segment_seconds: float = 30
) -> tuple[list[int], list[Resumed]]:
    resumed: list[Resumed] = []
    with Client(Settings(target, token())) as client:
        items = client.watch(
            EXECUTION, after_seq, on_resume=resumed.append, segment_seconds=segment_seconds
        )
        seqs = [item.seq for item in items if isinstance(item, ex_pb.ExecutionEvent)]
    return seqs, resumed


async def follow_async(
    target: str, after_seq: int | None, segment_seconds: float = 30
) -> tuple[list[int], list[Resumed]]:
    resumed: list[Resumed] = []
    async with AsyncClient(Settings(target, token())) as client:
        items = client.watch(
            EXECUTION, after_seq, on_resume=resumed.append, segment_seconds=segment_seconds
        )
        seqs = [item.seq async for item in items if isinstance(item, ex_pb.ExecutionEvent)]
    return seqs, resumed


@pytest.fixture(params=["blocking", "async"])
def follow(request: pytest.FixtureRequest) -> Follow:
    """The same watch through either client (the blocking one in a thread of its own)."""
    if request.param == "async":
        return follow_async

    async def blocking(*args: Any) -> tuple[list[int], list[Resumed]]:
        return await asyncio.to_thread(follow_blocking, *args)

    return blocking


async def test_a_slow_watcher_and_a_gap_resume_from_the_last_seq_without_repeats(
    serve: Serve, follow: Follow
) -> None:
    fake = FlakyExecutions(
        [
            ([1, 2], "too slow"),
            ([2, 3, 5], "end"),  # a repeat, then a gap: reopened after 3
            ([4, 5, 6], "end"),
        ]
    )
    target = await serve(fake)

    seqs, resumed = await follow(target, 0)

    assert seqs == [1, 2, 3, 4, 5, 6]
    assert fake.asked == [0, 2, 3]
    assert [r.after_seq for r in resumed] == [2, 3]
    assert all(r.delay_seconds == 0 for r in resumed), "reopened at once: the engine is fine"


async def test_a_stream_deadline_is_resumed_quietly(serve: Serve, follow: Follow) -> None:
    fake = FlakyExecutions([([1, 2, 3], "stall"), ([4, 5, 6], "end")])
    target = await serve(fake)

    seqs, resumed = await follow(target, 0, 0.5)

    assert seqs == [1, 2, 3, 4, 5, 6]
    assert fake.asked == [0, 3]
    assert [(r.after_seq, r.routine) for r in resumed] == [(3, True)]


async def test_a_refusal_is_not_retried(serve: Serve, follow: Follow) -> None:
    target = await serve(FlakyExecutions([([], "not found"), ([1], "end")]))

    with pytest.raises(EngineError) as refused:
        await follow(target, None)

    assert refused.value.reason == "EXECUTION_NOT_FOUND"
    assert refused.value.code is grpc.StatusCode.NOT_FOUND


async def test_a_stream_that_keeps_skipping_is_reopened_after_a_pause(
    serve: Serve, follow: Follow
) -> None:
    fake = FlakyExecutions([([1, 3], "end"), ([3], "end"), ([2, 3, 4, 5, 6], "end")])
    target = await serve(fake)

    seqs, resumed = await follow(target, 0)

    assert seqs == [1, 2, 3, 4, 5, 6]
    assert fake.asked == [0, 1, 1]
    assert [r.reason for r in resumed] == ["GAP", "GAP"]
    assert resumed[0].delay_seconds == 0 and resumed[1].delay_seconds > 0
