"""Discovery's client library: start and follow executions over gRPC from your own code.

```python
import asyncio
from discovery_client import AsyncClient, Settings

async def main() -> None:
    # DISCOVERY_ENGINE, DISCOVERY_TOKEN (or DISCOVERY_TOKEN_FILE), DISCOVERY_TLS_*
    async with AsyncClient(Settings.from_env()) as client:
        started = await client.start_execution("wf-1", {"seconds": 1}, request_id="order-42")
        async for event in client.watch(started.execution.execution_id, after_seq=0):
            print(event.seq, event.type)

asyncio.run(main())
```

`Client` is the same with blocking calls. It needs grpcio, protobuf, googleapis-common-protos,
grpcio-status and grpcio-health-checking, and the messages generated from proto/ (the
`discovery` package): nothing of the services.

    aio.py, sync.py   the clients: a typed method per engine call, a deadline on each
    watch.py          what `watch` does to resume without missing or repeating an event
    errors.py         EngineError: the gRPC status and the engine's reason, metadata, fields
    settings.py       where the engines are and who the caller is, from the environment
    channel.py        the gRPC channel (TLS, keepalive, retries of idempotent calls)
    credentials.py    the `authorization` metadata each call carries
"""

from discovery_client.aio import AsyncClient
from discovery_client.credentials import BearerToken, Credentials
from discovery_client.errors import ConfigError, EngineError, EngineUnreachable, FieldViolation
from discovery_client.settings import Settings
from discovery_client.sync import Client
from discovery_client.watch import TERMINAL_EVENTS, Item, Resumed

__all__ = [
    "TERMINAL_EVENTS",
    "AsyncClient",
    "BearerToken",
    "Client",
    "ConfigError",
    "Credentials",
    "EngineError",
    "EngineUnreachable",
    "FieldViolation",
    "Item",
    "Resumed",
    "Settings",
]
