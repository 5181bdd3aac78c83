"""A fan-out client process: `python -m bench.ws_clients URL SOCKETS` opens SOCKETS legacy
WebSockets on one execution (token in BENCH_TOKEN), prints `{"open": n}` once they are all
open, records when each `step_progress` event reaches each socket, and on a line on stdin
prints `{"arrivals": {n: [sent, [arrival, ...]]}}` and closes them.

Several of these share the sockets of the fan-out scenario: one interpreter reading 1,000
sockets would measure its own CPU, not the gateway's delivery.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import aiohttp

OPEN_AT_ONCE = 50


async def read(
    ws: aiohttp.ClientWebSocketResponse, arrivals: dict[int, list[float]], sent: dict[int, float]
) -> None:
    async for message in ws:
        if message.type != aiohttp.WSMsgType.TEXT:
            break
        arrived = time.time()
        data = json.loads(message.data)
        if data.get("event") == "step_progress":
            custom = data["progress"].get("custom_data") or {}
            if "n" in custom:
                n = int(custom["n"])
                sent[n] = float(custom["sent"])
                arrivals.setdefault(n, []).append(arrived)


async def main(url: str, sockets: int) -> None:
    headers = {"Authorization": f"Bearer {os.environ['BENCH_TOKEN']}"}
    arrivals: dict[int, list[float]] = {}
    sent: dict[int, float] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        held: list[aiohttp.ClientWebSocketResponse] = []
        try:
            while len(held) < sockets:
                batch = min(OPEN_AT_ONCE, sockets - len(held))
                held.extend(await asyncio.gather(*(session.ws_connect(url) for _ in range(batch))))
        except (aiohttp.ClientError, OSError) as exc:
            print(f"opening stopped at {len(held)}: {exc!r}", file=sys.stderr)
        readers = [asyncio.create_task(read(ws, arrivals, sent)) for ws in held]
        print(json.dumps({"open": len(held)}), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)
        report = {n: [sent[n], times] for n, times in arrivals.items()}
        print(json.dumps({"arrivals": report}), flush=True)
        await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)
        for task in readers:
            task.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
