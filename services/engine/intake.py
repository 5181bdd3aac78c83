"""What happens to an execution's input before it is stored: large values set apart.

A base64 PDF can be tens of megabytes. It must never sit in an event, a history entry or the
status document, so every string at least `threshold` bytes long is written as a blob and
replaced by a reference {"blob_id", "size_bytes", "sha256"} that flows on to the steps.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from services.engine.domain.payload import check_payload
from services.engine.store.repository import BlobRef, ExecutionStore


def request_hash(workflow_id: str, manual: bool, document: dict[str, Any]) -> str:
    """Identifies a start request, so that a reused request_id with other content is caught."""
    canonical = json.dumps([workflow_id, manual, document], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _large(value: Any, threshold: int) -> bytes | None:
    if isinstance(value, str) and len(value) >= threshold:
        data = value.encode()
        if len(data) >= threshold:
            return data
    return None


def check_input(document: dict[str, Any], threshold: int, max_input_bytes: int) -> None:
    """Refuses an input that could not be stored: run before any of it is, so that a refused
    start leaves nothing behind. Its size is what is kept, with the large values set apart."""

    def planned(value: Any) -> Any:
        data = _large(value, threshold)
        if data is not None:  # a reference of the size a real one has
            return BlobRef(str(uuid.UUID(int=0)), len(data), "0" * 64).as_dict()
        if isinstance(value, dict):
            return {k: planned(v) for k, v in value.items()}
        if isinstance(value, list):
            return [planned(v) for v in value]
        return value

    check_payload(document, "input", max_bytes=2**62)  # names and depth; size comes next
    check_payload(planned(document), "input", max_input_bytes)


async def set_large_values_apart(
    store: ExecutionStore, execution_id: str, document: dict[str, Any], threshold: int
) -> dict[str, Any]:
    """The document (passed by `check_input`) with every large string replaced by a
    reference to its blob."""

    async def walk(value: Any) -> Any:
        data = _large(value, threshold)
        if data is not None:
            return (await store.put_blob(execution_id, data, part_of_input=True)).as_dict()
        if isinstance(value, dict):
            return {k: await walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [await walk(v) for v in value]
        return value

    kept: dict[str, Any] = await walk(document)
    return kept
