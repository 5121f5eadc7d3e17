"""The wheel must carry every package and the manifests (an installed CLI needs them)."""

from __future__ import annotations

import tomllib

from tests.conftest import ROOT


def test_every_package_under_lab_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "lab").rglob("__init__.py")}
    assert found <= listed
    assert "lab._manifests" in listed
