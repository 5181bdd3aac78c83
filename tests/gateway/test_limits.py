"""Bad and oversized input: refused with a 4xx that names the problem, nothing stored, never a
500 or a stack trace (RELIABILITY.md 22-27)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import io
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from discovery.engine.v1 import execution_service_pb2 as es
from google.protobuf import struct_pb2

from services.auth import CLIENT
from tests.gateway.harness import Api, Gateway, GatewayStack, gateway_for
from tests.stack import free_port, token

MIB = 1024 * 1024


async def executions_of(stack: GatewayStack, workflow_id: str) -> int:
    listed = await stack.client.executions.ListExecutions(
        es.ListExecutionsRequest(workflow_id=workflow_id), timeout=10
    )
    return len(listed.executions)


def assert_clean_error(status: int, body: Any, expected: int) -> dict[str, Any]:
    assert status == expected, body
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert "Traceback" not in json.dumps(body)
    return error


async def raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, float]:
    """Sends a request head (and some body) on a bare socket; the status and how long the
    answer took. The rest of the announced body is never sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    writer.write(head.encode() + body)
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 5)
    took = time.monotonic() - began
    writer.close()
    return int(line.split()[1]), took


@pytest.fixture
async def small_gateway(gw_stack: GatewayStack) -> AsyncIterator[Gateway]:
    async with gateway_for(gw_stack.engine.port, max_body_bytes=MIB) as gateway:
        yield gateway


async def test_content_length_over_the_cap_is_refused_before_the_body_is_read(
    small_gateway: Gateway, api: Api, gw_stack: GatewayStack
) -> None:
    workflow_id = await api.workflow({"name": "a", "handler": "echo"})
    port = int(small_gateway.url.rsplit(":", 1)[1])
    head = (
        f"POST /execute-async/ HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token()}\r\n"
        "Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
    )
    start = json.dumps({"workflow_id": workflow_id, "data": {"base64": ""}}).encode()[:-3]
    status, took = await raw_request(port, head, start)
    assert status == 413
    assert took < 1.0
    assert await executions_of(gw_stack, workflow_id) == 0


async def test_chunked_body_is_refused_at_the_cap_plus_one_chunk(
    small_gateway: Gateway, api: Api, gw_stack: GatewayStack
) -> None:
    workflow_id = await api.workflow({"name": "a", "handler": "echo"})
    port = int(small_gateway.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /execute-async/ HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {token()}\r\n".encode()
        + b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = 64 * 1024
    opening = json.dumps({"workflow_id": workflow_id, "data": {"base64": ""}}).encode()[:-3]
    sent = 0
    answer = None
    pieces = [opening] + [b"A" * chunk] * 80  # 5 MiB, five times the cap
    for piece in pieces:
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        await writer.drain()
        sent += len(piece)
        try:
            answer = await asyncio.wait_for(reader.readline(), 0.02)
            break
        except TimeoutError:
            continue
    writer.close()
    assert answer is not None and int(answer.split()[1]) == 413
    # Refused while the client was still sending: the cap, one chunk, and what was in flight.
    assert MIB < sent <= MIB + 4 * chunk
    assert await executions_of(gw_stack, workflow_id) == 0


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


async def test_gzip_bomb_is_refused_once_inflated_past_the_cap(
    api: Api, gw_stack: GatewayStack
) -> None:
    cap = 8 * MIB
    workflow_id = await api.workflow({"name": "a", "handler": "echo"})
    document = b'{"workflow_id": "%s", "data": {"echo": "' % workflow_id.encode()
    bomb = gzip.compress(document + b" " * (100 * MIB) + b'"}}', compresslevel=9)
    assert len(bomb) < 200 * 1024
    async with gateway_for(gw_stack.engine.port, max_body_bytes=cap) as gateway:
        small = Api(api.session, gateway.url)
        await small.call("GET", "/health")  # warm: the engine channel is open
        peak = [_rss()]
        baseline = peak[0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss())
                time.sleep(0.002)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            status, body = await small.call(
                "POST",
                "/execute-async/",
                data=bomb,
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
        finally:
            done.set()
            sampler.join()
    assert_clean_error(status, body, 413)
    assert peak[0] - baseline < 2 * cap, f"RSS grew {(peak[0] - baseline) // 1024} KiB"
    print(f"RSS growth during the bomb: {(peak[0] - baseline) // 1024} KiB")
    assert await executions_of(gw_stack, workflow_id) == 0


async def test_a_gzip_body_within_the_cap_is_accepted(api: Api) -> None:
    workflow_id = await api.workflow({"name": "a", "handler": "echo"})
    body = gzip.compress(json.dumps({"workflow_id": workflow_id, "data": {"a": 1}}).encode())
    status, answer = await api.call(
        "POST",
        "/execute-async/",
        data=body,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert status == 202, answer
    status, answer = await api.call(
        "POST", "/execute-async/", data=b"{}", headers={"Content-Encoding": "br"}
    )
    assert_clean_error(status, answer, 415)


async def test_a_body_of_exactly_the_cap_is_accepted_and_one_byte_more_is_not(
    small_gateway: Gateway, api: Api, gw_stack: GatewayStack
) -> None:
    workflow_id = await api.workflow({"name": "keep", "handler": "echo"})
    document = base64.b64encode(b"%PDF-1.4\n" + bytes(range(256)) * 2000).decode()
    body = json.dumps({"workflow_id": workflow_id, "data": {"base64": document}}).encode()
    exact = body + b" " * (MIB - len(body))
    small = Api(api.session, small_gateway.url)
    status, answer = await small.call(
        "POST",
        "/execute-async/",
        data=io.BytesIO(exact + b" "),
        headers={"Content-Type": "application/json"},
    )
    assert_clean_error(status, answer, 413)
    status, answer = await small.call(
        "POST",
        "/execute-async/",
        data=io.BytesIO(exact),
        headers={"Content-Type": "application/json"},
    )
    assert status == 202, answer
    final = await api.wait_terminal(answer["execution_id"])
    # The document went to the engine intact: stored apart, with its size and hash.
    reference = final["steps_history"][0]["input_payload"]["base64"]
    assert reference["size_bytes"] == len(document)
    assert reference["sha256"] == hashlib.sha256(document.encode()).hexdigest()


BAD_BASE64 = {
    "non-alphabet": "JVBER*0xLjQK",
    "whitespace": "JVBE Ri0xLjQK",
    "newline": "JVBERi0x\nLjQK",
    "bad padding": "JVBERi0xLjQ",
    "excess padding": "JVBERi0xLjQK====",
    "data url": "data:application/pdf;base64,JVBERi0xLjQK",
    "url-safe": "JVBERi0_LjQ-",
    "non-ascii": "JVBERi0xLjQKñ",
    "non-canonical": "QR==",
    "empty": "",
    "not a string": 12,
}


@pytest.mark.parametrize("case", sorted(BAD_BASE64))
async def test_bad_base64_is_refused_and_nothing_is_stored(
    api: Api, gw_stack: GatewayStack, case: str
) -> None:
    workflow_id = await api.workflow({"name": "a", "handler": "echo"})
    document = {"base64": BAD_BASE64[case], "mime": "application/pdf"}
    status, body = await api.call("POST", f"/workflows/{workflow_id}/execute-async", document)
    error = assert_clean_error(status, body, 422)
    assert error["code"] == "INVALID_BASE64" and error["details"]["field"] == "base64"
    status, body = await api.call(
        "POST", "/execute-async/", {"workflow_id": workflow_id, "data": document}
    )
    error = assert_clean_error(status, body, 422)
    assert error["details"]["field"] == "data.base64"
    assert await executions_of(gw_stack, workflow_id) == 0


async def test_the_path_form_takes_no_body_as_an_empty_document_but_refuses_null(
    api: Api, gw_stack: GatewayStack
) -> None:
    workflow_id = await api.workflow({"name": "a", "handler": "echo"})
    path = f"/workflows/{workflow_id}/execute-async"
    json_type = {"Content-Type": "application/json"}
    status, body = await api.call("POST", path, data=b"null", headers=json_type)
    error = assert_clean_error(status, body, 422)
    assert error["details"]["field"] == "(body)"
    assert await executions_of(gw_stack, workflow_id) == 0
    status, _ = await api.call("POST", path, data=b"", headers=json_type)
    assert status == 202
    assert await executions_of(gw_stack, workflow_id) == 1


def _deep(levels: int) -> bytes:
    return b'{"workflow_id": "w", "data": {"x": ' + b"[" * levels + b"]" * levels + b"}}"


MALFORMED: dict[str, tuple[bytes, int, str]] = {
    "truncated": (b'{"workflow_id": ', 400, "INVALID_JSON"),
    "not json": (b"workflow_id=abc", 400, "INVALID_JSON"),
    "not utf-8": (b'{"workflow_id": "\xff"}', 400, "INVALID_JSON"),
    "nan": (b'{"workflow_id": "w", "data": {"x": NaN}}', 400, "INVALID_JSON"),
    "infinity": (b'{"workflow_id": "w", "data": {"x": 1e999}}', 400, "INVALID_JSON"),
    "huge integer": (
        b'{"workflow_id": "w", "data": {"x": 9007199254740993}}',
        400,
        "INVALID_NUMBER",
    ),
    "duplicate keys": (b'{"workflow_id": "a", "workflow_id": "b"}', 400, "DUPLICATE_KEY"),
    "10000 deep": (_deep(10_000), 422, "JSON_TOO_DEEP"),
    "100 deep": (_deep(100), 422, "JSON_TOO_DEEP"),
    "array": (b"[1, 2]", 422, "INVALID_ARGUMENT"),
    "string": (b'"hello"', 422, "INVALID_ARGUMENT"),
    "null": (b"null", 422, "INVALID_ARGUMENT"),
    "empty": (b"", 422, "INVALID_ARGUMENT"),
    "workflow_id number": (b'{"workflow_id": 5}', 422, "INVALID_ARGUMENT"),
    "workflow_id missing": (b'{"data": {}}', 422, "INVALID_ARGUMENT"),
    "data not object": (b'{"workflow_id": "w", "data": "x"}', 422, "INVALID_ARGUMENT"),
    "manual not bool": (b'{"workflow_id": "w", "manual": "yes"}', 422, "INVALID_ARGUMENT"),
    "unknown field": (b'{"workflow_id": "w", "dta": {}}', 422, "INVALID_ARGUMENT"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_bodies_get_a_clear_4xx(api: Api, case: str) -> None:
    raw, expected, code = MALFORMED[case]
    for path in ("/execute-async/", "/execute/"):
        status, body = await api.call(
            "POST", path, data=raw, headers={"Content-Type": "application/json"}
        )
        error = assert_clean_error(status, body, expected)
        assert error["code"] == code, error


async def test_wrong_types_in_a_workflow_definition_name_the_field(api: Api) -> None:
    cases = {
        "name": {"steps": [{"name": "a", "handler": "echo"}]},
        "steps": {"name": "w", "steps": {}},
        "steps[0].handler": {"name": "w", "steps": [{"name": "a", "handler": 3}]},
        "steps[0].timeout_seconds": {
            "name": "w",
            "steps": [{"name": "a", "handler": "echo", "timeout_seconds": "60"}],
        },
        "steps[0].retry.max_attempts": {
            "name": "w",
            "steps": [{"name": "a", "handler": "echo", "retry": {"max_attempts": 1.5}}],
        },
        "steps[0].retry": {
            "name": "w",
            "steps": [{"name": "a", "handler": "echo", "retry": [1]}],
        },
        "steps[0].name": {"name": "w", "steps": [{"name": "a/b", "handler": "echo"}]},
    }
    for field, definition in cases.items():
        status, body = await api.call("POST", "/workflows", definition)
        error = assert_clean_error(status, body, 422)
        assert error["details"]["field"] == field, (field, error)


async def test_the_engines_own_checks_come_back_naming_the_field(api: Api) -> None:
    workflow_id = await api.workflow({"name": "a", "handler": "echo"})
    status, body = await api.call(
        "POST", f"/workflows/{workflow_id}/execute-async", {"doc": {"$where": "1"}}
    )
    error = assert_clean_error(status, body, 422)
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["details"]["field"] == "input.doc.$where"


async def test_other_content_types_are_refused(api: Api) -> None:
    status, body = await api.call(
        "POST", "/execute-async/", data="workflow_id=w", headers={"Content-Type": "text/plain"}
    )
    assert_clean_error(status, body, 415)


async def test_bad_query_and_header_values(api: Api) -> None:
    status, body = await api.call("GET", "/workflows?page_size=0")
    assert_clean_error(status, body, 400)
    status, body = await api.call("GET", "/workflows?page_size=abc")
    assert_clean_error(status, body, 400)
    status, body = await api.call(
        "POST", "/execute-async/", {"workflow_id": "w"}, headers={"Idempotency-Key": "k" * 129}
    )
    error = assert_clean_error(status, body, 422)
    assert error["details"]["field"] == "Idempotency-Key"


async def test_an_unreachable_engine_is_503_not_500(session: aiohttp.ClientSession) -> None:
    async with gateway_for(free_port(), rpc_timeout_seconds=2.0) as gateway:
        api = Api(session, gateway.url)
        status, body = await api.call("GET", "/executions/abc/status")
        error = assert_clean_error(status, body, 503)
        assert error["code"] == "UNAVAILABLE"
        assert "127.0.0.1" not in error["message"]
        status, body = await api.call("POST", "/execute-async/", {"workflow_id": "w"})
        assert_clean_error(status, body, 503)
        status, body = await api.call("GET", "/health")
        assert status == 503 and body["engine"] == "unavailable"


async def test_a_caller_opening_streams_too_fast_gets_429_and_others_do_not(
    api: Api, gw_stack: GatewayStack
) -> None:
    workflow_id = await api.workflow({"name": "a", "handler": "echo"})
    execution_id = await api.start(workflow_id)
    async with (
        gateway_for(gw_stack.engine.port, stream_open_rate=0.5, stream_open_burst=2) as gateway,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {token()}"}) as hasty,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {token(CLIENT)}"}) as other,
    ):
        url = f"{gateway.ws_url}/ws/{execution_id}?after_seq=0"
        for _ in range(2):  # the burst: each one runs to the end of the execution
            async with hasty.ws_connect(url) as ws:
                [_ async for _ in ws]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await hasty.ws_connect(url)
        assert refused.value.status == 429
        assert refused.value.headers is not None
        assert int(refused.value.headers["Retry-After"]) >= 1
        async with other.ws_connect(url) as ws:  # another principal, its own budget
            assert [message.json() async for message in ws][-1]["seq"] >= 1


# JSON nesting (issue 14, finding 10). A google.protobuf.Struct costs protobuf two or three
# levels of message per JSON level (Struct, its map entry, Value), against protobuf's limit
# of 100, and the engine keeps documents within 32 levels: 32 is the deepest body that goes
# through the engine's gRPC path everywhere a document goes (the start, the status, the
# events), so the gateway refuses anything deeper itself.
MAX_DEPTH = 32


def nested(depth: int, kind: str = "object") -> dict[str, Any]:
    """A document `depth` levels deep as the gateway counts them (the body itself is 1), with
    a scalar at the bottom."""
    value: Any = {"x": 1} if kind == "object" else [1]
    for _ in range(depth - 2):
        value = {"a": value} if kind == "object" else [value]
    return {"seconds": 0, "a": value}


async def test_the_deepest_document_allowed_goes_through_end_to_end(
    api: Api, gateway: Gateway
) -> None:
    workflow_id = await api.workflow({"name": "wait", "handler": "sleep"})
    for kind in ("object", "array"):
        document = nested(MAX_DEPTH, kind)
        status, body = await api.call("POST", f"/workflows/{workflow_id}/execute-async", document)
        assert status == 202, body
        execution_id = body["execution_id"]
        final = await api.wait_terminal(execution_id)
        assert final["status"] == "completed", final
        assert final["steps_history"][0]["input_payload"]["a"] == document["a"]
        url = f"{gateway.ws_url}/ws/{execution_id}?after_seq=0"
        async with api.session.ws_connect(url) as ws:
            events = [json.loads(m.data) async for m in ws]
        assert events[-1]["event"] == "workflow_completed"
        started = next(e for e in events if e["event"] == "step_started")
        assert started["input_payload"]["a"] == document["a"]


@pytest.mark.parametrize("path", ["/execute-async/", "/workflows/{id}/execute-async"])
async def test_one_level_deeper_is_refused_at_the_gateway_naming_the_field(
    api: Api, gw_stack: GatewayStack, path: str
) -> None:
    workflow_id = await api.workflow({"name": "wait", "handler": "sleep"})
    legacy_form = path == "/execute-async/"
    # The legacy form wraps the document in one more level.
    for depth in range(MAX_DEPTH + 1, 66):
        document = nested(depth - 1 if legacy_form else depth)
        body: Any = {"workflow_id": workflow_id, "data": document} if legacy_form else document
        status, answer = await api.call("POST", path.format(id=workflow_id), body)
        error = assert_clean_error(status, answer, 422)
        assert error["code"] == "JSON_TOO_DEEP", (depth, error)
        # The first object past the limit: the one at level MAX_DEPTH + 1.
        field = ("data." if legacy_form else "") + ".".join(["a"] * (MAX_DEPTH - legacy_form))
        assert error["details"]["field"] == field, (depth, error)
        assert f"deeper than {MAX_DEPTH} levels" in error["message"]
    assert await executions_of(gw_stack, workflow_id) == 0


async def test_the_engine_answers_a_struct_too_deep_with_invalid_argument(
    api: Api, gw_stack: GatewayStack
) -> None:
    workflow_id = await api.workflow({"name": "wait", "handler": "sleep"})
    deep = struct_pb2.Struct()
    deep.update(nested(MAX_DEPTH + 1))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gw_stack.client.executions.StartExecution(
            es.StartExecutionRequest(workflow_id=workflow_id, input=deep), timeout=10
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "input.a.a.a" in (refused.value.details() or "")
    # Deeper than protobuf decodes (100 levels of message; 50 of JSON arrays in this
    # request): grpc answers before any of the engine's code runs, UNKNOWN with the decode
    # error. The gateway never sends such a request (its limit is far below).
    too_deep = struct_pb2.Struct()
    too_deep.update(nested(50, "array"))
    with pytest.raises(grpc.aio.AioRpcError) as undecodable:
        await gw_stack.client.executions.StartExecution(
            es.StartExecutionRequest(workflow_id=workflow_id, input=too_deep), timeout=10
        )
    assert undecodable.value.code() is grpc.StatusCode.UNKNOWN
    assert "Exceeded upb_DecodeOptions_MaxDepth" in (undecodable.value.details() or "")
    assert await executions_of(gw_stack, workflow_id) == 0
