"""The benchmark machinery: redis-benchmark's output, run sizing, interleaving, charts,
and Envoy's --concurrency reaching the lab."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import statistics
from pathlib import Path

import pytest

from lab.backends.base import UpOptions
from lab.backends.local import LocalAccess, LocalBackend
from lab.bench import charts, overhead, redisbench, report
from lab.bench.redisbench import Result, Target
from lab.errors import LabError
from lab.progress import Progress
from tests.conftest import cli, needs_binaries

DATA = Path(__file__).parent / "data"


def test_threaded_throughput_is_read_from_the_ticks_not_the_rounded_summary():
    # redis-benchmark --cluster (3 threads), 200000 SETs: the summary says 1.50 s, a clock
    # rounded up to the threads' 250 ms tick; the last tick's overall throughput is the real one
    (result,) = redisbench.parse_output(
        (DATA / "redis-benchmark-7.0.15-cluster-set.out").read_text(), threaded=True)
    assert result.test == "SET" and result.requests == 200_000 and result.clock == "ticks"
    assert result.reported_seconds == 1.5 and result.reported_rps == 132890.36
    assert result.rps == 143818.3 and result.seconds == pytest.approx(1.39, abs=0.01)
    assert (result.avg_ms, result.p50_ms, result.p95_ms, result.p99_ms, result.max_ms) == (
        0.244, 0.199, 0.471, 0.743, 9.591)


def test_unthreaded_throughput_is_the_summarys_exact_clock():
    (result,) = redisbench.parse_output(
        (DATA / "redis-benchmark-7.0.15-proxy-mset.out").read_text())
    assert result.test == "MSET (10 keys)" and result.requests == 120_000
    assert result.rps == result.reported_rps and result.clock == "summary"
    assert result.p99_ms == 4.167


@pytest.mark.parametrize("overall", ["9000.0", "999999.0"])
def test_a_tick_the_threaded_summary_rules_out_is_not_believed(overall):
    # 200000 SETs "completed in 1.50 s" (a clock rounded up to 250 ms): the true rate lies
    # between 132890 and 160000 rps; a last tick far outside that is a glitch, not the run's
    text = (DATA / "redis-benchmark-7.0.15-cluster-set.out").read_text()
    summary = text[text.index("====== SET"):]
    (result,) = redisbench.parse_output(
        f"SET: rps=9000.0 (overall: {overall}) avg_msec=0.2 (overall: 0.2)\r" + summary,
        threaded=True)
    assert result.rps == result.reported_rps == 132890.36
    assert result.clock == "summary (ticks implausible)"


def test_a_run_shorter_than_one_tick_falls_back_to_the_summary():
    text = (DATA / "redis-benchmark-7.0.15-proxy-mset.out").read_text()
    summary = text[text.index("====== MSET"):]
    (result,) = redisbench.parse_output("MSET (10 keys): rps=0.0 (overall: -nan) "
                                        "avg_msec=-nan (overall: -nan)\r" + summary,
                                        threaded=True)
    assert result.rps == 17798.87


def test_output_without_a_7x_summary_is_refused():
    with pytest.raises(LabError, match=r"redis-tools >= 7\.0"):
        redisbench.parse_output('"SET","23272.05"\n')
    with pytest.raises(LabError, match="no throughput or latency percentiles"):
        redisbench.parse_output("====== SET ======\n  1 requests completed in 0.00 seconds\n")


def test_command_lines():
    direct = Target("127.0.0.1", 7000, cluster=True)
    argv = redisbench.argv("redis-benchmark", direct, "mset", requests=9000, pipeline=16)
    assert argv == ["redis-benchmark", "-h", "127.0.0.1", "-p", "7000", "--cluster", "-c", "50",
                    "-n", "9000", "-r", "100000", "-P", "16", "-t", "mset"]
    assert "--threads" in redisbench.argv("x", Target("h", 1, threads=3), "get", requests=1)
    with pytest.raises(LabError, match="unknown redis-benchmark test"):
        redisbench.argv("x", direct, "flushall", requests=1)


def _fake_runs(monkeypatch: pytest.MonkeyPatch, rps: dict[int, float]) -> list[tuple[int, int]]:
    """redis-benchmark replaced by a fixed throughput per port; records (port, requests)."""
    calls: list[tuple[int, int]] = []

    def run(binary, target, test, *, requests, clients, pipeline, keyspace):
        calls.append((target.port, requests))
        return Result(redisbench.TESTS[test], requests, rps[target.port], 1, 1, 2, 3, 4)

    monkeypatch.setattr(redisbench, "run", run)
    return calls


def test_every_measurement_lasts_the_minimum(monkeypatch: pytest.MonkeyPatch):
    calls = _fake_runs(monkeypatch, {1: 10_000.0, 2: 40_000.0})
    cases = overhead.measure("rb", Target("h", 1), Target("h", 2, cluster=True), reps=3,
                             min_seconds=2.0, commands=("set",), pipelines=(1,))
    (case,) = cases
    assert case["ratio_median"] == 0.25 and case["ratios"] == [0.25, 0.25, 0.25]
    assert case["proxy"]["seconds_min"] >= 2.0 and case["direct"]["seconds_min"] >= 2.0
    # one short calibration per path, then 3 measurements each, the order alternating
    assert [(port, n < 20_000) for port, n in calls[:4]] == [(1, True), (1, False),
                                                             (2, True), (2, False)]
    assert [port for port, n in calls if n >= 20_000] == [1, 2, 2, 1, 1, 2]


def test_the_medians_halfwidth_is_the_large_sample_one_over_log_ratios():
    assert overhead.halfwidth([0.5, 0.5]) == math.inf  # two ratios: no spread to speak of
    assert overhead.halfwidth([0.5] * 5) == 0.0
    logs_sd = statistics.stdev([math.log(0.5), math.log(0.55), math.log(0.6)])
    expected = math.expm1(1.96 * 1.2533 * logs_sd / math.sqrt(3))
    assert overhead.halfwidth([0.5, 0.55, 0.6]) == pytest.approx(expected)


def _noisy_runs(monkeypatch: pytest.MonkeyPatch, proxy_rps: list[float]) -> list[int]:
    """The direct path at 40k rps; the proxy's measured rates in turn (cycling), calibration
    runs included; records the port of every measurement."""
    rates = itertools.cycle(proxy_rps)
    ports: list[int] = []

    def run(binary, target, test, *, requests, clients, pipeline, keyspace):
        ports.append(target.port)
        rps = next(rates) if target.port == 1 else 40_000.0
        return Result(redisbench.TESTS[test], requests, rps, 1, 1, 2, 3, 4)

    monkeypatch.setattr(redisbench, "run", run)
    return ports


def test_a_noisy_case_gets_more_repetitions_up_to_the_cap(monkeypatch: pytest.MonkeyPatch):
    _noisy_runs(monkeypatch, [20_000.0, 30_000.0])  # ratios 0.5 and 0.75 by turns: +-20%
    (case,) = overhead.measure("rb", Target("h", 1), Target("h", 2, cluster=True), reps=5,
                               max_reps=9, min_seconds=0.0, commands=("set",), pipelines=(1,))
    assert case["reps"] == 9 and len(case["proxy"]["runs"]) == 9
    assert case["ratio_ci95_pct"] > 4.0  # the cap stopped it, and the report shows how wide


def test_a_case_stops_once_its_median_is_pinned_down(monkeypatch: pytest.MonkeyPatch):
    # calibration 0.5, then one odd pair (0.6) among steady ones: more pairs until it is
    # outweighed, far fewer than the cap
    _noisy_runs(monkeypatch, [20_000.0, 20_000.0, 24_000.0] + [20_000.0] * 40)
    (case,) = overhead.measure("rb", Target("h", 1), Target("h", 2, cluster=True), reps=5,
                               max_reps=40, min_seconds=0.0, commands=("set",), pipelines=(1,))
    assert 5 < case["reps"] < 40 and case["ratio_median"] == 0.5
    assert case["ratio_ci95_pct"] <= 4.0
    assert overhead.halfwidth(case["ratios"][:-1]) > 0.04  # one pair fewer was not enough


def test_precision_none_measures_exactly_reps(monkeypatch: pytest.MonkeyPatch):
    _noisy_runs(monkeypatch, [20_000.0, 30_000.0])
    (case,) = overhead.measure("rb", Target("h", 1), Target("h", 2, cluster=True), reps=4,
                               precision=None, min_seconds=0.0, commands=("set",),
                               pipelines=(1,))
    assert case["reps"] == 4


def test_the_proxys_per_worker_connections_are_read_from_envoys_stats():
    from lab.envoy.admin import parse_worker_connections

    stats = ("listener.127.0.0.1_0.worker_0.downstream_cx_total: 0\n"
             "listener.127.0.0.1_28692.worker_0.downstream_cx_total: 309\n"
             "listener.127.0.0.1_28692.worker_1.downstream_cx_total: 192\n"
             "listener.admin.main_thread.downstream_cx_total: 5\n")
    assert parse_worker_connections(stats, 28692) == {0: 309, 1: 192}
    assert parse_worker_connections(stats, 6379) == {}


def test_each_proxy_run_records_the_connections_each_worker_took(
        monkeypatch: pytest.MonkeyPatch):
    _fake_runs(monkeypatch, {1: 10_000.0, 2: 40_000.0})
    counters = itertools.count(0, 10)  # worker 0 took 10 more connections per run
    (case,) = overhead.measure("rb", Target("h", 1), Target("h", 2, cluster=True), reps=3,
                               min_seconds=0.0, commands=("set",), pipelines=(1,),
                               workers=lambda: {0: next(counters), 1: 0})
    assert [run["workers"] for run in case["proxy"]["runs"]] == [[10, 0]] * 3
    assert all(run["workers"] is None for run in case["direct"]["runs"])
    assert case["proxy"]["busiest_worker_share_median"] == 1.0


def test_the_report_says_how_lopsided_the_workers_were():
    def run(split: list[int]) -> dict[str, object]:
        return {"workers": split}

    config = {"envoy_concurrency": 2, "cases": [{
        "ratio_median": 0.5, "ratios": [0.5, 0.4, 0.5, 0.55],
        "proxy": {"runs": [run([25, 25]), run([50, 0]), run([30, 20]), run([20, 30])]}}]}
    text = report.worker_split(config)
    assert "the busiest took a median 60% of a run's, at worst 100%" in text
    assert "all on one worker in 1 of 4 runs" in text
    assert "Runs where it took >= 75% (1): ratio a median -20.0%" in text
    assert report.worker_split({"envoy_concurrency": 1, "cases": [{
        "ratio_median": 0.5, "ratios": [0.5], "proxy": {"runs": [run([50])]}}]}) == ""


def test_a_short_measurement_is_resized_and_repeated(monkeypatch: pytest.MonkeyPatch):
    speeds = {1: 10_000.0, 2: 10_000.0}
    calls = _fake_runs(monkeypatch, speeds)
    sizer = overhead.Sizer("rb", min_seconds=2.0)
    case = overhead.Case("get", 1)
    first = sizer.measure("proxy", Target("h", 1), case)
    assert first.seconds >= 2.0
    speeds[1] = 40_000.0  # the machine got faster: the calibrated size is now too small
    second = sizer.measure("proxy", Target("h", 1), case)
    assert second.seconds >= 2.0 and second.requests > first.requests
    assert len(calls) == 4  # calibration, first, short run (not reported), resized run


def test_bench_configs_are_parsed():
    from benchmarks.run import parse_configs

    assert parse_configs("on:1,off:2") == [(True, 1), (False, 2)]
    for bad in ("maybe:1", "on:0", "on"):
        with pytest.raises(LabError):
            parse_configs(bad)


@pytest.mark.skipif(not charts.available(), reason="matplotlib not installed (extra bench)")
def test_report_and_charts_from_saved_figures(tmp_path: Path):
    case = {"test": "SET", "pipeline": 1, "ratio_median": 0.6, "ratio_min": 0.55,
            "ratio_max": 0.66, "ratio_spread_pct": 18.3, "ratios": [0.6],
            "proxy": {"rps_median": 30000, "p50_ms_median": 1.2, "p99_ms_median": 4.0,
                      "seconds_min": 2.1},
            "direct": {"rps_median": 50000, "p50_ms_median": 0.4, "p99_ms_median": 3.0,
                       "seconds_min": 2.3,
                       "runs": [{"clock": "ticks"}, {"clock": "summary (ticks implausible)"}]}}
    figures = {"date": "today", "cores": 2, "load_before": "1", "load_after": "2",
               "redis_benchmark": "7.0.15", "reps": 5, "min_seconds": 2.0, "clients": 50,
               "keyspace": 100000,
               "TimeToReady": [{"backend": "local", "samples_s": [2.4, 2.5], "median_s": 2.45,
                                "min_s": 2.4, "max_s": 2.5, "target_s": 5.0}],
               "ProxyOverhead": [{"mirror": True, "envoy_concurrency": 1, "envoy_version": "1.40.0",
                                  "redis_version": "6.2.5", "read_policy": "REPLICA",
                                  "command_lines": {"proxy": "p", "direct": "d"},
                                  "cases": [case]}]}
    (tmp_path / "benchmarks.json").write_text(json.dumps(figures))
    text = report.render(tmp_path / "benchmarks.json", tmp_path)
    # a run saved before the +-95% and reps columns: its one ratio gives no half-width
    assert "| SET P1 | **0.60** | - | 1 | 0.55-0.66 | 18% |" in text
    assert "the last tick being ruled out by it: SET P1 direct run 2." in text
    for stem in ("bench-overhead-ratios", "bench-latency", "bench-time-to-ready"):
        assert (tmp_path / "charts" / f"{stem}.png").stat().st_size > 5000
        assert (tmp_path / "charts" / f"{stem}.svg").read_text().startswith("<?xml")
        assert f"charts/{stem}.png" in text


def test_envoy_concurrency_below_one_is_a_user_error(no_leaks: Path):
    result = cli("up", "--name", "c0", "--envoy-concurrency", "0")
    assert result.returncode == 2 and "--envoy-concurrency must be at least 1" in result.stderr


@needs_binaries
@pytest.mark.integration
def test_envoy_runs_with_the_concurrency_asked_for(no_leaks: Path):
    backend = LocalBackend()
    state = backend.up(UpOptions(name="conc", envoy_concurrency=1), Progress(quiet=True))
    try:
        info = json.loads(LocalAccess(state).admin_get("/server_info"))
        assert int(info["command_line_options"]["concurrency"]) == 1
    finally:
        backend.down(state.name, Progress(quiet=True))


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="no redis-tools")
def test_redis_benchmark_is_found_and_is_7():
    assert redisbench.version(redisbench.find()).startswith("7.")


@needs_binaries
@pytest.mark.integration
@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="no redis-tools")
def test_bench_script_end_to_end_quick(no_leaks: Path, tmp_path: Path):
    """benchmarks/run.py with the smallest settings: one lab, one rep, short runs."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    done = subprocess.run(  # --precision 0: exactly --reps (else every case runs to the cap)
        [sys.executable, "benchmarks/run.py", "--reps", "1", "--precision", "0", "--seconds",
         "0.2", "--configs", "off:1", "--ups", "1", "--ready-backends", "local", "--no-suite",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads((tmp_path / "benchmarks.json").read_text())
    (config,) = figures["ProxyOverhead"]
    assert config["mirror"] is False and config["envoy_concurrency"] == 1
    assert [c["test"] for c in config["cases"]][:4] == ["SET", "GET", "INCR", "MSET (10 keys)"]
    assert all(c["ratio_median"] > 0 and c["reps"] == 1 for c in config["cases"])
    # the tutorial's appendonly yes was turned off on every node, read back from each
    assert config["appendonly"] == {f"redis-cluster-{i}": "no" for i in range(6)}
    text = (tmp_path / "benchmarks.md").read_text()
    assert "| MSET P16 |" in text
    assert "Persistence: appendonly no on every node for the measurement" in text


@needs_binaries
@pytest.mark.integration
def test_persistence_modes_set_every_nodes_aof(no_leaks: Path):
    from lab.bench import persistence
    from lab.handle import Lab

    backend = LocalBackend()
    state = backend.up(UpOptions(name="aof"), Progress(quiet=True))
    handle = Lab(state, backend.access(state))
    try:
        def enabled() -> set[int]:
            return {int(handle.client(n).info("persistence")["aof_enabled"])
                    for n in handle.nodes}

        assert enabled() == {1}  # the tutorial's redis.conf
        assert set(persistence.apply(handle, "off").values()) == {"no"}
        assert enabled() == {0}
        assert set(persistence.apply(handle, "tutorial").values()) == {"yes"}
        assert enabled() == {1}
    finally:
        handle.close()
        backend.down(state.name, Progress(quiet=True))


def test_reproducibility_compares_median_ratios_case_by_case():
    from lab.bench import compare

    def figures(set_ratio: float, get_ratio: float) -> dict:
        cases = [{"test": "SET", "pipeline": 1, "ratio_median": set_ratio},
                 {"test": "GET", "pipeline": 16, "ratio_median": get_ratio}]
        return {"ProxyOverhead": [{"mirror": True, "envoy_concurrency": 2, "cases": cases}]}

    rows = compare.compare(figures(0.55, 0.30), figures(0.50, 0.40))
    assert [(r["test"], r["change_pct"], r["within"]) for r in rows] == [
        ("SET", 10.0, True), ("GET", -25.0, False)]
    text = compare.markdown(rows, "now", "then")
    assert "1 of 2 median ratios within +-10%" in text
    assert "| mirror on, --concurrency 2 | GET P16 | 0.30 | 0.40 | -25.0% **(outside)** |" in text
