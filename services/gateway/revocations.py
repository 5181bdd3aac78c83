"""Revoked tokens at the gateway: it verifies every caller's token itself, and its live
streams read the shared feed with its own token, so the engine cannot refuse a revoked
caller there. The gateway reads the engine's list of revoked token ids every REFRESH_SECONDS,
refuses them at its door from then on (401 TOKEN_REVOKED), and ends the live streams opened
with them, as a stream ends when its token expires."""

from __future__ import annotations

import asyncio
import logging

from discovery_client import AsyncClient
from services.auth import TokenAuthority
from services.gateway.streams import StreamRegistry

log = logging.getLogger(__name__)

REFRESH_SECONDS = 2.0


async def follow_revocations(
    engine: AsyncClient, authority: TokenAuthority, streams: StreamRegistry
) -> None:
    """Runs until cancelled. The engine away: the last list stays in force."""
    while True:
        try:
            authority.revoke(await engine.list_revoked_tokens())
        except Exception as exc:  # whatever it was, the next round asks again
            log.warning("revoked tokens not read", extra={"error": str(exc)})
        else:
            for stream in streams.streams:
                if authority.is_revoked(stream.principal):
                    stream.token_ended("TOKEN_REVOKED", "has been revoked")
        await asyncio.sleep(REFRESH_SECONDS)
