"""Revoked tokens: stored in the database (collection `revoked_tokens`, each kept until the
token it names expires), and read again every REFRESH_SECONDS into the engine's
TokenAuthority, so that every engine refuses a revoked token within that long, whichever of
them was told. The engine that revokes refuses it at once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from services.auth import MAX_TOKEN_SECONDS, TokenAuthority
from services.engine.clock import utc_now
from services.engine.store.repository import RevocationStore, RevokedToken

log = logging.getLogger(__name__)

REFRESH_SECONDS = 2.0


class Revocations:
    def __init__(self, store: RevocationStore, authority: TokenAuthority) -> None:
        self._store = store
        self._authority = authority
        self._ids: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        # Before the first call is served: a revoked token is never accepted after a restart.
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="revoked-tokens")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def revoke(
        self, token_id: str, expires_at: datetime | None, revoked_by: str
    ) -> RevokedToken:
        now = utc_now()
        revoked = RevokedToken(
            token_id=token_id,
            expires_at=expires_at or now + timedelta(seconds=MAX_TOKEN_SECONDS),
            revoked_at=now,
            revoked_by=revoked_by,
        )
        await self._store.revoke_token(revoked)
        self._ids.add(token_id)
        self._authority.revoke(self._ids)
        log.warning(
            "token revoked",
            extra={"token_id": token_id, "revoked_by": revoked_by, "until": str(expires_at)},
        )
        return revoked

    def ids(self) -> list[str]:
        return sorted(self._ids)

    async def refresh(self) -> None:
        self._ids = set(await self._store.revoked_token_ids(utc_now()))
        self._authority.revoke(self._ids)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
            except Exception as exc:
                # The database away: the last list stays in force; the next round tries again.
                log.warning("revoked tokens not read", extra={"error": repr(exc)})
