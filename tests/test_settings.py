"""Environment variables: declared once in lab/settings.py, read only through it, documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from lab import settings
from lab.errors import LabError

ROOT = Path(__file__).resolve().parents[1]
# the one other place a name is made: the pytest plugin derives one per option
DECLARED_IN = {ROOT / "lab" / "settings.py", ROOT / "lab" / "conformance" / "options.py"}
A_NAME = re.compile(r"^REDIS_MESH_LAB_[A-Z_]*$")


def test_the_documented_table_is_the_declared_one():
    assert settings.table() in (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")


def test_no_module_spells_a_variable_name_itself():
    """A bare "REDIS_MESH_LAB_..." string outside lab/settings.py is a variable read (or
    written) around the declaration, which the table would then miss."""
    found = []
    for path in sorted([*(ROOT / "lab").rglob("*.py"), *(ROOT / "suites").rglob("*.py")]):
        if path in DECLARED_IN:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and A_NAME.match(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value}")
    assert found == []


def test_names_are_unique_and_prefixed():
    names = [s.name for s in settings.ALL]
    assert len(names) == len(set(names))
    assert all(n.startswith(settings.PREFIX) for n in names)


def test_unset_and_empty_are_the_same(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(settings.TOOLS.name, "")
    assert settings.TOOLS.value() is None and settings.TOOLS.path() is None
    monkeypatch.setenv(settings.TOOLS.name, "/x")
    assert settings.TOOLS.path() == Path("/x")


@pytest.mark.parametrize("value", ["ninety", "0", "-3"])
def test_a_bad_number_of_seconds_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, value):
    monkeypatch.setenv(settings.CLUSTER_CREATE_TIMEOUT.name, value)
    with pytest.raises(LabError, match=f"^REDIS_MESH_LAB_CLUSTER_CREATE_TIMEOUT={value} "):
        settings.CLUSTER_CREATE_TIMEOUT.seconds()


def test_every_binary_variable_is_declared():
    for tool in ("envoy", "redis-server", "redis-cli", "redis-benchmark", "kubectl", "kind",
                 "istioctl", "pilot-discovery"):
        assert settings.binary(tool) in settings.ALL


def test_an_unset_number_of_seconds_is_the_documented_default(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(settings.CLUSTER_CREATE_TIMEOUT.name, raising=False)
    assert settings.CLUSTER_CREATE_TIMEOUT.seconds() == float(settings.CLUSTER_CREATE_TIMEOUT
                                                              .default) == 90
    monkeypatch.setenv(settings.CLUSTER_CREATE_TIMEOUT.name, "30")
    assert settings.CLUSTER_CREATE_TIMEOUT.seconds() == 30
