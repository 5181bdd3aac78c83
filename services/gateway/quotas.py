"""Per-tenant quota on live streams (WebSocket and SSE): however many principals a tenant
has, together they hold at most this many streams of one gateway.

Each stream on an execution nobody else follows opens a WatchExecution at the engine, which
counts against the tenant's long-call quota there; this one refuses earlier, before any
upgrade, with 429 and the quota named.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from aiohttp import web

from services.gateway.auth import caller, stream_owner
from services.gateway.errors import GatewayError
from services.gateway.state import STREAMS

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


@contextlib.contextmanager
def admitted(request: web.Request) -> Iterator[None]:
    """A live stream's place under its tenant's quota and the gateway's caps (per client and
    in all), held while the block runs."""
    tenant = caller(request).principal.tenant
    client = stream_owner(request)
    tenants, streams = request.app[TENANT_STREAMS], request.app[STREAMS]
    tenants.admit(tenant)
    try:
        streams.admit(client)
    except GatewayError:
        tenants.release(tenant)
        raise
    try:
        yield
    finally:
        streams.release(client)
        tenants.release(tenant)
