"""`nox -s e2e`'s single report and verdict (lab.conformance.combine)."""

from __future__ import annotations

from lab.conformance.combine import EXPECTED, combine, problems


def _profile(name: str, result: str, features: dict[str, str]) -> dict:
    return {"name": name, "result": result,
            "features": {f: {"result": v, "tests": []} for f, v in features.items()}}


def _reports(tutorial: str, extended: dict[str, str]) -> tuple[dict, dict]:
    return ({"labs": ["a"], "profiles": [_profile("tutorial", tutorial,
                                                   {"Sharding": tutorial})]},
            {"labs": ["b"], "profiles": [_profile("extended", "incomplete", extended)]})


def test_both_profiles_in_one_report_with_the_expected_failures(monkeypatch):
    monkeypatch.setitem(EXPECTED, "ScaleOut", "not built")
    report = combine(*_reports("success", {"MultiKey": "success", "ScaleOut": "notCovered"}))
    assert [p["name"] for p in report["profiles"]] == ["tutorial", "extended"]
    assert report["labs"] == ["a", "b"]
    assert report["expectedFailures"] == [{"feature": "ScaleOut", "reason": "not built"}]
    assert problems(report) == []


def test_a_failing_tutorial_profile_fails_the_run():
    report = combine(*_reports("failure", {"MultiKey": "success"}))
    assert problems(report) and "tutorial" in problems(report)[0]


def test_an_unexpected_extended_failure_fails_the_run_a_partial_one_does_not():
    report = combine(*_reports("success", {"MultiKey": "failure", "Transactions": "partial",
                                           "Failover": "notCovered"}))
    assert problems(report) == ["extended feature MultiKey: failure",
                                "extended feature Failover: notCovered"]
