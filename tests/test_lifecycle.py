"""A lab lifecycle you can trust: found from anywhere, never leaked, never shared, locked down.

Every scenario ends by checking that, once `down` has run (or `up` failed), nothing of the
lab is left: no process carrying its label or running under the registry, no port it
journaled still bound, no lock file, no directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from lab import locks, paths, ports, procs
from lab.envoy import proof
from lab.errors import LabError
from lab.state import Process
from lab.topology import Node, Topology
from tests import other_user
from tests.conftest import ROOT, cli, needs_binaries, processes_under

# ---- helpers ------------------------------------------------------------------------------


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("redis-mesh-lab: error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def journal_ports(home: Path, name: str) -> set[int]:
    """Every port a lab's journal names (nodes and their bus ports, mirror, proxy)."""
    path = home / name / "state.json"
    if not path.is_file():
        return set()
    data = json.loads(path.read_text())
    found = set()
    journaled = (data.get("local") or {}).get("ports", {})
    for port in journaled.get("nodes", []):
        found |= {port, port + ports.CLUSTER_BUS_OFFSET}
    found |= {journaled[k] for k in ("mirror", "proxy") if k in journaled}
    return found


def wait_for(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def assert_nothing_left(home: Path, name: str, lab_ports: set[int] = frozenset()) -> None:  # type: ignore[assignment]
    where = str(home / name)
    wait_for(lambda: not processes_under(where), 10, f"processes under {where} to exit")
    assert not procs.labelled(str(home / name))
    assert not (home / name).exists()
    lock = home / ".locks" / name
    assert not lock.exists(), "the lab's lock file is left"
    busy = [p for p in lab_ports if listening(p)]
    assert not busy, f"ports still bound: {busy}"


def listening(port: int) -> bool:
    """Something holds the port (SO_REUSEADDR: a closed connection in TIME_WAIT does not)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ports.LOOPBACK, port))
        except OSError:
            return True
    return False


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    registry = tmp_path / "labs"
    monkeypatch.setenv("REDIS_MESH_LAB_HOME", str(registry))
    yield registry
    for child in registry.glob("*"):
        if child.is_dir() and not child.name.startswith("."):
            cli("down", "--name", child.name)
    assert processes_under(str(registry)) == []


def start_up(*args: str, cwd: Path = ROOT,
             env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "lab", "up", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def read_until(process: subprocess.Popen[bytes], needle: str, timeout: float = 120,
               stdout: bool = False) -> str:
    """Read the process's stderr (or stdout) as it comes (progress lines end only when a
    step ends)."""
    stream = process.stdout if stdout else process.stderr
    assert stream is not None
    seen = b""
    deadline = time.monotonic() + timeout
    fd = stream.fileno()
    while needle.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or (process.poll() is not None and not select.select([fd], [], [], 0)[0]):
            raise AssertionError(f"{needle!r} never appeared: {seen.decode(errors='replace')}")
        if select.select([fd], [], [], min(left, 0.5))[0]:
            chunk = os.read(fd, 4096)
            if not chunk and process.poll() is not None:
                continue
            seen += chunk
    return seen.decode(errors="replace")


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


# ---- the lock -----------------------------------------------------------------------------


def test_a_held_lock_refuses_at_once(home: Path):
    with locks.lab_lock("busy", "being brought up"):
        started = time.monotonic()
        one_line_error(cli("up", "--name", "busy"), f"lab busy is being brought up by pid "
                                                    f"{os.getpid()}")
        one_line_error(cli("down", "--name", "busy"), "is being brought up")
        assert time.monotonic() - started < 30
    assert locks.held_by("busy") is None


def _hold_silently(name: str) -> int:
    """Take the lab's lock the way a holder does in its first instant: locked, nothing written."""
    paths.locks_dir().mkdir(parents=True, exist_ok=True)
    fd = os.open(locks.lock_path(name), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_a_lock_taken_this_instant_is_read_again_not_reported_anonymously(home: Path):
    # CI once met the winner of an `up` race between its flock and its pid being written
    fd = _hold_silently("instant")
    writer = threading.Timer(0.1, lambda: os.pwrite(fd, b"4242 being brought up\n", 0))
    writer.start()
    try:
        with (pytest.raises(locks.LabBusy, match="lab instant is being brought up by pid 4242"),
              locks.lab_lock("instant", "being brought up")):
            pass
    finally:
        writer.join()
        os.close(fd)


def test_a_lock_let_go_this_instant_is_taken(home: Path):
    fd = _hold_silently("letgo")  # a holder that emptied the file and is about to close it
    closer = threading.Timer(0.1, os.close, (fd,))
    closer.start()
    try:
        with locks.lab_lock("letgo", "being brought up") as held:
            assert held is not None
    finally:
        closer.join()


def test_a_lock_that_stays_silent_is_reported_without_waiting_long(home: Path):
    fd = _hold_silently("mute")
    try:
        started = time.monotonic()
        with (pytest.raises(locks.LabBusy, match="lab mute is held by another process"),
              locks.lab_lock("mute", "being brought up")):
            pass
        assert time.monotonic() - started < 5
    finally:
        os.close(fd)


# ---- manifests that would produce nothing -------------------------------------------------


def _edit_yaml(path: Path, edit) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    edit(docs)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def _patches_oops(docs):
    docs[0]["spec"]["configPatches"] = "oops"


def _patches_empty(docs):
    docs[0]["spec"]["configPatches"] = []


def _mis_kinded(docs):
    docs[0]["kind"] = "EnvoyFilters"


def _replicas_six(docs):
    for doc in docs:
        if doc.get("kind") == "StatefulSet":
            doc["spec"]["replicas"] = "six"


def _unknown_directive(docs):
    for doc in docs:
        if doc.get("kind") == "ConfigMap":
            doc["data"]["redis.conf"] += "\nno-such-directive yes\n"


def _tcp_proxy_instead(docs):
    value = docs[0]["spec"]["configPatches"][0]["patch"]["value"]
    value.clear()
    value.update({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": "plain", "cluster": "outbound|6379||redis-cluster.redis.svc.cluster.local"}})


PROXY_FILTER = "istio/envoyfilter-redis-proxy-with-mirror.yaml"


@needs_binaries
@pytest.mark.parametrize(("relpath", "edit", "needles"), [
    (PROXY_FILTER, _patches_oops, (PROXY_FILTER, "configPatches must be a non-empty list")),
    (PROXY_FILTER, _patches_empty, (PROXY_FILTER, "would change nothing")),
    (PROXY_FILTER, _mis_kinded, (PROXY_FILTER, "no EnvoyFilter in it")),
    ("k8s/redis-cluster.yaml", _replicas_six, ("k8s/redis-cluster.yaml", "'six'")),
    ("k8s/redis-cluster.yaml", _unknown_directive, ("redis-cluster-0 exited",
                                                    "no-such-directive")),
    (PROXY_FILTER, _tcp_proxy_instead, (PROXY_FILTER, "has no envoy.filters.network.redis_proxy",
                                        "127.0.10.1_6379")),
])
def test_manifest_that_produces_nothing_fails_up(home: Path, tmp_path: Path, relpath: str,
                                                 edit, needles):
    copy = tmp_path / "manifests"
    shutil.copytree(paths.manifests_dir(), copy)
    _edit_yaml(copy / relpath, edit)
    result = cli("up", "--name", "nothing", env={"REDIS_MESH_LAB_MANIFESTS": str(copy)})
    one_line_error(result, *needles)
    assert_nothing_left(home, "nothing")


@needs_binaries
def test_redis_cli_timeout_is_one_line(home: Path, tmp_path: Path):
    fake = tmp_path / "redis-cli"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o755)
    result = cli("up", "--name", "slow", env={"REDIS_MESH_LAB_REDIS_CLI": str(fake),
                                             "REDIS_MESH_LAB_CLUSTER_CREATE_TIMEOUT": "1"})
    one_line_error(result, "redis-cli --cluster create did not finish in 1s")
    assert_nothing_left(home, "slow")


def test_listeners_never_share_ports():
    from lab.envoy import bootstrap

    boot = bootstrap.build({"listeners": [{"name": "a"}, {"name": "b"}], "clusters": []},
                           "/x/envoy-admin.sock", "id", lambda h, p: None)
    assert all(listener["enable_reuse_port"] is False
               for listener in boot["static_resources"]["listeners"])
    # one shared accept socket: the workers get the connections dealt evenly, not raced for
    assert all(listener["connection_balance_config"] == {"exact_balance": {}}
               for listener in boot["static_resources"]["listeners"])
    assert boot["admin"]["address"] == {"pipe": {"path": "/x/envoy-admin.sock", "mode": 0o600}}


def test_proxy_check_reads_the_listener_filters():
    dump = {"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                         "static_listeners": [{"listener": {"name": "127.0.10.1_6379",
                                                            "filter_chains": [{"filters": [
                                                                {"name": "envoy.filters.network."
                                                                         "tcp_proxy"}]}]}}]}]}
    with pytest.raises(LabError, match=r"has no envoy\.filters\.network\.redis_proxy.*f\.yaml"):
        proof.check_redis_proxy(json.dumps(dump), "127.0.10.1_6379", "f.yaml")
    with pytest.raises(LabError, match=r"no listener 127\.0\.10\.1_9"):
        proof.check_redis_proxy(json.dumps(dump), "127.0.10.1_9", "f.yaml")
    chain = dump["configs"][0]["static_listeners"][0]["listener"]["filter_chains"][0]
    chain["filters"][0]["name"] = proof.REDIS_PROXY_FILTER
    proof.check_redis_proxy(json.dumps(dump), "127.0.10.1_6379", "f.yaml")


# ---- interruptions ------------------------------------------------------------------------


@needs_binaries
@pytest.mark.parametrize(("moment", "sig"), [
    ("start 6 redis-server", signal.SIGTERM),
    ("--cluster create", signal.SIGHUP),
    ("wait for cluster_state", signal.SIGINT),
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
    process = start_up("--name", "killed")
    read_until(process, "--cluster create")
    process.kill()
    process.wait(timeout=30)
    state = json.loads((home / "killed" / "state.json").read_text())
    assert state["phase"] == "starting" and len(state["processes"]) == 7
    lab_ports = journal_ports(home, "killed")
    assert processes_under(str(home))  # the leftovers are there...
    listing = cli("list")
    assert "interrupted" in listing.stdout
    down = cli("down", "--name", "killed")
    assert down.returncode == 0 and "stop 7 processes" in down.stderr, down.stderr
    assert_nothing_left(home, "killed", lab_ports)  # ...and down removed them all


@needs_binaries
def test_next_up_after_a_killed_up_cleans_the_leftovers(home: Path):
    process = start_up("--name", "again")
    read_until(process, "start Envoy")
    process.kill()
    process.wait(timeout=30)
    old_ports = journal_ports(home, "again")
    up = cli("up", "--name", "again")
    assert up.returncode == 0, up.stderr
    assert "was interrupted; removing" in up.stderr
    new_ports = journal_ports(home, "again")
    assert cli("down", "--name", "again").returncode == 0
    assert_nothing_left(home, "again", old_ports | new_ports)


# ---- races --------------------------------------------------------------------------------


@needs_binaries
def test_same_name_race_one_wins_the_other_exits_at_once(home: Path):
    first, second = start_up("--name", "race"), start_up("--name", "race")
    results = []
    for process in (first, second):
        _, err = process.communicate(timeout=180)
        results.append((process.returncode, err.decode(errors="replace")))
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "lab race is being brought up by pid" in loser or "already up" in loser, loser
    assert "Traceback" not in loser
    lab_ports = journal_ports(home, "race")
    assert cli("down", "--name", "race").returncode == 0
    assert_nothing_left(home, "race", lab_ports)


@needs_binaries
@pytest.mark.parametrize("registries", ["one registry", "two registries"])
def test_two_labs_racing_for_one_proxy_port(home: Path, registries: str):
    """Two labs asking for one --proxy-port at once: one gets it, the other fails in one line.

    With two registries nothing serialises them but the port itself (held, then bound by
    Envoy without SO_REUSEPORT).
    """
    other = home.parent / "other-labs" if registries == "two registries" else home
    # a port no lab chooses (nodes 20000-29999, their bus ports 30000-39999) and the kernel
    # gives no client socket (ephemeral 32768-60999): only the two racers want it, even
    # with other labs coming up at the same time (pytest-xdist)
    port = ports.pick(1, low=10000, high=19999)[0]
    first = start_up("--name", "port-a", "--proxy-port", str(port))
    second = start_up("--name", "port-b", "--proxy-port", str(port),
                      env={"REDIS_MESH_LAB_HOME": str(other)})
    results = {}
    for name, process in (("port-a", first), ("port-b", second)):
        _, err = process.communicate(timeout=180)
        results[name] = (process.returncode, err.decode(errors="replace"))
    winners = [name for name, (code, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    loser = next(name for name in results if name not in winners)
    code, err = results[loser]
    assert code == 2 and "Traceback" not in err, err
    assert f"--proxy-port {port} is already in use" in err
    registry_of = {"port-a": home, "port-b": other}
    assert_nothing_left(registry_of[loser], loser)
    winner = winners[0]
    env = {"REDIS_MESH_LAB_HOME": str(registry_of[winner])}
    status = json.loads(cli("status", "--name", winner, "--json", env=env).stdout)
    assert status["proxy"]["port"] == port
    lab_ports = journal_ports(registry_of[winner], winner)
    assert cli("down", "--name", winner, env=env).returncode == 0
    assert_nothing_left(registry_of[winner], winner, lab_ports)


@needs_binaries
def test_a_port_taken_between_choice_and_bind_is_retried(home: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    """Another program binds a chosen port in the instant after the lab lets go of it:
    the node (and Envoy) fail to bind, cleanly, and `up` starts them on other ports."""
    from lab.backends.base import UpOptions
    from lab.backends.local import LocalBackend
    from lab.progress import Progress

    stolen: dict[str, int] = {}
    competitors: list[socket.socket] = []
    release = ports.Holds.release

    def racing_release(self: ports.Holds, *released: int) -> None:
        release(self, *released)
        kind = "node" if len(released) == 2 else "proxy" if len(released) == 1 else ""
        if kind and kind not in stolen:
            sock = socket.socket()
            sock.bind((ports.LOOPBACK, released[0]))
            sock.listen()
            competitors.append(sock)
            stolen[kind] = released[0]

    monkeypatch.setattr(ports.Holds, "release", racing_release)
    backend = LocalBackend()
    try:
        state = backend.up(UpOptions(name="stolen"), Progress(quiet=True))
        assert set(stolen) == {"node", "proxy"}
        assert state.proxy.port != stolen["proxy"]
        assert stolen["node"] not in {n.port for n in state.topology.nodes}
        logs = (home / "stolen" / "logs")
        assert ports.IN_USE in (logs / "redis-cluster-0.log").read_text()
        # (Envoy's own log is reopened by the retry, so its first complaint may be gone)
        assert [p.name for p in state.processes].count("redis-cluster-0") == 1
        with redis.Redis(ports.LOOPBACK, state.proxy.port, protocol=2) as client:
            assert client.set("k", "v") and client.get("k") == b"v"
        lab_ports = journal_ports(home, "stolen")
    finally:
        backend.down("stolen", Progress(quiet=True))
        for sock in competitors:
            sock.close()
    assert_nothing_left(home, "stolen", lab_ports)


# ---- a running lab ------------------------------------------------------------------------


# The tests of the module's lab (`running`), in this order: under pytest-xdist with --dist
# loadgroup (as `nox -s tests` runs) one worker runs them all, so the lab is brought up once.
ON_THE_LAB = pytest.mark.xdist_group("test_lifecycle.running")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    if not _has_binaries():
        pytest.skip("redis-server/envoy not installed")
    registry = tmp_path_factory.mktemp("running") / "labs"
    env = {"REDIS_MESH_LAB_HOME": str(registry)}
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    up = subprocess.run([sys.executable, "-m", "lab", "up", "--name", "live"], cwd=elsewhere,
                        capture_output=True, text=True, timeout=180, check=False,
                        env={**os.environ, **env, "PYTHONPATH": str(ROOT)})
    assert up.returncode == 0, up.stderr
    assert "redis-mesh-lab cli --name live" in up.stdout
    status = json.loads(cli("status", "--name", "live", "--json", env=env).stdout)
    yield registry, status
    lab_ports = journal_ports(registry, "live")
    down = subprocess.run([sys.executable, "-m", "lab", "down", "--name", "live"],
                          cwd=tmp_path_factory.mktemp("third"), capture_output=True, text=True,
                          timeout=120, check=False,
                          env={**os.environ, **env, "PYTHONPATH": str(ROOT)})
    assert down.returncode == 0, down.stderr
    assert_nothing_left(registry, "live", lab_ports)


def _has_binaries() -> bool:
    from tests.conftest import has_binaries

    return has_binaries()


@ON_THE_LAB
def test_status_json_is_camel_case_with_paths(running):
    registry, status = running
    assert status["directory"] == str(registry / "live")
    assert status["envoyConfig"] == str(registry / "live" / "envoy.json")
    assert status["admin"] == {"socket": str(registry / "live" / "envoy-admin.sock")}
    assert set(status["logs"]) >= {"envoy", "redis-mirror", "redis-cluster-0"}
    assert all(Path(p).is_file() for p in status["logs"].values())
    assert status["problems"] == [] and status["dead"] == []

    def snake(value) -> list[str]:
        if isinstance(value, dict):
            return [k for k in value if "_" in k] + [s for v in value.values() for s in snake(v)]
        if isinstance(value, list):
            return [s for v in value for s in snake(v)]
        return []

    assert snake(status) == []
    listing = json.loads(cli("list", "--json", env={"REDIS_MESH_LAB_HOME": str(registry)}).stdout)
    assert listing[0]["name"] == "live" and snake(listing) == []
    table = cli("list", env={"REDIS_MESH_LAB_HOME": str(registry)}).stdout.splitlines()
    assert table[0].split() == ["NAME", "BACKEND", "PHASE", "RUNNING", "PROXY"]


@ON_THE_LAB
def test_version_and_cli_command(running):
    registry, _ = running
    env = {"REDIS_MESH_LAB_HOME": str(registry)}
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("redis-mesh-lab ")
    assert cli("cli", "--name", "live", "SET", "via-cli", "1", env=env).stdout.strip() == "OK"
    assert cli("cli", "--name", "live", "GET", "via-cli", env=env).stdout.strip() == "1"
    node = cli("cli", "--name", "live", "--node", "redis-cluster-0", "CONFIG", "GET",
               "cluster-node-timeout", env=env)
    assert node.stdout.split() == ["cluster-node-timeout", "2000"], node.stdout + node.stderr
    delay = cli("cli", "--name", "live", "--node", "redis-cluster-3", "CONFIG", "GET",
                "repl-diskless-sync-delay", env=env)
    assert delay.stdout.split() == ["repl-diskless-sync-delay", "0"], delay.stdout + delay.stderr
    ping = cli("cli", "--name", "live", "--node", "redis-cluster-0", "CONFIG", "GET",
               "repl-ping-replica-period", env=env)
    assert ping.stdout.split() == ["repl-ping-replica-period", "1"], ping.stdout + ping.stderr
    one_line_error(cli("cli", "--name", "live", "--node", "nope", env=env),
                   "valid: redis-cluster-0")


@ON_THE_LAB
def test_status_into_a_closed_pipe(running):
    registry, _ = running
    env = {**os.environ, "REDIS_MESH_LAB_HOME": str(registry), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(f"'{sys.executable}' -m lab status --name live | head -1",
                            shell=True, capture_output=True, text=True, env=env, timeout=60,
                            check=False, cwd=ROOT)
    assert result.stdout.startswith("lab live")
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


@ON_THE_LAB
def test_readiness_round_trip_refuses_a_node_that_answers_moved(running):
    _, status = running
    topology = Topology.from_list(status["shards"])
    master = topology.shards[0].master
    with pytest.raises(LabError, match="answered MOVED"):
        proof.check_round_trip(lambda: redis.Redis(master.host, master.port, protocol=2),
                               topology, master.address, "the-filter.yaml")
    proof.check_round_trip(lambda: redis.Redis(status["proxy"]["host"], status["proxy"]["port"],
                                               protocol=2), topology, "proxy", "f.yaml")


@ON_THE_LAB
def test_another_user_cannot_reconfigure_or_wreck_a_node(running):
    """A neighbour with no password: no CONFIG, CLUSTER RESET, FLUSHALL, CLIENT KILL, MONITOR,
    MIGRATE, PSYNC ... on a node or on the mirror; the proxy's own commands stay open."""
    _, status = running
    target = Topology.from_list(status["shards"]).shards[0].master
    other_user.assert_refused_everything(target)
    other_user.assert_refused_everything(Node("redis-mirror", status["mirror"]["host"],
                                              status["mirror"]["port"]))
    other_user.assert_proxy_needs_served(target)
    # the traffic path is unchanged: the same user, no auth, through the proxy
    proxy = other_user.as_other_user([other_user.system_redis_cli(), "-h",
                                      status["proxy"]["host"], "-p",
                                      str(status["proxy"]["port"]), "SET", "other-user", "1"])
    assert proxy.stdout.strip() == "OK", proxy.stdout + proxy.stderr


def _admin_clients(registry: Path, status: dict) -> list[redis.Redis]:
    password = (registry / "live" / "admin.password").read_text().strip()
    return [redis.Redis(n.host, n.port, username="rml-admin", password=password,
                        socket_timeout=5) for n in Topology.from_list(status["shards"]).nodes]


@ON_THE_LAB
def test_status_names_an_uncovered_slot_and_exits_non_zero(running):
    """A slot no node serves (the ConfigMap's cluster-require-full-coverage no keeps
    cluster_state:ok): status exits 1 naming it; once it is served again, status is clean."""
    registry, status = running
    env = {"REDIS_MESH_LAB_HOME": str(registry)}
    owner = Topology.from_list(status["shards"]).shards[0]
    slot = owner.slots[0][0]
    clients = _admin_clients(registry, status)
    try:
        for client in clients:  # every node forgets the slot: nobody serves it
            client.execute_command("CLUSTER", "DELSLOTS", slot)
        wait_for(lambda: all(b"cluster_slots_assigned:16383" in c.execute_command(
            "CLUSTER", "INFO") for c in clients), 30, "every node without the slot")
        broken = cli("status", "--name", "live", env=env)
        assert broken.returncode == 1, broken.stdout + broken.stderr
        assert "problem: 1 of 16,384 slots are served by no node" in broken.stdout, broken.stdout
    finally:
        master = next(c for c, n in zip(clients, Topology.from_list(status["shards"]).nodes,
                                        strict=True) if n.name == owner.master.name)
        master.execute_command("CLUSTER", "ADDSLOTS", slot)
        wait_for(lambda: all(b"cluster_slots_assigned:16384" in c.execute_command(
            "CLUSTER", "INFO") for c in clients), 30, "every node serving the slot again")
        for client in clients:
            client.close()
    healed = cli("status", "--name", "live", env=env)
    assert healed.returncode == 0 and "problem" not in healed.stdout, healed.stdout


@ON_THE_LAB
def test_another_user_cannot_reach_the_admin_socket(running):
    _, status = running
    sock = status["admin"]["socket"]
    assert os.stat(sock).st_mode & 0o777 == 0o600
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    probe = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
             f"try:\n s.connect({sock!r})\nexcept OSError as e:\n print(type(e).__name__)\n"
             "else:\n print('CONNECTED')\n")
    result = other_user.as_other_user([python, "-c", probe])
    assert result.stdout.strip() == "PermissionError", result.stdout + result.stderr
    # the owner reaches it (what `status` and the Lab handle do)
    with socket.socket(socket.AF_UNIX) as own:
        own.connect(sock)


@ON_THE_LAB
def test_lab_client_is_the_admin_user(running):
    registry, _ = running
    from lab.backends.local import LocalAccess
    from lab.handle import Lab
    from lab.state import LabState

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REDIS_MESH_LAB_HOME", str(registry))
        state = LabState.load("live")
        assert state is not None
        handle = Lab(state, LocalAccess(state))
        try:
            node = handle.nodes[0]
            assert handle.client(node).execute_command("ACL", "WHOAMI") in (b"rml-admin",
                                                                           "rml-admin")
            assert handle.admin("/ready").strip() == "LIVE"
        finally:
            handle.close()


@ON_THE_LAB
def test_attach_to_a_lab_with_a_dead_envoy_stops_in_one_line(running, tmp_path: Path):
    """Last of the module's lab tests: it kills Envoy and a master."""
    registry, status = running
    env = {**os.environ, "REDIS_MESH_LAB_HOME": str(registry), "PYTHONPATH": str(ROOT)}
    state = json.loads((registry / "live" / "state.json").read_text())
    by_name = {p["name"]: p for p in state["processes"]}
    topology = Topology.from_list(status["shards"])
    master = topology.shards[0].master
    replica = topology.shards[0].replicas[0]
    for name in ("envoy", master.name):
        entry = by_name[name]
        procs.terminate(Process(name, entry["pid"], started=entry["started"]),
                        sig=signal.SIGKILL)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                             "--lab-backend", "attach", "--lab-name", "live",
                             str(ROOT / "suites"), "-q"], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=120, check=False)
    assert time.monotonic() - started < 60
    assert result.returncode == 11, result.stdout + result.stderr
    text = result.stdout + result.stderr
    assert "lab 'live' is not healthy" in text and "Envoy's admin" in text
    assert f"{master.name} ({master.address}) does not answer" in text
    assert " passed" not in text and " failed" not in text

    # status tells the truth: the failed-over master, the dead processes named
    def promoted():
        now = json.loads(subprocess.run([sys.executable, "-m", "lab", "status", "--name",
                                         "live", "--json"], capture_output=True, text=True,
                                        env=env, timeout=60, check=False, cwd=tmp_path).stdout)
        shards = now.get("shards") or []
        return now if any(s["master"]["name"] == replica.name for s in shards) else None

    now = wait_for(promoted, 30, f"{replica.name} to be shown as master")
    assert set(now["dead"]) == {"envoy", master.name}
    assert any(master.name in p for p in now["problems"])
    text = subprocess.run([sys.executable, "-m", "lab", "status", "--name", "live"],
                          capture_output=True, text=True, env=env, timeout=60, check=False,
                          cwd=tmp_path)
    assert text.returncode == 1
    assert f"not running: envoy, {master.name}" in text.stdout or \
        f"not running: {master.name}, envoy" in text.stdout, text.stdout
    assert f"master {replica.name}" in text.stdout


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


@needs_binaries
def test_admin_socket_under_a_long_registry_path(tmp_path: Path):
    """A socket path beyond the kernel's 108 bytes: Envoy binds it relative to the lab's
    directory and the lab's tooling reaches it through /proc/self/fd."""
    registry = tmp_path / ("r" * 80)
    env = {"REDIS_MESH_LAB_HOME": str(registry)}
    up = cli("up", "--name", "long-socket-path", env=env)
    assert up.returncode == 0, up.stderr
    try:
        status = json.loads(cli("status", "--name", "long-socket-path", "--json", env=env).stdout)
        assert len(status["admin"]["socket"]) > 108 and status["problems"] == []
    finally:
        lab_ports = journal_ports(registry, "long-socket-path")
        assert cli("down", "--name", "long-socket-path", env=env).returncode == 0
    assert_nothing_left(registry, "long-socket-path", lab_ports)
