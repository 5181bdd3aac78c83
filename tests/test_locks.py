"""The lock files: requirements.lock is the runtime set the image installs (pyproject's
dependencies and `server` extra, closed under what they require, no test or lint tool);
requirements-dev.lock adds the `dev` extra on top. Checked against the installed
distributions' own metadata, so a dependency added without its lock fails here."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)$")


def pins(name: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (ROOT / name).read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            found[canonicalize_name(match[1])] = match[2]
    return found


def declared(requirements: list[str]) -> dict[str, str]:
    return {
        canonicalize_name(Requirement(r).name): str(Requirement(r).specifier).removeprefix("==")
        for r in requirements
    }


def closure(roots: set[str]) -> set[str]:
    """`roots` and everything they require (no extras), by the installed metadata."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for raw in metadata.requires(name) or []:
            requirement = Requirement(raw)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


RUNTIME = pins("requirements.lock")
DEV = pins("requirements-dev.lock")
DIRECT_RUNTIME = declared(
    PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["server"]
)
DIRECT_DEV = declared(PYPROJECT["project"]["optional-dependencies"]["dev"])
# The Makefile pins these two itself, before any lock is read (grpcio-tools requires setuptools).
INSTALLER = {"pip", "setuptools"}


def test_the_runtime_lock_pins_what_pyproject_pins() -> None:
    assert {name: RUNTIME.get(name) for name in DIRECT_RUNTIME} == DIRECT_RUNTIME


def test_the_runtime_lock_is_closed_and_holds_no_development_tool() -> None:
    assert closure(set(DIRECT_RUNTIME)) == set(RUNTIME)
    assert not set(DIRECT_DEV) & set(RUNTIME)


def test_the_development_lock_adds_the_dev_extra_and_what_it_requires() -> None:
    assert "-r requirements.lock" in (ROOT / "requirements-dev.lock").read_text().splitlines()
    assert {name: DEV.get(name) for name in DIRECT_DEV} == DIRECT_DEV
    assert not set(DEV) & set(RUNTIME)
    assert closure(set(DIRECT_DEV)) - set(RUNTIME) - INSTALLER == set(DEV)


def test_every_pin_is_the_installed_version() -> None:
    installed = {name: metadata.version(name) for name in {**RUNTIME, **DEV}}
    assert installed == {**RUNTIME, **DEV}


def test_the_image_installs_the_runtime_set_only() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs == ["RUN pip install --no-cache-dir -r requirements.lock"]
    assert "requirements-dev.lock" not in dockerfile
