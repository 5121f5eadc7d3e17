"""Redis ACL for a lab's nodes and mirror: the default user cannot reconfigure or write files.

The default user is what Envoy and the tutorial's client use (no auth): it keeps every
data command, CLUSTER SLOTS and READONLY, and loses the commands that change the server's
configuration or make it write files (CONFIG, DEBUG, SAVE, BGSAVE, BGREWRITEAOF, SHUTDOWN,
MODULE, ACL, REPLICAOF/SLAVEOF). The lab's own tooling authenticates as a per-lab admin
user whose password sits in <lab dir>/admin.password (mode 0600). On Redis 7 the protected
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
DENIED = ("config", "debug", "save", "bgsave", "bgrewriteaof", "shutdown", "module", "acl",
          "replicaof", "slaveof")


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


def conf_lines(credentials: Credentials, redis_major: int) -> list[str]:
    """redis.conf directives: the restricted default user and the admin user."""
    denied = " ".join(f"-{command}" for command in DENIED)
    lines = [
        f"user default on nopass ~* &* +@all {denied}",
        f"user {credentials.username} on >{credentials.password} ~* &* +@all",
    ]
    if redis_major >= 7:
        lines += ["enable-protected-configs no", "enable-debug-command no",
                  "enable-module-command no"]
    return lines
