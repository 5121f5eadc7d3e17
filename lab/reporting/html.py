"""Build a run's single-file HTML report with Allure Report 3 (npm package `allure`, no Java).

`python -m lab.reporting.html [RUN]` reads `RUN/allure-results` and `RUN/conformance.yaml`
(RUN defaults to `reports/latest`) and writes `RUN/html/index.html`:

- the landing tree is grouped by conformance feature, each group named with its verdict
  ("ReadPolicyReplica: failure"); a feature no test proves, or that the run did not select,
  appears as an entry saying so, so every feature of the profile is on the first screen;
- every test carries a link to the run's conformance.yaml and, as labels and in the
  environment panel, the implementation under test;
- the analytics tag Allure puts in its page is removed: opening the report requests nothing
  from the network.

The npm package is installed on first use, at the version pinned in lab/versions.py, into the
project's cache (`<cache>/allure/<version>`, shared by every checkout: a fresh clone does not
install it again), or into `$REDIS_MESH_LAB_TOOLS/allure` when that is set.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sh
import yaml

from lab import paths, settings, versions
from lab.conformance.report import links
from lab.errors import LabError
from lab.reporting import rundir

VERDICT_LABEL = "conformance"
ANALYTICS = re.compile(
    r"<script[^>]*googletagmanager\.com[^>]*>\s*</script>\s*"
    r"(<script>\s*window\.dataLayer[^<]*?</script>)?", re.S)
EXPLAIN = {
    "notCovered": "No test of this suite proves {feature}: the profile cannot conform "
                  "until one does.",
    "notRun": "This run did not select the tests of {feature} (-k, -m or node ids).",
}


def tools_dir() -> Path:
    chosen = settings.TOOLS.path()
    if chosen:
        return chosen / "allure"
    return paths.cache() / "allure" / versions.ALLURE_NPM.split("@", 1)[1]


def _stream(line: str) -> None:
    sys.stderr.write("  " + line)
    sys.stderr.flush()


def ensure_allure() -> Path:
    """The `allure` CLI, installed from the npm registry if it is not there yet."""
    prefix = tools_dir()
    binary = prefix / "node_modules" / ".bin" / "allure"
    wanted = versions.ALLURE_NPM.split("@", 1)[1]
    marker = prefix / ".installed-version"
    if binary.exists() and marker.is_file() and marker.read_text().strip() == wanted:
        return binary
    npm = shutil.which("npm")
    if not npm:
        raise LabError("npm not found: the HTML report needs Node.js 20+ with npm "
                       "(apt-get install nodejs npm)")
    prefix.mkdir(parents=True, exist_ok=True)
    # the cache is shared: two reports built at once install it once, the second waits
    with open(prefix.parent / f".{prefix.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists() and marker.is_file() and marker.read_text().strip() == wanted:
            return binary
        _npm_install(npm, prefix, binary)
        marker.write_text(wanted + "\n")
    return binary


def _npm_install(npm: str, prefix: Path, binary: Path) -> None:
    print(f"installing {versions.ALLURE_NPM} into {prefix} (first use) ...", file=sys.stderr,
          flush=True)
    try:
        sh.Command(npm)("install", "--no-audit", "--no-fund", "--loglevel=error",
                        "--prefix", str(prefix), versions.ALLURE_NPM,
                        _out=_stream, _err=_stream, _timeout=600)
    except sh.ErrorReturnCode as exc:
        raise LabError(f"npm install {versions.ALLURE_NPM} failed (exit {exc.exit_code})") from exc
    if not binary.exists():
        raise LabError(f"npm install {versions.ALLURE_NPM} left no {binary}")


def _features_with_verdicts(conformance: dict[str, Any]) -> tuple[str, dict[str, str], str]:
    """Every profile's features and verdicts (`nox -s e2e` combines two profiles in one)."""
    profiles = conformance["profiles"]
    verdicts = {name: str(value["result"])
                for profile in profiles for name, value in profile["features"].items()}
    names = " + ".join(str(p["name"]) for p in profiles)
    results = {str(p["result"]) for p in profiles}
    overall = results.pop() if len(results) == 1 else ", ".join(
        f"{p['name']} {p['result']}" for p in profiles)
    return names, verdicts, overall


def measurement_lines(conformance: dict[str, Any]) -> dict[str, str]:
    """The headline of each measurement, for the environment panel."""
    found: dict[str, str] = {}
    for profile in conformance["profiles"]:
        for name, figures in (profile.get("measurements") or {}).items():
            if name == "FailoverRecovery" and isinstance(figures, dict):
                lost = sum(int((figures.get(part) or {}).get("lostWrites", 0))
                           for part in ("killedShard", "otherShards"))
                found[name] = (f"{figures.get('recoverySeconds')} s (bound "
                               f"{figures.get('boundSeconds')} s), {lost} acknowledged "
                               "writes lost")
            elif name == "CommandCoverage" and isinstance(figures, dict):
                found[name] = f"{figures.get('served')} of {figures.get('probes')} probes served"
            else:
                found[name] = json.dumps(figures)[:200]
    return found


def implementation_lines(conformance: dict[str, Any]) -> dict[str, str]:
    """The implementation block as the environment panel shows it."""
    from lab.pytest_plugin import implementation_parameters

    lines = implementation_parameters(conformance.get("implementation") or {})
    # the panel cuts keys and values short past ~18 characters: the same facts, shorter
    lines["control plane"] = re.sub(r"^builtin patcher \(redis-mesh-lab (.*)\)$",
                                    r"builtin, v\1", lines["control plane"])
    lines["extra filters"] = lines.pop("extra EnvoyFilters")
    return lines


def _rank(data: dict[str, Any]) -> tuple[bool, int]:
    """Which of one test's results the report keeps: one that ran (not skipped because it is
    outside a profile), then the latest."""
    ran = data.get("status") != "skipped" or _xfail(data) is not None
    return ran, int(data.get("stop") or 0)


def _xfail(data: dict[str, Any]) -> str | None:
    """The reason of an expected failure (allure-pytest reports it as skipped, "XFAIL ...")."""
    message = str((data.get("statusDetails") or {}).get("message") or "")
    return message.removeprefix("XFAIL").strip(" :") if message.startswith("XFAIL") else None


def _known_failure(data: dict[str, Any], reason: str) -> None:
    """An xfail as Allure's known failure: failed, marked known, its upstream bugs linked."""
    data["status"] = "failed"
    details = data.setdefault("statusDetails", {})
    details["known"] = True
    details["message"] = f"Known failure (strict xfail): {reason}"
    data["name"] = f"Known failure: {data.get('name', '')}"
    for url in links(reason):
        issue = re.sub(r"https://github.com/([^/]+/[^/]+)/issues/(\d+)", r"\1#\2", url)
        data.setdefault("links", []).append({"name": issue, "type": "issue", "url": url})


def _container(data: dict[str, Any], kept: set[str]) -> dict[str, Any]:
    """A fixture container as the report shows it: only kept tests, no step without a status
    (Allure's "?" rows: a finalizer pytest ran after the results were written)."""
    data["children"] = [c for c in data.get("children", []) if c in kept]
    for part in ("befores", "afters"):
        data[part] = [step for step in data.get(part, []) if step.get("status")]
        for step in data[part]:
            fixture = str(step.get("name", "")).split("::", 1)[0]
            step["name"] = fixture if part == "befores" else f"{fixture} (teardown)"
    return data


def prepare_results(results: Path, conformance: dict[str, Any], out: Path) -> None:
    """A copy of the Allure results with verdict labels, links and the environment: one
    result per test, expected failures as known failures."""
    profile, verdicts, overall = _features_with_verdicts(conformance)
    link = {"name": "conformance.yaml (this run's verdicts)", "type": "link",
            "url": "../" + rundir.CONFORMANCE}
    out.mkdir(parents=True, exist_ok=True)
    best: dict[str, tuple[Path, dict[str, Any]]] = {}
    containers = []
    for source in results.iterdir():
        if source.name.endswith("-container.json"):
            containers.append(source)
        elif source.name.endswith("-result.json"):
            data = json.loads(source.read_text(encoding="utf-8"))
            # fullName: one test whatever its parameters (a skipped pass records none)
            key = str(data.get("fullName") or data.get("historyId") or source.name)
            if key not in best or _rank(data) > _rank(best[key][1]):
                best[key] = (source, data)
        else:
            shutil.copy2(source, out / source.name)
    for source, data in best.values():
        reason = _xfail(data)
        if reason is not None:
            _known_failure(data, reason)
        features = [lab["value"] for lab in data.get("labels", []) if lab["name"] == "feature"]
        data.setdefault("labels", []).extend(
            {"name": VERDICT_LABEL, "value": f"{f}: {verdicts[f]}"}
            for f in features if f in verdicts)
        data.setdefault("links", []).append(link)
        (out / source.name).write_text(json.dumps(data), encoding="utf-8")
    kept = {str(data.get("uuid")) for _, data in best.values()}
    for source in containers:
        data = _container(json.loads(source.read_text(encoding="utf-8")), kept)
        (out / source.name).write_text(json.dumps(data), encoding="utf-8")
    for feature, verdict in verdicts.items():
        if verdict in EXPLAIN:
            _placeholder(out, feature, verdict, link, _date_ms(conformance))
    # the verdict and the implementation first: the panel shows eight entries before
    # "Show more"; every key short enough to be shown whole
    e2e = conformance.get("e2e") or {}  # nox -s e2e: both profiles, one verdict (short)
    shown = {"e2e verdict": str(e2e["result"])} if e2e else {"profile": f"{profile}: {overall}"}
    environment = {**shown, **implementation_lines(conformance)}
    environment |= measurement_lines(conformance)
    (out / "environment.properties").write_text(
        "".join(f"{_escape(k)}={_escape(v)}\n" for k, v in environment.items()),
        encoding="utf-8")


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(" ", "\\ ").replace(":", "\\:").replace("=", "\\=")


def _placeholder(out: Path, feature: str, verdict: str, link: dict[str, str],
                 when_ms: int) -> None:
    """An entry for a feature with no test result, so the landing tree lists it too."""
    ident = str(uuid.uuid4())
    title = ("Not covered: no test proves " if verdict == "notCovered"
             else "Not run in this run: ") + feature
    (out / f"{ident}-result.json").write_text(json.dumps({
        "uuid": ident, "historyId": f"redis-mesh-lab-{verdict}-{feature}",
        "name": title, "fullName": f"redis-mesh-lab.{verdict}.{feature}",
        "status": "unknown", "stage": "finished",
        "description": EXPLAIN[verdict].format(feature=feature),
        "labels": [{"name": "feature", "value": feature},
                   {"name": VERDICT_LABEL, "value": f"{feature}: {verdict}"}],
        "links": [link], "start": when_ms, "stop": when_ms,  # not 0: the report's date
    }), encoding="utf-8")


def _date_ms(conformance: dict[str, Any]) -> int:
    """The run's date (conformance.yaml), in ms since the epoch, for entries with no time."""
    try:
        return int(dt.datetime.fromisoformat(str(conformance["date"])).timestamp() * 1000)
    except (KeyError, ValueError):
        return int(time.time() * 1000)


def _config(conformance: dict[str, Any]) -> str:
    profile, _, overall = _features_with_verdicts(conformance)
    name = f"redis-mesh-lab conformance: profile {profile} {overall}"
    return yaml.safe_dump({
        "name": name,
        "plugins": {"awesome": {"options": {
            "singleFile": True, "reportName": name, "groupBy": [VERDICT_LABEL],
            "reportLanguage": "en",
        }}},
    })


def strip_analytics(html: str) -> str:
    """Allure's page loads Google's tag manager when opened; the report must not."""
    return ANALYTICS.sub("", html)


def build(run: Path, output: Path | None = None) -> Path:
    """Generate `RUN/html/index.html` (one self-contained file) from the run's results."""
    index = generate(run, output)
    index.write_text(strip_analytics(index.read_text(encoding="utf-8")), encoding="utf-8")
    return index


def generate(run: Path, output: Path | None = None) -> Path:
    """Allure's own page, analytics tag included (`build` removes it)."""
    results = run / rundir.ALLURE_RESULTS
    if not results.is_dir() or not any(results.iterdir()):
        raise LabError(f"no Allure results in {results} (run the suite first)")
    conformance_file = run / rundir.CONFORMANCE
    if not conformance_file.is_file():
        raise LabError(f"no {conformance_file}: the run wrote no conformance report")
    conformance = yaml.safe_load(conformance_file.read_text(encoding="utf-8"))
    output = output or run / rundir.HTML
    allure = ensure_allure()
    shutil.rmtree(output, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="redis-mesh-lab-allure-") as tmp:
        prepared = Path(tmp) / "results"
        prepare_results(results, conformance, prepared)
        config = Path(tmp) / "allurerc.yaml"
        config.write_text(_config(conformance), encoding="utf-8")
        try:
            sh.Command(str(allure))("generate", "--config", str(config), "--output",
                                    str(output), str(prepared),
                                    _out=_stream, _err=_stream, _timeout=600,
                                    _env={**os.environ, "ALLURE_NO_ANALYTICS": "true"})
        except sh.ErrorReturnCode as exc:
            raise LabError(f"allure generate failed (exit {exc.exit_code})") from exc
    index = output / "index.html"
    if not index.is_file():
        raise LabError(f"allure generate wrote no {index}")
    return index


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    run = Path(args[0]) if args else Path("reports") / rundir.LATEST
    try:
        index = build(run.resolve())
    except LabError as exc:
        print(f"redis-mesh-lab: error: {exc}", file=sys.stderr)
        return 2
    print(f"HTML report: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
