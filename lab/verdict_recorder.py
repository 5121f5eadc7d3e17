"""A pytest plugin for `nox -s mutations` and `nox -s flake` (load it with
`-p lab.verdict_recorder`): writes each test's features, outcome and failure line as JSON
to $REDIS_MESH_LAB_VERDICTS. With $REDIS_MESH_LAB_FEATURE_FAILFAST=1 a test is skipped once
every feature it proves has already failed in this run (a mutant's verdict is per feature:
the first failure decides it, the rest would only cost time)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lab import settings

_features: dict[str, tuple[str, ...]] = {}
_tests: dict[str, dict[str, Any]] = {}
_failed: set[str] = set()


def _of(item: pytest.Item) -> tuple[str, ...]:
    names: list[str] = []
    for marker in item.iter_markers("feature"):
        names.extend(marker.args)
    return tuple(dict.fromkeys(names))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        _features[item.nodeid] = _of(item)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    features = _features.get(item.nodeid, ())
    if settings.FEATURE_FAILFAST.enabled() and features and set(features) <= _failed:
        pytest.skip(f"feature {', '.join(features)} already failed in this run")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    entry = _tests.setdefault(report.nodeid, {
        "features": list(_features.get(report.nodeid, ())), "outcome": "passed", "reason": ""})
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        line = crash.message.splitlines()[0] if crash is not None else str(report.longrepr)
        if entry["outcome"] != "failed":
            entry.update(outcome="failed", reason=f"{report.when}: {line}"[:300])
        _failed.update(entry["features"])
    elif report.skipped and report.when in ("setup", "call") and entry["outcome"] == "passed":
        entry["outcome"] = "skipped"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = settings.VERDICTS.value()
    if not target or hasattr(session.config, "workerinput"):
        return
    Path(target).write_text(json.dumps({"exitstatus": int(exitstatus), "tests": _tests},
                                       indent=2), encoding="utf-8")
