"""The pytest plugin's options: each a command-line flag, an ini key and an environment variable.

Every name carries the plugin's prefix (`--lab-*`, `lab_*`, `REDIS_MESH_LAB_*`), because the
plugin loads itself into every pytest run of an environment where redis-mesh-lab is installed
and must never take a name another plugin uses. Precedence: command line, then environment,
then ini file, then the default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from lab.backends import BACKENDS
from lab.conformance.features import PROFILES

LAB_BACKENDS = (*BACKENDS, "attach")  # --lab-backend: a backend, or a lab already up
ISTIO_PROFILES = ("modern", "tutorial")


@dataclass(frozen=True)
class Option:
    flag: str  # --lab-backend
    default: str | bool | None
    help: str
    choices: tuple[str, ...] | None = None
    boolean: bool = False

    @property
    def ini(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")  # lab_backend

    @property
    def env(self) -> str:
        return "REDIS_MESH_" + self.ini.upper()  # REDIS_MESH_LAB_BACKEND

    @property
    def dest(self) -> str:
        return "redis_mesh_" + self.ini  # argparse dest, unique to this plugin


OPTIONS: tuple[Option, ...] = (
    Option("--lab-backend", "local", "provision a lab on this backend, or attach to one "
           "already up (default: local)", choices=LAB_BACKENDS),
    Option("--lab-name", None, "attach: the lab to use; otherwise the provisioned lab's name "
           "(default: conformance-<random>, unique to the run)"),
    Option("--lab-profile", "tutorial", "ask for a verdict on these features (default: "
           "tutorial, when the shipped suite is collected)", choices=tuple(sorted(PROFILES))),
    Option("--lab-also", None, "features to prove besides the profile's, comma-separated "
           "(e.g. Resharding); reported as features outside the profile"),
    Option("--lab-keep", False, "leave a provisioned lab up after the run, for debugging",
           boolean=True),
    Option("--lab-istio", "modern", "kind/existing: the Istio profile (default: modern)",
           choices=ISTIO_PROFILES),
    Option("--lab-kubeconfig", None, "existing: the cluster's kubeconfig"),
    Option("--lab-reports", None, "write each run's reports into DIR/<UTC timestamp>/ "
           "(DIR/latest points at the newest; default: none are written)"),
)
BY_FLAG = {option.flag: option for option in OPTIONS}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("redis-mesh-lab", "redis-mesh-lab conformance")
    for option in OPTIONS:
        text = f"{option.help} [env {option.env}, ini {option.ini}]"
        if option.boolean:
            group.addoption(option.flag, action="store_true", default=None, dest=option.dest,
                            help=text)
            parser.addini(option.ini, help=option.help, default=None)
        else:
            metavar = "|".join(option.choices) if option.choices else option.ini[4:].upper()
            group.addoption(option.flag, default=None, dest=option.dest, metavar=metavar,
                            choices=option.choices, help=text)
            parser.addini(option.ini, help=option.help, default=None)


def get(config: pytest.Config, flag: str) -> str | bool | None:
    """The option's value: command line, else environment, else ini file, else default."""
    option = BY_FLAG[flag]
    value = config.getoption(option.dest)
    source = flag
    if value is None and os.environ.get(option.env) is not None:
        value, source = os.environ[option.env], option.env
    if value is None:
        ini = config.getini(option.ini)
        if ini is not None and ini != "":
            value, source = ini, f"ini {option.ini}"
    if value is None:
        return option.default
    if option.boolean:
        if isinstance(value, bool):
            return value
        lowered = str(value).strip().lower()
        if lowered not in _TRUE | _FALSE:
            raise pytest.UsageError(f"{source}={value!r}: expected 1/0, true/false, yes/no")
        return lowered in _TRUE
    text = str(value)
    if option.choices and text not in option.choices:
        raise pytest.UsageError(
            f"{source}={text!r}: choose from {', '.join(option.choices)}")
    return text


def given(config: pytest.Config, flag: str) -> bool:
    """The option was set (command line, environment or ini file), not left at its default."""
    option = BY_FLAG[flag]
    return (config.getoption(option.dest) is not None or os.environ.get(option.env) is not None
            or config.getini(option.ini) not in (None, ""))


def text(config: pytest.Config, flag: str) -> str | None:
    value = get(config, flag)
    return None if value is None else str(value)


def flag(config: pytest.Config, name: str) -> bool:
    return bool(get(config, name))
