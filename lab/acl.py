"""Redis ACL for a lab's nodes and mirror: the default user keeps only what the proxy needs.

The default user is what Envoy and the tutorial's client use (no auth). It keeps every data
command, the cluster commands Envoy sends (CLUSTER SLOTS, READONLY, ASKING) and CLUSTER's
read-only questions (NODES, which `redis-benchmark --cluster` asks, INFO, MYID, KEYSLOT,
COUNTKEYSINSLOT), and loses every other command of Redis's `@admin` category (CONFIG, DEBUG,
SAVE, SHUTDOWN, MODULE, ACL, REPLICAOF, the CLUSTER subcommands that change slots or
membership, CLIENT, MONITOR, PSYNC/SYNC/REPLCONF, FAILOVER, ...)
plus FLUSHALL, FLUSHDB, SWAPDB and MIGRATE: another local user can neither reconfigure a
node, change the cluster's slots or membership, flush data, kill clients, nor watch the
traffic. Replicas authenticate to their master as the admin user (masteruser/masterauth),
since PSYNC is an admin command. The lab's own tooling authenticates as a per-lab admin user
whose password sits in <lab dir>/admin.password (mode 0600). On Redis 7 the protected
configs, DEBUG and MODULE are also turned off in redis.conf.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError

ADMIN_USER = "rml-admin"
PASSWORD_FILE = "admin.password"
# What the default user loses: a category and commands outside it. `DENIED_NAMES` spells
# out the category for people (status, the command-coverage report); Redis expands it.
DENIED_CATEGORIES = ("admin",)
DENIED_COMMANDS = ("flushall", "flushdb", "swapdb", "migrate")
# What a proxy or a cluster-aware client needs back from `@admin`: CLUSTER SLOTS (Envoy's
# topology discovery) and the other CLUSTER subcommands that only read.
ALLOWED_SUBCOMMANDS = ("cluster|slots", "cluster|nodes", "cluster|info", "cluster|myid",
                       "cluster|keyslot", "cluster|countkeysinslot")
DENIED_NAMES = ("CONFIG", "DEBUG", "SAVE", "BGSAVE", "BGREWRITEAOF", "LASTSAVE", "SHUTDOWN",
                "MODULE", "ACL", "REPLICAOF", "SLAVEOF", "FAILOVER", "PSYNC", "SYNC",
                "REPLCONF", "CLUSTER (but SLOTS, NODES, INFO, MYID, KEYSLOT, "
                "COUNTKEYSINSLOT)", "CLIENT", "MONITOR", "SLOWLOG",
                "LATENCY", "FLUSHALL", "FLUSHDB", "SWAPDB", "MIGRATE")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def redis_kwargs(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}

    def cli_env(self) -> dict[str, str]:
        """For redis-cli: the password through REDISCLI_AUTH, never on the command line."""
        return {"REDISCLI_AUTH": self.password}

    def cli_args(self) -> list[str]:
        return ["--user", self.username]


def create(directory: Path) -> Credentials:
    """A new admin password in <directory>/admin.password, readable by the owner only."""
    password = secrets.token_hex(24)
    path = directory / PASSWORD_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(password + "\n")
    return Credentials(ADMIN_USER, password)


def load(directory: Path) -> Credentials:
    path = directory / PASSWORD_FILE
    try:
        password = path.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise LabError(f"cannot read the lab's admin password {path}: "
                       f"{exc.strerror or exc}") from None
    return Credentials(ADMIN_USER, password)


def user_lines(credentials: Credentials) -> list[str]:
    """ACL file lines: the restricted default user and the admin user."""
    rules = " ".join([*(f"-@{c}" for c in DENIED_CATEGORIES),
                      *(f"-{c}" for c in DENIED_COMMANDS),
                      *(f"+{c}" for c in ALLOWED_SUBCOMMANDS)])
    return [
        f"user default on nopass ~* &* +@all {rules}",
        f"user {credentials.username} on >{credentials.password} ~* &* +@all",
    ]


def replication_lines(credentials: Credentials) -> list[str]:
    """redis.conf directives: a replica syncs from its master as the admin user."""
    return [f"masteruser {credentials.username}", f"masterauth {credentials.password}"]


def conf_lines(credentials: Credentials, redis_major: int) -> list[str]:
    """redis.conf directives: the users, replication's credentials, Redis 7's switches."""
    lines = [*user_lines(credentials), *replication_lines(credentials)]
    if redis_major >= 7:
        lines += ["enable-protected-configs no", "enable-debug-command no",
                  "enable-module-command no"]
    return lines
