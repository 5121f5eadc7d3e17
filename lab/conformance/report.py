"""The conformance report, shaped like the Gateway API conformance report.

Per profile, each feature gets one verdict:

- `success`: every selected test of it ran and passed;
- `failure`: a test of it failed (in setup, call or teardown);
- `partial`: nothing failed, some tests passed and some were skipped or are known failures
  (a strict xfail naming its upstream bug: listed under the feature's `knownFailures`);
- `skipped`: every selected test of it was skipped;
- `notRun`: it has tests, but this run did not select any (`-k`, `-m`, node ids);
- `notCovered`: no test proves it (the suite has none for it).

The profile is `success` only when the whole profile ran (no test deselected, no node ids)
and every feature is `success`; `failure` when any feature failed; otherwise `incomplete`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab.conformance.features import PROFILES
from lab.waits import Tally
from lab.waits import add as add_waits

SUCCESS, FAILURE, PARTIAL, SKIPPED, NOT_RUN, NOT_COVERED = (
    "success", "failure", "partial", "skipped", "notRun", "notCovered")
INCOMPLETE = "incomplete"
# pytest's own counts, as its summary line says them ("error" is pytest's word for errors)
STATISTICS = ("passed", "failed", "skipped", "xfailed", "xpassed", "errors")
_ISSUE = re.compile(r"\b([\w.-]+/[\w.-]+)#(\d+)\b")
_URL = re.compile(r"https?://[^\s,;)]+")


def links(reason: str) -> list[str]:
    """The upstream bugs a reason names: `owner/repo#N` (GitHub) and plain URLs."""
    found = [f"https://github.com/{repo}/issues/{number}"
             for repo, number in _ISSUE.findall(reason)]
    return list(dict.fromkeys(found + _URL.findall(reason)))


@dataclass
class TestResult:
    nodeid: str
    features: tuple[str, ...]
    outcome: str = "passed"  # passed / failed / skipped / xfailed (an expected failure)
    reason: str = ""
    title: str = ""


@dataclass
class Collector:
    profile: str
    results: dict[str, TestResult] = field(default_factory=dict)
    implementation: dict[str, Any] = field(default_factory=dict)
    labs: set[str] = field(default_factory=set)
    # Every test the suite has for a feature, selected or not (filled at collection).
    known: dict[str, set[str]] = field(default_factory=dict)
    # Why the profile did not run whole ("-k Sharding", "node ids"); empty when it did.
    selection: list[str] = field(default_factory=list)
    # Figures a test measured (FailoverRecovery...), by name: reported, never a verdict.
    measurements: dict[str, Any] = field(default_factory=dict)
    # pytest's own counts of the run (every test, feature or not), as its summary line
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATISTICS, 0))
    # a verdict was asked for (--lab-profile given, or the shipped suite collected)
    wanted: bool = False
    # what the tests waited on, per timer (lab.waits): reported, never a verdict
    waits: dict[str, Tally] = field(default_factory=dict)

    def count(self, category: str) -> None:
        """One report of pytest's category ("passed", "error", "xfailed"...), as pytest counts."""
        key = "errors" if category == "error" else category
        if key in self.counts:
            self.counts[key] += 1

    def record_measurement(self, name: str, figures: Any) -> None:
        self.measurements[name] = figures

    def record_waits(self, taken: dict[str, Tally]) -> None:
        add_waits(self.waits, taken)

    def record_implementation(self, implementation: dict[str, Any]) -> None:
        """What was under test; with pytest-xdist, one lab per worker."""
        implementation = dict(implementation)
        self.labs.add(str(implementation.pop("lab", "")))
        self.implementation = implementation

    def record_collected(self, nodeid: str, features: tuple[str, ...]) -> None:
        for feature in features:
            self.known.setdefault(feature, set()).add(nodeid)

    def record(self, nodeid: str, features: tuple[str, ...], when: str, outcome: str,
               reason: str = "", *, title: str = "") -> None:
        result = self.results.setdefault(nodeid, TestResult(nodeid, features))
        self.record_collected(nodeid, features)
        if title:
            result.title = title
        if outcome == "failed":
            result.outcome = "failed"
            result.reason = reason or f"failed in {when}"
        elif outcome in ("skipped", "xfailed") and result.outcome != "failed":
            result.outcome, result.reason = outcome, reason

    @property
    def whole(self) -> bool:
        return not self.selection

    def feature_result(self, feature: str) -> tuple[str, list[TestResult]]:
        tests = [r for r in self.results.values() if feature in r.features]
        outcomes = {t.outcome for t in tests}
        if "failed" in outcomes:
            return FAILURE, tests
        if outcomes == {"passed"}:
            return SUCCESS, tests
        if "passed" in outcomes:
            return PARTIAL, tests  # with skipped tests or known failures
        if outcomes and outcomes <= {"skipped", "xfailed"}:
            return SKIPPED, tests
        if self.known.get(feature) or not self.whole:
            return NOT_RUN, tests  # tests exist (or may: only part of the suite was collected)
        return NOT_COVERED, tests

    def verdicts(self) -> dict[str, str]:
        return {f: self.feature_result(f)[0] for f in PROFILES[self.profile]}

    def overall(self) -> str:
        verdicts = self.verdicts().values()
        if FAILURE in verdicts:
            return FAILURE
        if self.whole and all(v == SUCCESS for v in verdicts):
            return SUCCESS
        return INCOMPLETE

    def build(self, date: dt.datetime | None = None) -> dict[str, Any]:
        features = PROFILES[self.profile]
        per_feature: dict[str, Any] = {}
        for feature in features:
            result, tests = self.feature_result(feature)
            known = [t.nodeid for t in tests if t.outcome == "xfailed"]
            per_feature[feature] = {"result": result, "tests": [t.nodeid for t in tests],
                                    **({"knownFailures": known} if known else {})}
        verdicts = self.verdicts()
        return {
            "apiVersion": "redis-mesh-lab/v1alpha1",
            "kind": "ConformanceReport",
            "date": (date or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
            "implementation": self.implementation,
            "labs": sorted(lab for lab in self.labs if lab),
            "profiles": [{
                "name": self.profile,
                "result": self.overall(),
                "ranWhole": self.whole,
                **({"selection": list(self.selection)} if self.selection else {}),
                "notCovered": [f for f, v in verdicts.items() if v == NOT_COVERED],
                "notRun": [f for f, v in verdicts.items() if v == NOT_RUN],
                "features": per_feature,
                "statistics": dict(self.counts),
                **({"measurements": dict(self.measurements)} if self.measurements else {}),
                **({"waits": {name: {"count": t.count, "seconds": round(t.seconds, 3)}
                              for name, t in sorted(self.waits.items())}}
                   if self.waits else {}),
                "failedTests": [{"test": r.nodeid, "features": list(r.features),
                                 "reason": r.reason}
                                for r in self.results.values() if r.outcome == "failed"],
                "skippedTests": [{"test": r.nodeid, "features": list(r.features),
                                  "reason": r.reason}
                                 for r in self.results.values() if r.outcome == "skipped"],
                "knownFailures": [{"test": r.nodeid, "features": list(r.features),
                                   "reason": r.reason, "links": links(r.reason)}
                                  for r in self.results.values() if r.outcome == "xfailed"],
            }],
        }

    def summary(self) -> list[str]:
        """What the terminal shows at the end of a run: one line per fact a reader needs."""
        lines = []
        verdicts = self.verdicts()
        lines.append(", ".join(f"{f}: {v}" for f, v in verdicts.items()))
        covered = [f for f, v in verdicts.items() if v == NOT_COVERED]
        if covered:
            lines.append(f"not covered (no test proves them): {', '.join(covered)}")
        if not self.whole:
            lines.append(f"profile {self.profile} was NOT run whole "
                         f"({'; '.join(self.selection)}): this run cannot conform")
        return lines

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.build(), sort_keys=False), encoding="utf-8")
        return path
