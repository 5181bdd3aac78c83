"""`make run`'s supervisor: the whole stack up on its embedded default, and down together."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from services.stack import PORT_STEP, port_in_use
from tests.stack import MAKE_RUN_READY, free_port, start_make_run, start_up, wait_for


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_the_stack_comes_up_and_goes_down_together(tmp_path: Path) -> None:
    ports = {"ENGINE_PORT": free_port(), "PIONEER_PORT": free_port(), "GATEWAY_PORT": free_port()}
    log = tmp_path / "stack.log"
    stack = start_make_run(tmp_path / "data", log, **ports)
    try:
        banner = wait_for(log, MAKE_RUN_READY, 60)
        assert "'Procesar Documentos' = " in banner
        assert f"embedded SecantusDB in {tmp_path / 'data'}/db" in banner
        data = tmp_path / "data"
        for signer in ("operator", "engine", "gateway", "pioneer"):
            assert (data / "keys" / f"{signer}.key").stat().st_mode & 0o777 == 0o600
        assert (data / "token").stat().st_mode & 0o777 == 0o600
        local_token = (data / "token").read_text().strip()
        assert f"#token={local_token}" in banner  # the dashboard's address signs it in
        workflows = f"http://127.0.0.1:{ports['GATEWAY_PORT']}/workflows"
        # The seed's clients send no token: on loopback, make run admits them as a client.
        assert "without a token  admitted as client of tenant 'default'" in banner
        with urllib.request.urlopen(workflows, timeout=5) as reply:
            names = [w["name"] for w in json.load(reply)["workflows"]]
        assert names == ["Procesar Documentos"]
        # A bad token is still refused, never taken as no token.
        forged = urllib.request.Request(workflows, headers={"Authorization": "Bearer forged"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(forged, timeout=5)
        assert refused.value.code == 401
        refused.value.close()  # it holds the response's socket
        # A client, not an admin: defining workflows still takes the local admin token.
        definition = {"name": "x", "steps": [{"name": "a", "handler": "load_document"}]}
        define = urllib.request.Request(
            workflows, data=json.dumps(definition).encode(), method="POST"
        )
        define.add_header("Content-Type", "application/json")
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(define, timeout=5)
        assert denied.value.code == 403
        denied.value.close()
        request = urllib.request.Request(
            workflows, headers={"Authorization": f"Bearer {local_token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as reply:
            names = [w["name"] for w in json.load(reply)["workflows"]]
        assert names == ["Procesar Documentos"]
        services = children(stack.pid)
        assert len(services) == 3

        # One service dies: the group says which and stops the rest.
        pioneer = next(
            p for p in services if b"services.pioneer" in Path(f"/proc/{p}/cmdline").read_bytes()
        )
        os.kill(pioneer, signal.SIGKILL)
        assert stack.wait(30) == 1
        assert "pioneer exited with code -9; stopping the rest." in log.read_text()
        deadline = time.monotonic() + 20
        while any(alive(p) for p in services) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(p) for p in services), "a service was left running"
    finally:
        if stack.poll() is None:
            stack.send_signal(signal.SIGTERM)
            stack.wait(30)


def free_ports(count: int, step: int) -> int:
    """A port from which `count` ports `step` apart are free now."""
    while True:
        base = free_port()
        if base + step * count < 65536 and not any(
            port_in_use(base + step * i) for i in range(1, count)
        ):
            return base


def call(url: str, body: dict[str, Any] | None = None, token: str = "") -> Any:
    request = urllib.request.Request(
        url, data=None if body is None else json.dumps(body).encode(), method="GET"
    )
    if body is not None:
        request.method = "POST"
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)


def test_up_runs_a_cluster_and_a_run_completes_through_each_gateway(tmp_path: Path) -> None:
    ports = {
        "ENGINE_PORT": free_ports(2, PORT_STEP),
        "PIONEER_PORT": free_port(),
        "GATEWAY_PORT": free_ports(2, 1),
    }
    engines = [ports["ENGINE_PORT"], ports["ENGINE_PORT"] + PORT_STEP]
    gateways = [f"http://127.0.0.1:{ports['GATEWAY_PORT'] + i}" for i in range(2)]
    log = tmp_path / "up.log"
    data = tmp_path / "data"
    up = ["--engines", "2", "--pioneers", "1", "--gateways", "2"]
    stack = start_up(up, data, log, **ports)
    try:
        banner = wait_for(log, MAKE_RUN_READY, 120)
        # Every address is said: each gateway, each engine (the list the CLI takes), pioneer.
        assert f"REST / WebSocket {gateways[0]}, {gateways[1]}" in banner
        assert f"engines (gRPC)  127.0.0.1:{engines[0]},127.0.0.1:{engines[1]}" in banner
        assert f"pioneer (gRPC)  127.0.0.1:{ports['PIONEER_PORT']}" in banner
        assert f"embedded SecantusDB in {data}/db, mongodb://127.0.0.1:" in banner
        assert "'Procesar Documentos' = " in banner
        # One database for all, started by `up`; each engine with its name, its port and the
        # address the others reach it at.
        services = children(stack.pid)
        assert len(services) == 6
        environments = [
            dict(
                line.split("=", 1)
                for line in Path(f"/proc/{pid}/environ").read_text().split("\0")
                if "=" in line
            )
            for pid in services
            if b"services.engine\0" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert sorted((e["ENGINE_ID"], e["ENGINE_PORT"]) for e in environments) == [
            ("engine-1", str(engines[0])),
            ("engine-2", str(engines[1])),
        ]
        for e in environments:
            assert e["ENGINE_ADVERTISE_ADDRESS"] == f"127.0.0.1:{e['ENGINE_PORT']}"
            assert e["MONGODB_URI"].startswith("mongodb://127.0.0.1:")
        admin = (data / "token").read_text().strip()
        definition = {"name": "cluster", "steps": [{"name": "a", "handler": "echo"}]}
        workflow_id = call(f"{gateways[0]}/workflows", definition, admin)["workflow_id"]
        for gateway in gateways:
            started = call(f"{gateway}/workflows/{workflow_id}/execute-async", {"echo": {"x": 1}})
            deadline = time.monotonic() + 90
            while True:
                document = call(f"{gateway}{started['tracking_url']}")
                if document["progress"]["is_completed"] or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert document["status"] == "completed", document
            assert document["context"]["dynamic_properties"]["x"] == 1
        stack.send_signal(signal.SIGINT)
        assert stack.wait(60) == 0
        assert not any(alive(p) for p in services), "a service was left running"
    finally:
        if stack.poll() is None:
            stack.send_signal(signal.SIGTERM)
            stack.wait(60)


def test_up_names_a_port_in_use_and_starts_nothing(tmp_path: Path) -> None:
    base = free_ports(2, PORT_STEP)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + PORT_STEP))
        log = tmp_path / "up.log"
        # Every other service on a port free now: only the one taken here may be named (the
        # default pioneer port was once in use on the machine, and named too).
        others = {"PIONEER_PORT": free_port(), "GATEWAY_PORT": free_port()}
        stack = start_up(["--engines", "2"], tmp_path / "data", log, ENGINE_PORT=base, **others)
        assert stack.wait(60) == 2
    assert f"ports in use: engine-2 {base + PORT_STEP} " in log.read_text()
    assert not (tmp_path / "data").exists()
