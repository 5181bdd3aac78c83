"""`make run`'s supervisor: the whole stack up on its embedded default, and down together."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.stack import MAKE_RUN_READY, free_port, start_make_run, wait_for


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
