"""`nox -s e2e`'s single report and verdict (lab.conformance.combine)."""

from __future__ import annotations

from lab.conformance.combine import EXPECTED, combine, problems, verdict_line


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


def _extended_with_known_failures() -> dict:
    features = {"MultiKey": {"result": "success", "tests": ["m"]},
                "Transactions": {"result": "partial", "tests": ["t1", "t2"],
                                 "knownFailures": ["t2"]},
                "ModernClients": {"result": "partial", "tests": ["c1", "c2"],
                                  "knownFailures": ["c2"]}}
    return {"labs": ["b"], "profiles": [{
        "name": "extended", "result": "incomplete", "features": features,
        "knownFailures": [
            {"test": "t2", "features": ["Transactions"], "reason": "xfail: envoyproxy/envoy#22729",
             "links": ["https://github.com/envoyproxy/envoy/issues/22729"]},
            {"test": "c2", "features": ["ModernClients"], "reason": "xfail: envoyproxy/envoy#44936",
             "links": ["https://github.com/envoyproxy/envoy/issues/44936"]}]}]}


def test_one_verdict_line_names_the_known_upstream_bugs():
    tutorial, _ = _reports("success", {})
    report = combine(tutorial, _extended_with_known_failures())
    assert problems(report) == []
    assert verdict_line(report) == (
        "verdict: tutorial: success; extended: success except Transactions, ModernClients "
        "(known upstream bugs: https://github.com/envoyproxy/envoy/issues/22729, "
        "https://github.com/envoyproxy/envoy/issues/44936)")


def test_the_verdict_line_says_failure_when_the_run_fails(tmp_path):
    import yaml

    from lab.conformance.combine import main

    tutorial, extended = _reports("failure", {"MultiKey": "failure"})
    paths = [tmp_path / "t.yaml", tmp_path / "e.yaml", tmp_path / "out.yaml"]
    paths[0].write_text(yaml.safe_dump(tutorial))
    paths[1].write_text(yaml.safe_dump(extended))
    assert main([str(p) for p in paths]) == 1
    e2e = yaml.safe_load(paths[2].read_text())["e2e"]
    assert e2e["result"] == "failure"
    assert e2e["verdict"] == ("verdict: tutorial: failure (Sharding: failure); "
                              "extended: failure (MultiKey: failure)")
    assert (tmp_path / "verdict.txt").read_text() == e2e["verdict"] + "\n"
