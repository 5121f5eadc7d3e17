"""Labs left running under another registry (a dead test run's) are listed and taken down.

`down --all` takes down every lab it finds elsewhere, a user's real ones and other test runs'
included, so these tests take down their own registry's labs only (`down --registry DIR`,
which `--all` runs for every registry): they pass whatever else runs on the machine.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from lab import procs
from lab.backends.docker import engine
from tests.conftest import cli, needs_binaries
from tests.docker_support import requires_docker


def _elsewhere() -> list[dict]:
    result = cli("list", "--json")
    assert result.returncode == 0, result.stderr
    return [row for row in json.loads(result.stdout) if row["phase"] == "elsewhere"]


def test_a_lab_process_under_another_registry_is_listed_and_taken_down(no_leaks: Path,
                                                                        tmp_path: Path):
    other = tmp_path / "dead-run"
    (other / "ghost").mkdir(parents=True)
    pid = procs.spawn(["sleep", "300"], tmp_path / "sleep.log", tmp_path,
                      label=str(other / "ghost"))
    try:
        rows = [row for row in _elsewhere() if row["registry"] == str(other)]
        assert [(r["name"], r["backend"], r["running"]) for r in rows] == [("ghost", "local", 1)]
        listing = cli("list")
        assert "labs still running under another registry" in listing.stdout
        assert f"ghost  local  1 processes  registry {other}" in listing.stdout
        down = cli("down", "--registry", str(other))
        assert down.returncode == 0, down.stderr
        assert f"lab 'ghost' of registry {other}" in down.stderr
        assert "lab 'ghost' is down" in down.stderr
        assert not procs.running(pid)
        assert not (other / "ghost").exists()
        assert not [row for row in _elsewhere() if row["registry"] == str(other)]
    finally:
        if procs.running(pid):
            procs.stop(pid)


@pytest.mark.parametrize("other", [["--name", "x"], ["--registry", "/tmp"]])
def test_down_all_name_and_registry_exclude_each_other(no_leaks: Path, other: list[str]):
    result = cli("down", "--all", *other)
    assert result.returncode == 2 and "not allowed with argument" in result.stderr
    assert "Traceback" not in result.stderr


def test_down_of_a_registry_with_nothing_up_says_so(no_leaks: Path, tmp_path: Path):
    result = cli("down", "--registry", str(tmp_path / "empty"))
    assert result.returncode == 0, result.stderr
    assert f"no lab is up (registry {tmp_path / 'empty'})" in result.stderr
    assert not (tmp_path / "empty").exists()


@requires_docker()
def test_a_docker_network_under_a_vanished_registry_is_taken_down(no_leaks: Path,
                                                                  tmp_path: Path):
    other = tmp_path / "gone"  # the registry itself was deleted with its test's tmp dir
    home = hashlib.sha256(str(other).encode()).hexdigest()[:6]
    name = f"rml-{home}-ghostnet"
    subprocess.run(["docker", "network", "create", "--label", f"{engine.LABEL_LAB}=ghostnet",
                    "--label", f"{engine.LABEL_HOME}={home}", "--label",
                    f"{engine.LABEL_HOME_PATH}={other}", name], check=True, capture_output=True)
    try:
        rows = [row for row in _elsewhere() if row["registry"] == str(other)]
        assert [(r["name"], r["backend"]) for r in rows] == [("ghostnet", "docker")]
        down = cli("down", "--registry", str(other))
        assert down.returncode == 0, down.stderr
        assert "lab 'ghostnet' is down" in down.stderr
        found = subprocess.run(["docker", "network", "ls", "-q", "--filter", f"name={name}"],
                               capture_output=True, text=True, check=True).stdout
        assert not found.strip()
        assert not other.exists()  # not left made for the lock `down` takes
    finally:
        subprocess.run(["docker", "network", "rm", name], capture_output=True, check=False)


@needs_binaries
def test_every_process_of_a_local_lab_carries_its_label(no_leaks: Path):
    """Redis's process title would overwrite its environment, and the label with it: a node
    started just before `up` was killed would then be found by no one."""
    up = cli("up", "--name", "labelled", "--quiet")
    assert up.returncode == 0, up.stderr
    try:
        state = json.loads((no_leaks / "labelled" / "state.json").read_text())
        journaled = {p["pid"] for p in state["processes"]}
        found = {p.pid for p in procs.labelled(str(no_leaks / "labelled"))}
        assert journaled and found == journaled
    finally:
        assert cli("down", "--name", "labelled").returncode == 0
