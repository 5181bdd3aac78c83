"""Per-tenant quota on live streams (WebSocket and SSE): however many principals a tenant
has, together they hold at most this many streams of one gateway.

Each stream on an execution nobody else follows opens a WatchExecution at the engine, which
counts against the tenant's long-call quota there; this one refuses earlier, before any
upgrade, with 429 and the quota named.
"""

from __future__ import annotations

from collections import Counter

from aiohttp import web

from services.gateway.errors import GatewayError

QUOTA = "tenant_live_streams"
# A held stream ends when its execution does or its client leaves: retry a little later.
RETRY_AFTER_SECONDS = 5


class QuotaExceeded(GatewayError):
    status = 429
    code = "QUOTA_EXCEEDED"


class TenantStreams:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: Counter[str] = Counter()

    def admit(self, tenant: str) -> None:
        if self._held[tenant] >= self.limit:
            raise QuotaExceeded(
                f"tenant {tenant!r} holds {self._held[tenant]} live streams (limit {self.limit})",
                details={"quota": QUOTA, "tenant": tenant, "limit": self.limit},
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self._held[tenant] += 1

    def release(self, tenant: str) -> None:
        self._held[tenant] -= 1
        if self._held[tenant] <= 0:
            del self._held[tenant]


TENANT_STREAMS = web.AppKey("tenant_streams", TenantStreams)
