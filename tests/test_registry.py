"""The registry of labs: found from any directory, private, one line on every misuse; a corrupt
or unreadable journal is named and `down` still cleans up after it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lab import paths, procs
from lab.errors import LabError
from lab.state import Process
from tests import other_user
from tests.conftest import ROOT, cli, needs_binaries
from tests.lifecycle import (
    assert_nothing_left,
    journal_ports,
    one_line_error,
    wait_for,
)

# ---- the registry -------------------------------------------------------------------------


def test_registry_follows_xdg_then_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("REDIS_MESH_LAB_HOME", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert paths.home() == tmp_path / "xdg" / "redis-mesh-lab"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert paths.home() == tmp_path / "user" / ".local" / "state" / "redis-mesh-lab"
    created = paths.home(create=True)
    assert created.stat().st_mode & 0o777 == 0o700


def test_registry_is_made_private(home: Path):
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    paths.home(create=True)
    assert home.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("where", ["file", "/proc/x"])
def test_unusable_registry_is_one_line(tmp_path: Path, where: str):
    target = tmp_path / "a-file" if where == "file" else Path(where)
    if where == "file":
        target.write_text("not a directory")
    env = {"REDIS_MESH_LAB_HOME": str(target)}
    one_line_error(cli("up", "--name", "x", env=env), str(target))
    if where == "file":
        one_line_error(cli("list", env=env), "is not a directory")
        one_line_error(cli("status", "--name", "x", env=env), "is not a directory")


def _main_as_other_user(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """lab.cli.main(argv) in a forked child that became another user (no exec: the
    interpreter's own files may be unreadable to that user); its exit code and output."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    user = other_user.other_user()
    import traceback

    from lab import cli as lab_cli
    from lab.backends.docker import engine  # noqa: F401  (imported lazily by list)

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            os.dup2(write, 1)
            os.dup2(write, 2)
            sys.stdout = sys.stderr = os.fdopen(1, "w", closefd=False)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            os.environ.update(env)
            code = lab_cli.main(argv)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(code)
    os.close(write)
    with os.fdopen(read, encoding="utf-8", errors="replace") as output:
        text = output.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), text


@pytest.mark.parametrize("argv", [["list"], ["status", "--name", "lab1"],
                                  ["down", "--name", "lab1"]], ids=lambda a: a[0])
def test_a_registry_the_user_cannot_read_is_one_line(argv: list[str]):
    # under /tmp itself: pytest's tmp_path sits in a 0700 directory another user cannot stat
    base = Path(tempfile.mkdtemp(prefix="rml-unreadable-"))
    try:
        base.chmod(0o755)
        registry = base / "someone-elses"
        (registry / "lab1").mkdir(parents=True)
        registry.chmod(0o700)  # root's, private: another user may stat it, not read it
        code, output = _main_as_other_user(argv, {"REDIS_MESH_LAB_HOME": str(registry)})
    finally:
        shutil.rmtree(base)
    assert code == 2 and "Traceback" not in output, output
    assert output.strip().splitlines() == [
        f"redis-mesh-lab: error: cannot read the lab registry {registry} "
        f"(REDIS_MESH_LAB_HOME={registry}): permission denied"], output


@pytest.mark.parametrize("name", ["abc\n", "abc\n-", "abc-", "ABC", "a" * 43])
def test_invalid_names_never_pass(home: Path, name: str):
    one_line_error(cli("up", "--name", name), "invalid lab name")
    one_line_error(cli("down", "--name", name), "invalid lab name")
    with pytest.raises(LabError):
        paths.check_name(name)
    assert not home.exists()


def test_attach_without_a_name_is_a_usage_error(home: Path):
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                             "--lab-backend", "attach", str(ROOT / "suites")],
                            capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert result.returncode == 4, result.stdout + result.stderr  # pytest's usage error
    assert "--lab-backend attach needs --lab-name" in result.stderr


# ---- corrupt state ------------------------------------------------------------------------


CORRUPT = {"not-json": b"{ not json", "not-utf8": b'{"name": "broken\xff\xfe\x80"}',
           "wrong-shape": b'{"name": "broken", "processes": 7}'}


@pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_state_is_named_and_down_still_cleans(home: Path, content: bytes):
    lab = home / "broken"
    lab.mkdir(parents=True)
    (lab / "state.json").write_bytes(content)
    (lab / "logs").mkdir()
    # a process of that lab that the journal cannot tell about: found by its label
    orphan = procs.spawn(["sleep", "300"], lab / "logs" / "orphan.log", lab, label=str(lab))
    try:
        one_line_error(cli("status", "--name", "broken"), str(lab / "state.json"),
                       "redis-mesh-lab down --name broken")
        listing = cli("list")
        assert listing.returncode == 0 and "broken" in listing.stdout
        assert "corrupt" in listing.stdout
        assert cli("list", "--json").returncode == 0
        down = cli("down", "--name", "broken")
        assert down.returncode == 0, down.stderr
        assert "corrupt lab state" in down.stderr and "is down" in down.stderr
        wait_for(lambda: not procs.running(orphan), 10, "the orphan to be stopped")
    finally:
        with pytest.MonkeyPatch.context():
            if procs.running(orphan):
                os.kill(orphan, signal.SIGKILL)
    assert_nothing_left(home, "broken")


@needs_binaries
def test_a_corrupt_lab_does_not_break_other_labs(home: Path):
    broken = home / "broken"
    broken.mkdir(parents=True)
    (broken / "state.json").write_bytes(b"[1, \xff\xfe")
    up = cli("up", "--name", "healthy")
    assert up.returncode == 0, up.stderr
    listing = cli("list")
    assert "healthy" in listing.stdout and "broken" in listing.stdout
    lab_ports = journal_ports(home, "healthy")
    assert cli("down", "--name", "healthy").returncode == 0
    assert cli("down", "--name", "broken").returncode == 0
    assert_nothing_left(home, "healthy", lab_ports)
    assert_nothing_left(home, "broken")


def test_a_reused_pid_is_never_signalled(home: Path):
    """A journal entry whose start time does not match the live pid is someone else's."""
    victim = subprocess.Popen(["sleep", "300"])
    try:
        stale = Process("redis-cluster-0", victim.pid,
                        started=(procs.start_time(victim.pid) or 0) - 1)
        assert not procs.alive(stale)
        procs.terminate(stale)
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()
