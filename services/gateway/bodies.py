"""Request bodies: read within the cap, then parsed as strict JSON.

The cap holds however the body arrives:
- a `Content-Length` over the cap is answered 413 before a byte of the body is read;
- a chunked body is counted while it is read and refused at the cap plus one chunk;
- a `Content-Encoding: gzip` or `deflate` body is inflated here as it is read, a chunk at a
  time and never past the cap: the *inflated* bytes are what is counted, so a small bomb is
  refused at the cap like any other body. Other encodings are refused with 415.
Nothing reaches the engine before the whole body is read and checked, so nothing is stored
for a refused one.

Strict JSON: UTF-8, no duplicate keys, no NaN or Infinity, numbers that a double holds
exactly, and at most `max_depth` levels of nesting.
"""

from __future__ import annotations

import json
import math
import zlib
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from services.gateway.errors import (
    BadRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)

# Inflated here, not by aiohttp (the runner is made with auto_decompress=False, see app.py),
# so that every refusal is this module's: 415 in the legacy error shape for other encodings,
# 413 at the cap, 400 for a body that does not inflate.
_GZIP_WBITS = 16 + zlib.MAX_WBITS
INFLATED_ENCODINGS = frozenset({"gzip", "x-gzip", "deflate"})
# Integers beyond this lose digits in the engine's documents (protobuf Struct holds doubles).
MAX_EXACT_INTEGER = 2**53


class _Inflater:
    """Inflates gzip or deflate a chunk at a time, never more than the cap allows."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in ("gzip", "x-gzip")
        self._inflate: Any = None

    def feed(self, chunk: bytes, room: int) -> bytes:
        """Inflates `chunk`; returns at most `room` + 1 bytes, one more than fits meaning the
        body is over the cap (the rest is never inflated)."""
        if self._inflate is None:
            if self._gzip:
                wbits = _GZIP_WBITS
            else:
                # "deflate" is zlib-wrapped by the standard, raw in some clients.
                wbits = zlib.MAX_WBITS if chunk[:1] and (chunk[0] & 0x0F) == 8 else -zlib.MAX_WBITS
            self._inflate = zlib.decompressobj(wbits)
        try:
            out = self._inflate.decompress(chunk, room + 1)
        except zlib.error as exc:
            raise BadRequest(f"the body does not inflate: {exc}", code="BAD_BODY") from None
        return bytes(out)

    def finish(self) -> None:
        if self._inflate is None:
            return
        if not self._inflate.eof or self._inflate.unused_data:
            raise BadRequest(
                "the compressed body is truncated or has trailing data", code="BAD_BODY"
            )


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(max_bytes)
    if length == 0:
        return b""  # whatever type an empty body claims to be
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity") and encoding not in INFLATED_ENCODINGS:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding[:40]!r} is not accepted (gzip, deflate or none)",
            code="UNSUPPORTED_CONTENT_ENCODING",
        )
    media = request.content_type
    if request.headers.get("Content-Type") and not (
        media == "application/json" or media.endswith("+json")
    ):
        raise UnsupportedMediaType(
            f"Content-Type {media[:80]!r} is not accepted; send application/json"
        )
    inflater = _Inflater(encoding) if encoding in INFLATED_ENCODINGS else None
    # Chunks kept apart until the end: a growing buffer would be copied as it grows, and the
    # memory of a refused body would peak at twice the cap.
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await request.content.readany():
            if inflater is not None:
                chunk = inflater.feed(chunk, max_bytes - size)
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(max_bytes)
    except HttpProcessingError as exc:  # a broken chunked encoding
        raise BadRequest(
            f"the request body could not be read: {exc.message}", code="BAD_BODY"
        ) from None
    if inflater is not None:
        inflater.finish()
    return b"".join(chunks)


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise _DuplicateKey(key)
        value[key] = item
    return value


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes, max_depth: int) -> Any:
    """The JSON value of a body, or BadRequest saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not UTF-8 (byte {exc.start})", code="INVALID_JSON") from None
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except RecursionError:
        raise too_deep("(body)", max_depth) from None
    except _DuplicateKey as exc:
        raise BadRequest(
            f"duplicate key {exc.key!r} in a JSON object",
            code="DUPLICATE_KEY",
            details={"field": exc.key},
        ) from None
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            code="INVALID_JSON",
            details={"line": exc.lineno, "column": exc.colno},
        ) from None
    except ValueError as exc:  # NaN or Infinity
        raise BadRequest(f"malformed JSON: {exc}", code="INVALID_JSON") from None
    _check(value, max_depth)
    return value


def too_deep(field: str, max_depth: int) -> ValidationFailed:
    return ValidationFailed(
        field, f"JSON nested deeper than {max_depth} levels", code="JSON_TOO_DEEP"
    )


def _check(root: Any, max_depth: int) -> None:
    """Depth and numbers, without recursion: the value may be as deep as the parser allows."""
    stack: list[tuple[Any, int, str]] = [(root, 1, "")]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, dict | list):
            if depth > max_depth:
                raise too_deep(where or "(body)", max_depth)
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                path = f"{where}.{key}" if isinstance(key, str) else f"{where}[{key}]"
                stack.append((item, depth + 1, path.removeprefix(".")))
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise BadRequest(
                    "numbers must be finite", code="INVALID_JSON", details={"field": where}
                )
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (abs(value) > MAX_EXACT_INTEGER)
        ):
            raise BadRequest(
                f"integers must be within ±2**53, got {value}",
                code="INVALID_NUMBER",
                details={"field": where},
            )


async def read_json(request: web.Request, max_bytes: int, max_depth: int) -> Any:
    """The body's JSON value; an empty body is `None`. A body that *is* JSON `null` is
    refused: no route takes one, and reading it as no body would accept what the API
    description calls wrong."""
    raw = await read_body(request, max_bytes)
    if not raw.strip():
        return None
    value = parse_json(raw, max_depth)
    if value is None:
        raise ValidationFailed("(body)", "expected a JSON object, got null")
    return value
