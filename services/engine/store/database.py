"""The MongoDB database as the store uses it: its collections, and transactions on them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

# MongoDB's code for a write that a unique index refused.
DUPLICATE_KEY = 11000


class Database:
    def __init__(self, client: AsyncMongoClient[dict[str, Any]], name: str) -> None:
        # Every write waits for the majority and the journal: an acknowledged event survives
        # a crash of the database as well as of the engine.
        self.concern = WriteConcern(w="majority", j=True)
        db = client.get_database(
            name, write_concern=self.concern, read_concern=ReadConcern("majority")
        )
        self.client = client
        self.workflows: AsyncCollection[dict[str, Any]] = db["workflows"]
        # Every version of every workflow; `workflows` holds the current one.
        self.workflow_versions: AsyncCollection[dict[str, Any]] = db["workflow_versions"]
        self.executions: AsyncCollection[dict[str, Any]] = db["executions"]
        self.events: AsyncCollection[dict[str, Any]] = db["events"]
        self.blobs: AsyncCollection[dict[str, Any]] = db["blobs"]
        self.blob_chunks: AsyncCollection[dict[str, Any]] = db["blob_chunks"]
        self.step_stats: AsyncCollection[dict[str, Any]] = db["step_stats"]
        self.runners: AsyncCollection[dict[str, Any]] = db["runners"]
        self.revoked_tokens: AsyncCollection[dict[str, Any]] = db["revoked_tokens"]
        self.tenant_usage: AsyncCollection[dict[str, Any]] = db["tenant_usage"]
        self.leases: AsyncCollection[dict[str, Any]] = db["engine_leases"]
        self.schedules: AsyncCollection[dict[str, Any]] = db["schedules"]
        # The store's own bookkeeping (migrations under way).
        self.meta: AsyncCollection[dict[str, Any]] = db["meta"]

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncClientSession]:
        """A session in a transaction, committed when the block ends and aborted when it
        raises."""
        async with self.client.start_session() as session:
            transaction = await session.start_transaction(
                write_concern=self.concern, read_concern=ReadConcern("majority")
            )
            async with transaction:
                yield session
