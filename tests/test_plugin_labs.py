"""The plugin's labs on one machine: a unique lab per run, a dead run's lab reclaimed, a kept lab
left alone, and a lab taken down under a running suite stopping the session at once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab.pytest_plugin import EXIT_LAB_GONE, EXIT_NOT_PROVISIONED
from tests.conftest import ROOT, cli, needs_binaries, processes_under

pytestmark = [needs_binaries]

USES_THE_LAB = '''
def test_the_proxy_answers(lab):
    lab.proxy.set("probe", "1")
    assert lab.proxy.get("probe") == b"1"
    print("LAB", lab.name)
'''
# The first test says it runs and then waits for its stdin: the test drives it from outside.
BLOCKS = '''
import sys

def test_waits(lab):
    print("READY", lab.name, flush=True)
    sys.stdin.readline()

def test_after(lab):
    lab.proxy.set("after", "1")
'''

# A long test (here: forever) when the lab goes away, then one that needs the lab.
LONG = '''
import threading

def test_long(lab):
    print("READY", lab.name, flush=True)
    threading.Event().wait()

def test_after(lab):
    lab.proxy.set("after", "1")
'''


def _start(project: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", *args],
        cwd=project, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _until_ready(proc: subprocess.Popen[str]) -> list[str]:
    """Lines up to the blocking test's READY (the process is then waiting on its stdin)."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("READY"):
            return lines
    raise AssertionError("the test never got its lab:\n" + "".join(lines)[-3000:])


def _project(tmp_path: Path, name: str, suite: str) -> Path:
    project = tmp_path / name
    project.mkdir()
    (project / "test_it.py").write_text(suite)
    return project


def test_two_runs_at_once_get_their_own_lab_and_both_pass(no_leaks: Path, tmp_path: Path):
    first = _start(_project(tmp_path, "a", BLOCKS))
    second = _start(_project(tmp_path, "b", USES_THE_LAB))
    ready = _until_ready(first)  # the first run's lab is up while the second brings up its own
    out_second, _ = second.communicate(timeout=300)
    out_first, _ = first.communicate("\n", timeout=300)
    assert second.returncode == 0, out_second[-3000:]
    assert first.returncode == 0, out_first[-3000:]
    names = {re.search(r"READY (\S+)", "".join(ready))[1],  # type: ignore[index]
             re.search(r"LAB (\S+)", out_second)[1]}  # type: ignore[index]
    assert len(names) == 2 and all(re.fullmatch(r"conformance-[0-9a-f]{6}", n) for n in names)
    assert processes_under(str(no_leaks)) == []


def test_a_lab_whose_pytest_was_killed_is_reclaimed_by_the_next_run(no_leaks: Path,
                                                                     tmp_path: Path):
    project = _project(tmp_path, "p", BLOCKS)
    owner = _start(project, "--lab-name", "orphan")
    _until_ready(owner)
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=30)
    assert processes_under(str(no_leaks)) != []  # the dead run's lab is still running
    again = _start(project, "--lab-name", "orphan")
    out, _ = again.communicate("\n", timeout=300)
    assert again.returncode == 0, out[-3000:]
    said = [line for line in out.splitlines() if "orphan" in line and "died" in line]
    assert said == ["lab 'orphan' was left by a pytest run that died "
                    f"(pid {owner.pid}): taking it down to provision it again"], out[-3000:]
    assert processes_under(str(no_leaks)) == []


def test_a_kept_lab_is_never_reclaimed(no_leaks: Path, tmp_path: Path):
    project = _project(tmp_path, "p", USES_THE_LAB)
    kept = _start(project, "--lab-name", "kept", "--lab-keep")
    out, _ = kept.communicate(timeout=300)
    assert kept.returncode == 0, out[-3000:]
    try:
        again = _start(project, "--lab-name", "kept")
        out, _ = again.communicate(timeout=300)
        assert again.returncode == EXIT_NOT_PROVISIONED, out[-3000:]
        lines = [line for line in out.splitlines() if "redis-mesh-lab down --name kept" in line]
        assert len(lines) == 1 and "--lab-keep" in lines[0], out[-3000:]
        assert "Traceback" not in out
    finally:
        assert cli("down", "--name", "kept").returncode == 0
    assert processes_under(str(no_leaks)) == []


def test_taking_the_lab_down_under_the_suite_stops_the_session(no_leaks: Path, tmp_path: Path):
    run = _start(_project(tmp_path, "p", LONG), "--lab-name", "taken")
    _until_ready(run)
    down = cli("down", "--name", "taken")
    assert down.returncode == 0, down.stderr
    taken = time.monotonic()
    try:
        out, _ = run.communicate(timeout=10)
    finally:
        run.kill()
    assert time.monotonic() - taken < 10
    assert run.returncode == EXIT_LAB_GONE, out[-3000:]
    assert "lab taken was taken down while the suite ran" in out, out[-3000:]
    assert "FileNotFoundError" not in out and "Traceback" not in out, out[-3000:]
    assert processes_under(str(no_leaks)) == []
