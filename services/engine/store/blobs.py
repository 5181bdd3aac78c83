"""Blobs: payloads too big to keep in an event (a start's document), stored in chunks."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator

from pymongo.errors import PyMongoError

from services.engine.clock import utc_now
from services.engine.domain.errors import BlobNotFound
from services.engine.store.database import Database
from services.engine.store.errors import domain_errors, unavailable
from services.engine.store.repository import BlobRef

BLOB_CHUNK_BYTES = 4 * 1024 * 1024


@domain_errors
class Blobs:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, execution_id: str, data: bytes, *, part_of_input: bool) -> BlobRef:
        blob_id = str(uuid.uuid4())
        chunks = [
            {"blob_id": blob_id, "n": n, "data": data[offset : offset + BLOB_CHUNK_BYTES]}
            for n, offset in enumerate(range(0, max(len(data), 1), BLOB_CHUNK_BYTES))
        ]
        ref = BlobRef(blob_id, len(data), hashlib.sha256(data).hexdigest())
        now = utc_now()
        # The metadata goes first, marked incomplete (never read so): a write cut short
        # leaves chunks that are still found by it, and deleted with its execution, or as
        # stranded if that never came (store/retention.py).
        await self._db.blobs.insert_one(
            {
                "_id": blob_id,
                "execution_id": execution_id,
                "size_bytes": ref.size_bytes,
                "sha256": ref.sha256,
                "chunks": len(chunks),
                "complete": False,
                "created_at": now,
                # Until retention has seen its execution exist (store/retention.py).
                "unchecked_since": now,
                # What its tenant's stored-bytes counter is charged for it on its own: a
                # value of a start's input is charged with the input (rpc/executions.py).
                "counted_bytes": 0 if part_of_input else ref.size_bytes,
            }
        )
        await self._db.blob_chunks.insert_many(chunks)
        await self._db.blobs.update_one({"_id": blob_id}, {"$set": {"complete": True}})
        return ref

    async def read(self, execution_id: str, blob_id: str) -> AsyncIterator[bytes]:
        meta = await self._db.blobs.find_one({"_id": blob_id, "execution_id": execution_id})
        # Written before blobs were marked: complete.
        if meta is None or meta.get("complete") is False:
            raise BlobNotFound(f"blob {blob_id!r} not found", metadata={"blob_id": blob_id})
        return self._chunks(blob_id, int(meta["chunks"]))

    async def _chunks(self, blob_id: str, count: int) -> AsyncIterator[bytes]:
        for n in range(count):
            try:
                chunk = await self._db.blob_chunks.find_one({"blob_id": blob_id, "n": n})
            except PyMongoError as exc:
                raise unavailable(exc) from exc
            if chunk is None:
                raise BlobNotFound(f"blob {blob_id!r} is incomplete")
            yield bytes(chunk["data"])

    async def delete(self, execution_id: str) -> None:
        ids = [
            d["_id"] async for d in self._db.blobs.find({"execution_id": execution_id}, {"_id": 1})
        ]
        # The chunks first: they are found through the metadata only.
        await self._db.blob_chunks.delete_many({"blob_id": {"$in": ids}})
        await self._db.blobs.delete_many({"_id": {"$in": ids}})
