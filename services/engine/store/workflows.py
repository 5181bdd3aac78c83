"""Workflow definitions and their versions.

`workflows` holds each workflow's current version, which is what starts and listings read;
`workflow_versions` holds every version (`_id` "<workflow_id>:<version>"), the current one
included. A create or an update writes both in one transaction, so neither is ever without
the other. A name is unique within a tenant: a unique index on (tenant_id, name) refuses a
second one (schema.py), whichever engine it reaches.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError, PyMongoError

from services.engine.domain.errors import InvalidArgument
from services.engine.domain.workflow import Workflow
from services.engine.store.database import Database
from services.engine.store.documents import workflow_from_doc, workflow_to_doc
from services.engine.store.errors import domain_errors
from services.engine.store.repository import Page, WorkflowNameExists

# The unique index on (tenant_id, name) in `workflows`.
UNIQUE_NAMES = "tenant_id_name_unique"
TRANSACTION_TRIES = 8


def version_id(workflow_id: str, version: int) -> str:
    return f"{workflow_id}:{version}"


def version_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """The `workflow_versions` document of a `workflows` document."""
    workflow_id = doc["_id"]
    return {
        **doc,
        "_id": version_id(workflow_id, doc.get("version", 1)),
        "workflow_id": workflow_id,
    }


def _from_version_doc(doc: dict[str, Any]) -> Workflow:
    return workflow_from_doc({**doc, "_id": doc["workflow_id"]})


class _Superseded(Exception):
    """Another update made the version this one meant to make: the transaction aborts."""


@domain_errors
class WorkflowDocuments:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, workflow: Workflow) -> None:
        doc = workflow_to_doc(workflow)

        async def write(session: AsyncClientSession) -> None:
            await self._db.workflows.insert_one(doc, session=session)
            await self._db.workflow_versions.insert_one(version_doc(doc), session=session)

        try:
            await self._in_transaction(write)
        except DuplicateKeyError as exc:
            # The ids are new uuids: what is taken is the name.
            raise WorkflowNameExists(workflow.name) from exc

    async def add_version(self, workflow: Workflow, previous: int) -> bool:
        doc = workflow_to_doc(workflow)
        current: dict[str, Any] = {"_id": workflow.workflow_id, "tenant_id": workflow.tenant_id}
        if previous == 1:
            # Stored before workflows had versions: no version field, their first.
            current["$or"] = [{"version": 1}, {"version": {"$exists": False}}]
        else:
            current["version"] = previous

        async def write(session: AsyncClientSession) -> None:
            replaced = await self._db.workflows.replace_one(current, doc, session=session)
            if replaced.matched_count == 0:
                raise _Superseded
            await self._db.workflow_versions.insert_one(version_doc(doc), session=session)

        try:
            await self._in_transaction(write)
        except (_Superseded, DuplicateKeyError):
            return False
        return True

    async def _in_transaction(self, write: Callable[[AsyncClientSession], Awaitable[None]]) -> None:
        """`write` in one transaction, tried again when it met another one writing the same
        documents (two creates of one name, two updates of one workflow): the next try sees
        what that one wrote."""
        for attempt in range(1, TRANSACTION_TRIES + 1):
            try:
                async with self._db.transaction() as session:
                    await write(session)
                return
            except PyMongoError as exc:
                transient = exc.has_error_label("TransientTransactionError")
                if isinstance(exc, DuplicateKeyError) or not transient:
                    raise
                if attempt == TRANSACTION_TRIES:
                    raise
                # Apart, so that the writers that met do not meet again.
                await asyncio.sleep(random.uniform(0, 0.01 * attempt))

    async def version(self, tenant_id: str, workflow_id: str, version: int) -> Workflow | None:
        doc = await self._db.workflow_versions.find_one(
            {"_id": version_id(workflow_id, version), "tenant_id": tenant_id}
        )
        return _from_version_doc(doc) if doc is not None else None

    async def versions(
        self, tenant_id: str, workflow_id: str, page_size: int, page_token: str
    ) -> Page[Workflow]:
        # By workflow_id alone, which the (workflow_id, version) index answers (SecantusDB
        # scans the collection for two equalities); the tenant is checked on what it finds.
        query: dict[str, Any] = {"workflow_id": workflow_id}
        if page_token:
            query["version"] = {"$lt": decode_version_token(page_token)}
        cursor = self._db.workflow_versions.find(query).sort("version", DESCENDING)
        found = await cursor.limit(page_size + 1).to_list()
        docs = [d for d in found if d["tenant_id"] == tenant_id]
        token = ""
        if len(docs) > page_size:
            token = encode_version_token(docs[page_size - 1]["version"])
        return Page([_from_version_doc(d) for d in docs[:page_size]], token)


def encode_version_token(version: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"v": version}).encode()).decode()


def decode_version_token(token: str) -> int:
    try:
        version = json.loads(base64.urlsafe_b64decode(token.encode()))["v"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument("page_token", "not a token this server gave") from exc
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidArgument("page_token", "not a token this server gave")
    return version
