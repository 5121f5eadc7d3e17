"""Where a run's time goes (lab/bench/timing.py): wall, CPU, waits per timer, targets."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from lab import model, waits
from lab.bench import timing


def test_a_run_is_timed_with_its_cpu_and_the_waits_of_its_report(tmp_path: Path):
    report = tmp_path / "conformance.yaml"
    report.write_text(yaml.safe_dump({"profiles": [{"waits": {
        "replication": {"count": 3, "seconds": 0.4}}}]}))
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n" \
           "print('1 passed in 0.30s')"
    run = timing.timed_run("tutorial profile", [sys.executable, "-c", burn], cwd=tmp_path,
                           report=report)
    assert run.exit_code == 0
    assert run.summary == "1 passed in 0.30s"
    assert run.cpu_s >= 0.25  # the child's CPU, reaped
    assert run.wall_s >= run.cpu_s * 0.9
    assert run.machine_busy_s >= 0.2
    assert run.waits == {"replication": {"count": 3, "seconds": 0.4}}


def test_a_nox_run_is_summed_up_by_nox_s_last_line_and_its_output_kept(tmp_path: Path):
    says = ("import sys; print('tests ran'); "
            "print('nox > Session e2e was successful in 2 minutes.', file=sys.stderr)")
    log = tmp_path / "logs" / "e2e.log"
    run = timing.timed_run("nox -s e2e, fresh clone", [sys.executable, "-c", says],
                           cwd=tmp_path, log=log)
    assert run.summary == "Session e2e was successful in 2 minutes."
    assert "tests ran" in log.read_text() and "successful" in log.read_text()


def test_the_chain_comes_from_the_lab_s_own_envoyfilters():
    spec = model.load_spec("127.0.0.1")
    assert timing.refresh_rate_s(spec.envoyfilter_documents) == 5.0  # the tutorial's 5s
    chain = timing.tutorial_chain(2.0, 5.0)
    assert [link.timer for link in chain] == [waits.NODE_TIMEOUT, waits.REFRESH, waits.REFRESH]
    assert sum(link.seconds for link in chain) == 12.0


def _run(what: str, wall: float, **timers: float) -> dict:
    return {"what": what, "command": "pytest", "wall_s": wall, "cpu_s": 1.0,
            "machine_busy_s": 2.0, "exit_code": 0, "summary": "9 passed",
            "waits": {t.replace("_", "-") if t == "cluster_node_timeout" else t:
                      {"count": 1, "seconds": s} for t, s in timers.items()},
            "load_before": "0.1", "load_after": "0.2"}


def test_the_section_judges_each_target_and_shows_each_timer_s_share():
    chain = [{"timer": waits.NODE_TIMEOUT, "seconds": 2.0, "why": "FAIL"},
             {"timer": waits.REFRESH, "seconds": 5.0, "why": "drop"},
             {"timer": waits.REFRESH, "seconds": 5.0, "why": "back"}]
    text = "\n".join(timing.markdown([
        _run("tutorial profile", 16.0, cluster_refresh_rate=8.0),
        _run("extended profile", 119.0, cluster_node_timeout=30.0, provisioning=20.0),
        _run("nox -s tests", 300.0), _run("nox -s e2e, fresh clone", 200.0),
        _run(".ci/run, builds cached", 1700.0)], chain))
    assert "| tutorial profile | 16 | <= 18 s (1.5 x the chain (12 s)): met |" in text
    assert "| extended profile | 119 | <= 60 s: not met |" in text
    assert "| nox -s tests | 300 | <= 360 s: met |" in text
    assert "| nox -s e2e, fresh clone | 200 | <= 100 s: not met |" in text
    assert "| .ci/run, builds cached | 1700 | <= 1800 s: met |" in text
    assert ("*nox -s e2e, fresh clone*: 200 s against 100 s. It runs the tutorial profile "
            "(16 s above) and the extended one (119 s above) at once; the other 81 s") in text
    assert "| `cluster_refresh_rate` | 8.0 (1, 50%) | - |" in text
    assert "| `cluster-node-timeout` | - | 30.0 (1, 25%) |" in text
    assert "longest timer chain**: 12 s" in text
    assert ("*extended profile*: 119 s against 60 s. It waited 50.0 s, most on "
            "`cluster-node-timeout` 30.0 s in 1 waits, `provisioning` 20.0 s in 1 waits") in text
    assert "*tutorial profile*:" not in text
    assert timing.markdown([], chain) == []


def test_the_bench_runs_the_tests_on_as_many_workers_as_nox_does():
    import re

    from tests.conftest import ROOT

    def workers(path: str, name: str = "TEST_WORKERS") -> str:
        found = re.search(rf"^{name} = (\d+)", (ROOT / path).read_text(), re.M)
        assert found, path
        return found.group(1)

    assert workers("benchmarks/run.py") == workers("noxfile.py")
    assert workers("benchmarks/run.py", "EXTENDED_WORKERS") == workers("noxfile.py",
                                                                        "EXTENDED_WORKERS")
