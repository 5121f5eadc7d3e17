"""The conformance report, shaped like the Gateway API conformance report.

Per profile, each feature is `success` (every test of it passed), `partial` (nothing
failed, but a test was skipped or none ran) or `failure` (a test of it failed).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab.conformance.features import PROFILES


@dataclass
class TestResult:
    nodeid: str
    features: tuple[str, ...]
    outcome: str = "passed"  # passed / failed / skipped
    reason: str = ""


@dataclass
class Collector:
    profile: str
    results: dict[str, TestResult] = field(default_factory=dict)
    implementation: dict[str, Any] = field(default_factory=dict)
    labs: set[str] = field(default_factory=set)

    def record_implementation(self, implementation: dict[str, Any]) -> None:
        """What was under test; with pytest-xdist, one lab per worker."""
        implementation = dict(implementation)
        self.labs.add(str(implementation.pop("lab", "")))
        self.implementation = implementation

    def record(self, nodeid: str, features: tuple[str, ...], when: str, outcome: str,
               reason: str = "") -> None:
        result = self.results.setdefault(nodeid, TestResult(nodeid, features))
        if outcome == "failed":
            result.outcome = "failed"
            result.reason = reason or f"failed in {when}"
        elif outcome == "skipped" and result.outcome != "failed":
            result.outcome, result.reason = "skipped", reason

    def feature_result(self, feature: str) -> tuple[str, list[TestResult]]:
        tests = [r for r in self.results.values() if feature in r.features]
        if any(t.outcome == "failed" for t in tests):
            return "failure", tests
        if tests and all(t.outcome == "passed" for t in tests):
            return "success", tests
        return "partial", tests

    def build(self, date: dt.datetime | None = None) -> dict[str, Any]:
        features = PROFILES[self.profile]
        per_feature: dict[str, Any] = {}
        outcomes = []
        for feature in features:
            result, tests = self.feature_result(feature)
            outcomes.append(result)
            per_feature[feature] = {"result": result,
                                    "tests": [t.nodeid for t in tests]}
        in_profile = [r for r in self.results.values() if set(r.features) & set(features)]
        overall = ("failure" if "failure" in outcomes
                   else "success" if all(o == "success" for o in outcomes) else "partial")
        return {
            "apiVersion": "redis-mesh-lab/v1alpha1",
            "kind": "ConformanceReport",
            "date": (date or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
            "implementation": self.implementation,
            "labs": sorted(lab for lab in self.labs if lab),
            "profiles": [{
                "name": self.profile,
                "result": overall,
                "features": per_feature,
                "statistics": {
                    "Passed": sum(r.outcome == "passed" for r in in_profile),
                    "Failed": sum(r.outcome == "failed" for r in in_profile),
                    "Skipped": sum(r.outcome == "skipped" for r in in_profile),
                },
                "failedTests": [{"test": r.nodeid, "features": list(r.features),
                                 "reason": r.reason}
                                for r in self.results.values() if r.outcome == "failed"],
                "skippedTests": [{"test": r.nodeid, "features": list(r.features),
                                  "reason": r.reason}
                                 for r in self.results.values() if r.outcome == "skipped"],
            }],
        }

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.build(), sort_keys=False), encoding="utf-8")
        return path
