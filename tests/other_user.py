"""Acting as another local user (nobody/daemon) against a lab's nodes, with the system's
redis-cli: what an unauthenticated neighbour on the same machine can and cannot do."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

import pytest

from lab.topology import Node

# Every command another local user must be refused on a node and on the mirror: what
# reconfigures a server, changes the cluster's slots or membership, flushes data, controls
# clients, or shows the traffic. redis-cli exits at once on NOPERM, so MONITOR and PSYNC
# end too; `timeout` bounds them in case they are served.
REFUSED: tuple[tuple[str, ...], ...] = (
    ("CONFIG", "SET", "dir", "/tmp"), ("SAVE",), ("DEBUG", "SLEEP", "0"),
    ("SHUTDOWN", "NOSAVE"), ("ACL", "SETUSER", "default", "+@all"),
    ("CLUSTER", "RESET", "HARD"), ("CLUSTER", "ADDSLOTS", "1"),
    ("CLUSTER", "FORGET", "0" * 40), ("CLUSTER", "SETSLOT", "1", "STABLE"),
    ("CLUSTER", "FAILOVER"), ("CLUSTER", "MEET", "127.0.0.1", "1"),
    ("FLUSHALL",), ("FLUSHDB",), ("CLIENT", "KILL", "TYPE", "normal"), ("CLIENT", "LIST"),
    ("MONITOR",), ("MIGRATE", "127.0.0.1", "1", "k", "0", "1000"),
    ("REPLICAOF", "NO", "ONE"), ("PSYNC", "?", "-1"),
)


def other_user() -> pwd.struct_passwd:
    for name in ("nobody", "daemon"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.skip("no unprivileged user to test with")


def as_other_user(argv: list[str]) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to act as another user")
    user = other_user()
    return subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                           "--clear-groups", "timeout", "10", *argv], capture_output=True,
                          text=True, timeout=30, check=False, cwd="/")


def system_redis_cli() -> str:
    redis_cli = shutil.which("redis-cli") or ""
    if not redis_cli or not os.access(redis_cli, os.X_OK):
        pytest.skip("no redis-cli another user can run")
    return redis_cli


def assert_refused_everything(node: Node) -> None:
    """Each of REFUSED answered NOPERM on `node`, for a user with no password."""
    redis_cli = system_redis_cli()
    for command in REFUSED:
        result = as_other_user([redis_cli, "-h", node.host, "-p", str(node.port), *command])
        assert "NOPERM" in result.stdout + result.stderr, (node, command, result.stdout,
                                                          result.stderr)


def assert_proxy_needs_served(node: Node) -> None:
    """What Envoy sends a cluster node stays open to the unauthenticated user."""
    redis_cli = system_redis_cli()
    for command in (("CLUSTER", "SLOTS"), ("CLUSTER", "NODES"), ("READONLY",),
                    ("GET", "other-user-probe")):
        result = as_other_user([redis_cli, "-h", node.host, "-p", str(node.port), *command])
        assert "NOPERM" not in result.stdout + result.stderr and result.returncode == 0, \
            (node, command, result.stdout, result.stderr)
