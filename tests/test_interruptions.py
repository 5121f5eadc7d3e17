"""Interruptions: a signal or kill -9 during `up`, or SIGTERM to pytest while it provisions or
tests, leaves nothing `down` (or the next `up`) cannot remove."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli, needs_binaries, processes_under
from tests.lifecycle import (
    assert_nothing_left,
    journal_ports,
    kill_9_during_up,
    read_until,
    start_up,
)

# ---- interruptions ------------------------------------------------------------------------


@needs_binaries
@pytest.mark.parametrize(("moment", "sig"), [
    ("start 6 redis-server", signal.SIGTERM),
    ("--cluster create", signal.SIGHUP),
    ("wait until every node says cluster_state", signal.SIGINT),
    ("start Envoy", signal.SIGTERM),
])
def test_signal_during_up_cleans_up(home: Path, moment: str, sig: int):
    process = start_up("--name", "sig")
    read_until(process, moment)
    lab_ports = journal_ports(home, "sig")
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    text = err.decode(errors="replace")
    assert process.returncode == 128 + sig, text
    assert "Traceback" not in text and "everything started was stopped" in text
    assert_nothing_left(home, "sig", lab_ports)


@needs_binaries
def test_kill_9_of_up_leaves_a_journal_that_down_cleans(home: Path):
    kill_9_during_up("killed", "--cluster create")
    state = json.loads((home / "killed" / "state.json").read_text())
    assert state["phase"] == "starting" and len(state["processes"]) == 7
    lab_ports = journal_ports(home, "killed")
    assert processes_under(str(home))  # the leftovers are there...
    listing = cli("list")
    assert "interrupted" in listing.stdout
    down = cli("down", "--name", "killed")
    assert down.returncode == 0 and "stopped 7 processes" in down.stderr, down.stderr
    assert_nothing_left(home, "killed", lab_ports)  # ...and down removed them all


@needs_binaries
def test_next_up_after_a_killed_up_cleans_the_leftovers(home: Path):
    kill_9_during_up("again", "start Envoy")
    old_ports = journal_ports(home, "again")
    up = cli("up", "--name", "again")
    assert up.returncode == 0, up.stderr
    assert "was interrupted; removing" in up.stderr
    new_ports = journal_ports(home, "again")
    assert cli("down", "--name", "again").returncode == 0
    assert_nothing_left(home, "again", old_ports | new_ports)

@needs_binaries
@pytest.mark.parametrize("moment", ["--cluster create", "PASSED"])
def test_sigterm_to_pytest_provisioning_or_testing(home: Path, tmp_path: Path, moment: str):
    """SIGTERM (a CI timeout) to pytest while the plugin provisions, or while tests run."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--lab-name", "plugin-sig",
         "--lab-reports", str(tmp_path / "reports"), str(ROOT / "suites"), "-v"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    seen = read_until(process, moment, stdout=moment == "PASSED")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    shown = (f"exit {process.returncode}\n--- read before the signal\n{seen}\n--- stdout\n"
             f"{out.decode(errors='replace')}\n--- stderr\n{err.decode(errors='replace')}")
    assert process.returncode != 0, shown
    if moment == "PASSED":
        assert b"Interrupted: SIGTERM" in out, shown  # mid-run, not after the last test
    assert_nothing_left(home, "plugin-sig")
