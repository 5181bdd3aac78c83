"""WebSocket benchmark (not collected by pytest): run it by hand.

    PYTHONPATH=.:generated .venv/bin/python tests/gateway/bench_ws.py [--reports 300]
        [--watchers 10] [--max-sockets 4000]

Processes as in production: the engine and the gateway each run as `python -m …`; this
process holds the MongoDB wire-protocol server, a step runner that reports over the gateway's
HTTP API, and the WebSocket clients. All on 127.0.0.1, bounded in count and time.

1. Latency: `--watchers` sockets follow one execution while the step runner posts
   `--reports` progress reports (`POST …/progress`, 50 a second); for each report and each
   socket, the time from just before the POST to the event's arrival. Prints p50/p99.
2. Capacity: sockets are opened on one running execution in steps up to `--max-sockets`;
   at each step one more report must reach every open socket within 10 s. Prints how many
   sockets the gateway held, and its RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from secantus import SecantusDBServer

from services.auth import RUNNER
from services.engine.store.embedded import mongo_uri
from tests.gateway.external_runner import ExternalRunner
from tests.stack import free_port, token, wait_http, wait_serving

ADMIN = {"Authorization": f"Bearer {token()}"}
RUNNER_TOKEN = token(RUNNER)
AS_RUNNER = {"Authorization": f"Bearer {RUNNER_TOKEN}"}

ROOT = Path(__file__).resolve().parents[2]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def spawn(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'generated'}", **env},
            stdout=out,
            stderr=out,
        )


def quantile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


class Watcher:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.arrivals: dict[int, float] = {}  # report number -> arrival time
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if data.get("event") == "step_progress":
                number = data["progress"]["custom_data"].get("n")
                if number is not None:
                    self.arrivals[int(number)] = time.monotonic()


async def main(args: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workdir = Path(tempfile.mkdtemp(prefix="bench-ws-"))
    server = SecantusDBServer(host="127.0.0.1", port=0, storage_path=str(workdir / "db"))
    server.start()
    engine_port, gateway_port = free_port(), free_port()
    runner = ExternalRunner(f"127.0.0.1:{engine_port}", RUNNER_TOKEN)
    engine = spawn(
        "services.engine",
        {
            "MONGODB_URI": mongo_uri(server.uri),
            "MONGODB_DATABASE": "bench",
            "ENGINE_PORT": str(engine_port),
            "ENGINE_METRICS_PORT": "0",
        },
        workdir / "engine.log",
    )
    gateway = spawn(
        "services.gateway",
        {
            "GATEWAY_PORT": str(gateway_port),
            "GATEWAY_METRICS_PORT": "0",
            "ENGINE_URL": f"127.0.0.1:{engine_port}",
            "GATEWAY_MAX_STREAMS": str(args.max_sockets + 100),
            "GATEWAY_MAX_STREAMS_PER_CLIENT": str(args.max_sockets + 100),
        },
        workdir / "gateway.log",
    )
    base = f"http://127.0.0.1:{gateway_port}"
    connector = aiohttp.TCPConnector(limit=0)
    try:
        await wait_serving(f"127.0.0.1:{engine_port}")
        await runner.start()  # pulls the `external` steps from the engine's queue
        await wait_http(f"{base}/health")
        async with aiohttp.ClientSession(connector=connector, headers=ADMIN) as session:
            definition = {
                "name": "bench",
                "steps": [
                    {"name": "work", "handler": "external", "heartbeat_timeout_seconds": 600}
                ],
            }
            while True:  # refused until the runner's first poll has named its handler
                async with session.post(f"{base}/workflows", json=definition) as response:
                    if response.status == 201:
                        workflow_id = (await response.json())["workflow_id"]
                        break
                await asyncio.sleep(0.1)

            async def start() -> tuple[str, str]:
                async with session.post(
                    f"{base}/execute-async/", json={"workflow_id": workflow_id, "data": {}}
                ) as response:
                    execution_id = (await response.json())["execution_id"]
                attempt = await runner.next_attempt(execution_id)
                return execution_id, attempt.attempt_token

            number = 0

            async def report(execution_id: str, token: str) -> tuple[int, float]:
                nonlocal number
                number += 1
                sent = time.monotonic()
                async with session.post(
                    f"{base}/executions/{execution_id}/steps/work/progress",
                    json={"percentage": 10, "message": "bench", "custom_data": {"n": number}},
                    headers={**AS_RUNNER, "X-Attempt-Token": token},
                ) as response:
                    assert response.status == 200, await response.text()
                return number, sent

            # --- 1. latency ------------------------------------------------------------
            execution_id, token = await start()
            url = f"{base.replace('http', 'ws')}/ws/{execution_id}"
            watchers = [Watcher(await session.ws_connect(url)) for _ in range(args.watchers)]
            await asyncio.sleep(0.5)
            sent_at: dict[int, float] = {}
            for _ in range(args.reports):
                n, sent = await report(execution_id, token)
                sent_at[n] = sent
                await asyncio.sleep(0.02)
            await asyncio.sleep(1.0)
            latencies = [
                (w.arrivals[n] - sent) * 1000
                for w in watchers
                for n, sent in sent_at.items()
                if n in w.arrivals
            ]
            expected = len(sent_at) * len(watchers)
            print(
                f"latency, progress POST -> WebSocket message ({len(watchers)} sockets,"
                f" {len(sent_at)} reports, {len(latencies)}/{expected} delivered):"
                f" p50 {statistics.median(latencies):.1f} ms,"
                f" p99 {quantile(latencies, 99):.1f} ms, max {max(latencies):.1f} ms"
            )
            for w in watchers:
                await w.ws.close()

            # --- 2. capacity -----------------------------------------------------------
            execution_id, token = await start()
            url = f"{base.replace('http', 'ws')}/ws/{execution_id}"
            held: list[Watcher] = []
            best = 0
            level = 500
            while level <= args.max_sockets:
                try:
                    while len(held) < level:
                        batch = await asyncio.gather(
                            *(session.ws_connect(url) for _ in range(min(100, level - len(held))))
                        )
                        held.extend(Watcher(ws) for ws in batch)
                except (aiohttp.ClientError, OSError) as exc:
                    print(f"  opening stopped at {len(held)} sockets: {exc!r}")
                    break
                await asyncio.sleep(1.0)
                n, sent = await report(execution_id, token)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    if all(n in w.arrivals for w in held):
                        break
                    await asyncio.sleep(0.05)
                got = [w.arrivals[n] - sent for w in held if n in w.arrivals]
                open_now = sum(not w.ws.closed for w in held)
                print(
                    f"  {len(held)} sockets ({open_now} open): event reached {len(got)},"
                    f" last after {max(got) * 1000:.0f} ms; gateway RSS {rss_mib(gateway.pid):.0f}"
                    f" MiB, engine RSS {rss_mib(engine.pid):.0f} MiB"
                )
                if len(got) < len(held):
                    break
                best = len(held)
                level *= 2
            print(f"capacity: one gateway held {best} concurrent WebSockets on one execution")
            for w in held:
                await w.ws.close()
    finally:
        gateway.terminate()
        engine.terminate()
        for process in (gateway, engine):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        await runner.stop()
        server.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=300)
    parser.add_argument("--watchers", type=int, default=10)
    parser.add_argument("--max-sockets", type=int, default=4000)
    asyncio.run(main(parser.parse_args()))
