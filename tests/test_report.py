from __future__ import annotations

from pathlib import Path

import yaml

from lab.conformance.report import Collector


def _collector(**outcomes):
    collector = Collector(profile="tutorial")
    for nodeid, (features, outcome) in outcomes.items():
        collector.record(nodeid, features, "call", outcome, "why" if outcome != "passed" else "")
    return collector


def test_feature_results_success_partial_failure_not_covered():
    collector = _collector(
        t1=(("TopologyDiscovery",), "passed"),
        t2=(("Sharding",), "passed"), t3=(("Sharding",), "skipped"),
        t4=(("ReadPolicyReplica",), "failed"), t5=(("ReadPolicyReplica",), "passed"),
    )
    report = collector.build()["profiles"][0]
    results = {name: value["result"] for name, value in report["features"].items()}
    assert results == {"TopologyDiscovery": "success", "Sharding": "partial",
                       "ReadPolicyReplica": "failure", "WriteMirroring": "notCovered"}
    assert report["result"] == "failure"
    assert report["notCovered"] == ["WriteMirroring"]
    assert report["ranWhole"] is True
    assert report["statistics"] == {"passed": 0, "failed": 0, "skipped": 0, "xfailed": 0,
                                    "xpassed": 0, "errors": 0}  # pytest's counts: none given
    assert [t["test"] for t in report["failedTests"]] == ["t4"]
    assert [t["test"] for t in report["skippedTests"]] == ["t3"]


def test_a_failed_teardown_fails_a_passed_test():
    collector = Collector(profile="tutorial")
    collector.record("t", ("Sharding",), "call", "passed")
    collector.record("t", ("Sharding",), "teardown", "failed", "boom")
    assert collector.feature_result("Sharding")[0] == "failure"


def test_all_success_and_written_as_yaml(tmp_path: Path):
    collector = _collector(**{f"t{i}": ((f,), "passed") for i, f in enumerate(
        ["TopologyDiscovery", "Sharding", "ReadPolicyReplica", "WriteMirroring"])})
    collector.implementation = {"envoyVersion": "1.40.0", "backend": "local"}
    data = yaml.safe_load(collector.write(tmp_path / "c.yaml").read_text())
    assert data["kind"] == "ConformanceReport"
    assert data["profiles"][0]["result"] == "success"
    assert data["implementation"]["backend"] == "local"


def test_features_without_tests_are_not_covered_never_partial():
    collector = Collector(profile="extended")
    report = collector.build()["profiles"][0]
    assert {v["result"] for v in report["features"].values()} == {"notCovered"}
    assert report["result"] == "incomplete"
    assert report["notCovered"] == list(report["features"])
    assert any("not covered" in line for line in collector.summary())


def test_a_partial_selection_says_the_profile_was_not_run_whole():
    collector = _collector(t1=(("Sharding",), "passed"))
    collector.record_collected("t2", ("WriteMirroring",))  # deselected
    collector.selection = ["-k Sharding"]
    report = collector.build()["profiles"][0]
    assert report["features"]["Sharding"]["result"] == "success"
    assert report["features"]["WriteMirroring"]["result"] == "notRun"
    assert report["features"]["TopologyDiscovery"]["result"] == "notRun"  # may exist elsewhere
    assert report["result"] == "incomplete"
    assert report["ranWhole"] is False and report["selection"] == ["-k Sharding"]
    assert any("NOT run whole" in line for line in collector.summary())


def test_every_test_skipped_is_skipped_not_success():
    collector = _collector(t1=(("Sharding",), "skipped"))
    assert collector.feature_result("Sharding")[0] == "skipped"


def test_measurements_are_reported_but_never_a_verdict():
    collector = Collector(profile="extended")
    collector.record_measurement("FailoverRecovery", {"recoverySeconds": 9.9, "lostWrites": 0})
    profile = collector.build()["profiles"][0]
    assert profile["measurements"] == {
        "FailoverRecovery": {"recoverySeconds": 9.9, "lostWrites": 0}}
    assert "measurements" not in Collector(profile="extended").build()["profiles"][0]


def test_statistics_count_what_pytest_counts_by_its_categories():
    collector = Collector(profile="tutorial")
    for category in ("passed", "passed", "error", "xfailed", "failed", "deselected", ""):
        collector.count(category)
    assert collector.build()["profiles"][0]["statistics"] == {
        "passed": 2, "failed": 1, "skipped": 0, "xfailed": 1, "xpassed": 0, "errors": 1}


def test_an_expected_failure_is_a_known_failure_with_its_upstream_link():
    collector = Collector(profile="tutorial")
    collector.record("t1", ("Sharding",), "call", "passed")
    collector.record("t2", ("Sharding",), "call", "xfailed", "xfail: envoyproxy/envoy#22729: x")
    profile = collector.build()["profiles"][0]
    assert profile["features"]["Sharding"] == {"result": "partial", "tests": ["t1", "t2"],
                                               "knownFailures": ["t2"]}
    assert profile["skippedTests"] == []
    assert profile["knownFailures"][0]["links"] == [
        "https://github.com/envoyproxy/envoy/issues/22729"]
