"""Shared helpers for the project's own tests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Make `@pytest.mark.xdist_group` work again under `--dist loadgroup` (`nox -s tests`).

    pytest-xdist's worker appends `@<group>` to each marked test's node id, and its scheduler
    sends all the tests of a group to one worker. Since pytest 9.2 that assignment no longer
    reaches the node id, and the groups are silently ignored: pytest-dev/pytest-xdist#1386.
    This does what the proposed fix (pytest-dev/pytest-xdist#1388) does; where xdist's own
    suffix took effect, it does nothing.
    """
    if not getattr(config.option, "loadgroup", False):  # set on xdist's workers only
        return
    for item in items:
        names = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                        for mark in item.iter_markers("xdist_group")})
        suffix = f"@{'_'.join(names)}"
        if names and not item.nodeid.endswith(suffix):
            from _pytest.nodeid import NodeId  # pytest >= 9.2: the node id is structured

            item._id = NodeId.parse(item.nodeid + suffix)  # type: ignore[attr-defined]


def has_binaries() -> bool:
    from lab import binaries
    from lab.errors import LabError

    try:
        binaries.redis_server()
        binaries.redis_cli()
        binaries.envoy()
    except LabError:
        return False
    return True


needs_binaries = pytest.mark.skipif(not has_binaries(), reason="redis-server/envoy not installed")


@pytest.fixture
def lab_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated REDIS_MESH_LAB_HOME for this test (and the CLI subprocesses it starts)."""
    home = tmp_path / "labs"
    monkeypatch.setenv("REDIS_MESH_LAB_HOME", str(home))
    return home


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Like lab_home, and at the end every lab left in it is taken down, and nothing of it
    may still run (the lifecycle tests)."""
    registry = tmp_path / "labs"
    monkeypatch.setenv("REDIS_MESH_LAB_HOME", str(registry))
    yield registry
    for child in registry.glob("*"):
        if child.is_dir() and not child.name.startswith("."):
            cli("down", "--name", child.name)
    assert processes_under(str(registry)) == []


@contextlib.contextmanager
def short_registry() -> Iterator[Path]:
    """A registry (not yet created) whose labs' paths stay short, removed afterwards.

    The docker backend reaches its sidecar's admin socket (`<registry>/<lab>/sidecar/
    admin.sock`) and its relay (`<registry>/<lab>/proxy.sock`) by path, and the kernel limits
    a Unix socket's path to 107 bytes. pytest's tmp_path (`/tmp/pytest-of-<user>/pytest-<N>/`,
    plus `popen-gw<K>/` under pytest-xdist, plus the test's name) leaves too little room.
    """
    base = Path(tempfile.mkdtemp(prefix="rml-", dir="/tmp" if Path("/tmp").is_dir() else None))
    try:
        yield base / "home"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def short_home() -> Iterator[Path]:
    """A short registry path for this test (see `short_registry`)."""
    with short_registry() as home:
        yield home


def cli(*args: str, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], capture_output=True, text=True,
        timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})}, check=False,
    )


def lab_pids(home: Path) -> list[int]:
    """Every pid a lab under `home` recorded (state files), for leak checks."""
    pids = []
    for state in home.glob("*/state.json"):
        pids += [p["pid"] for p in json.loads(state.read_text())["processes"]]
    return pids


def processes_under(marker: str) -> list[str]:
    """Command lines of live (non-zombie) processes that mention `marker`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
        except (OSError, IndexError):
            continue
        if state != "Z" and (marker in cmdline or marker in cwd):
            found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.fixture
def no_leaks(lab_home: Path) -> Iterator[Path]:
    """Fails the test if any process started under its lab home is still running after it."""
    yield lab_home
    assert processes_under(str(lab_home)) == []
