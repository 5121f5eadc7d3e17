"""The plugin's options: one prefix, each as a flag, an ini key and an environment variable,
and no clash with other popular plugins loaded in the same pytest."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.conformance.options import OPTIONS
from tests.conftest import ROOT

# Popular plugins that load themselves through pytest11 (installed by the `dev` extra).
NEIGHBOURS = ("pytest-profiling", "pytest-cov", "pytest-timeout", "pytest-mock",
              "pytest-benchmark", "pytest-html", "pytest-rerunfailures", "pytest-xdist",
              "allure-pytest")

PROBE = '''
from lab.conformance import options

def test_probe(request):
    for flag in ("--lab-backend", "--lab-name", "--lab-profile", "--lab-keep", "--lab-istio",
                 "--lab-kubeconfig", "--lab-reports"):
        print(f"{flag}={options.get(request.config, flag)!r}")
'''


def _pytest(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
            ini: str = "") -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(PROBE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n" + ini)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_MESH_LAB_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "-q", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def _values(run: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert run.returncode == 0, run.stdout + run.stderr
    return dict(line.split("=", 1) for line in run.stdout.splitlines() if line.startswith("--lab"))


def test_every_option_is_prefixed_with_env_and_ini_names():
    for option in OPTIONS:
        assert option.flag.startswith("--lab-")
        assert option.ini.startswith("lab_")
        assert option.env.startswith("REDIS_MESH_LAB_")
    assert {o.env for o in OPTIONS} >= {"REDIS_MESH_LAB_BACKEND", "REDIS_MESH_LAB_REPORTS"}


def test_defaults(tmp_path: Path):
    values = _values(_pytest(tmp_path))
    assert values == {"--lab-backend": "'local'", "--lab-name": "None",
                      "--lab-profile": "'tutorial'", "--lab-keep": "False",
                      "--lab-istio": "'modern'", "--lab-kubeconfig": "None",
                      "--lab-reports": "None"}


def test_command_line_then_environment_then_ini(tmp_path: Path):
    ini = "lab_backend = kind\nlab_name = from-ini\nlab_keep = true\nlab_reports = ini-reports\n"
    env = {"REDIS_MESH_LAB_NAME": "from-env", "REDIS_MESH_LAB_PROFILE": "extended",
           "REDIS_MESH_LAB_KEEP": "0"}
    values = _values(_pytest(tmp_path, "--lab-name", "from-flag", env=env, ini=ini))
    assert values["--lab-name"] == "'from-flag'"  # flag beats environment and ini
    assert values["--lab-profile"] == "'extended'"  # environment
    assert values["--lab-keep"] == "False"  # environment beats ini
    assert values["--lab-backend"] == "'kind'"  # ini
    assert values["--lab-reports"] == "'ini-reports'"


def test_a_bad_environment_value_is_a_usage_error_naming_the_choices(tmp_path: Path):
    run = _pytest(tmp_path, env={"REDIS_MESH_LAB_BACKEND": "docker-swarm"})
    assert run.returncode == pytest.ExitCode.USAGE_ERROR
    assert ("REDIS_MESH_LAB_BACKEND='docker-swarm': choose from local, docker, kind, existing, "
            "attach") in run.stdout + run.stderr


def test_loads_next_to_popular_plugins_without_clashes(tmp_path: Path):
    for name in NEIGHBOURS:
        importlib.metadata.version(name)  # installed (the dev extra) or this test is void
    run = _pytest(tmp_path, "--profile", "--timeout", "60", "--reruns", "0",
                  "--benchmark-disable", "--lab-profile", "tutorial", "-p", "xdist")
    assert run.returncode == 0, run.stdout + run.stderr
    helped = _pytest(tmp_path, "--help")
    assert helped.returncode == 0, helped.stderr
    for option in OPTIONS:
        assert option.flag in helped.stdout
    for flag in ("--profile", "--cov", "--timeout", "--benchmark-disable", "--html",
                 "--reruns", "--alluredir", "-n"):
        assert flag in helped.stdout


def _collected(*args: str) -> set[str]:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
         str(ROOT / "suites"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return {line.split("::")[0].rsplit("/", 1)[-1] for line in run.stdout.splitlines()
            if "::" in line}


def test_a_feature_added_with_lab_also_brings_only_its_own_profiles_tests():
    """Profile membership is read from markers: the extended test of Resharding
    (@pytest.mark.profile("extended")) stays out of a tutorial run that adds Resharding."""
    tutorial = _collected("--lab-profile", "tutorial", "--lab-also=Resharding")
    assert "test_resharding.py" in tutorial
    assert "test_ext_resharding.py" not in tutorial
    extended = _collected("--lab-profile", "extended")
    assert {"test_resharding.py", "test_ext_resharding.py"} <= extended


def test_a_profile_marker_naming_no_profile_is_a_usage_error(tmp_path: Path):
    (tmp_path / "test_marked.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.feature('Sharding')\n@pytest.mark.profile('nightly')\n"
        "def test_marked():\n    pass\n")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--lab-profile",
         "tutorial", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 4, run.stdout + run.stderr
    assert "@pytest.mark.profile('nightly') names no profile" in run.stderr
