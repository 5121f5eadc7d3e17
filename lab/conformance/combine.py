"""One report from the two profiles `nox -s e2e` runs, and its verdict in one line.

The tutorial profile must succeed. An extended feature fails the run only when the default lab
is expected to pass it: EXPECTED lists, with the reason, what the default lab is known not to
prove (Envoy behaviour the suite marks as strict expected failures is not a failed feature, it is
reported per test in the profile's skippedTests with its upstream issue).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

# extended features the default lab is expected NOT to prove, and why
# (none today: every extended feature is proved on the default lab; Envoy behaviour that is
# still wrong is a strict xfail inside its feature, named by its upstream issue)
EXPECTED: dict[str, str] = {}


def combine(tutorial: dict[str, Any], extended: dict[str, Any]) -> dict[str, Any]:
    report = dict(tutorial)
    report["profiles"] = [*tutorial["profiles"], *extended["profiles"]]
    report["labs"] = sorted(set(tutorial.get("labs", [])) | set(extended.get("labs", [])))
    report["expectedFailures"] = [{"feature": f, "reason": r} for f, r in EXPECTED.items()]
    return report


def problems(report: dict[str, Any]) -> list[str]:
    """Why the run fails (empty: it passes)."""
    found = []
    for profile in report["profiles"]:
        features = profile["features"]
        if profile["name"] == "tutorial":
            if profile["result"] != "success":
                bad = {f: v["result"] for f, v in features.items() if v["result"] != "success"}
                found.append(f"tutorial profile {profile['result']}: {bad}")
        elif profile["name"] == "extended":
            for feature, value in features.items():
                if feature in EXPECTED:
                    continue
                if value["result"] in ("failure", "notCovered", "notRun"):
                    found.append(f"extended feature {feature}: {value['result']}")
    return found


def _known(profile: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Features whose only tests that did not pass are known failures (strict xfails naming
    their upstream bug), and those bugs' links."""
    features, links = [], []
    for feature, value in profile["features"].items():
        if value["result"] == "partial" and value.get("knownFailures"):
            features.append(feature)
    for entry in profile.get("knownFailures", []):
        if set(entry.get("features", [])) & set(features):
            links += entry.get("links", [])
    return features, list(dict.fromkeys(links))


def verdict_line(report: dict[str, Any]) -> str:
    """One line for the whole run: each profile's verdict, what fails it, its known failures.

    `verdict: tutorial: success; extended: success except ModernClients, Transactions (known
    upstream bugs: <links>)`; a profile that fails says `failure (Feature: result, ...)`.
    """
    parts = []
    for profile in report["profiles"]:
        name, features = profile["name"], profile["features"]
        if name == "tutorial":
            bad = {f: v["result"] for f, v in features.items() if v["result"] != "success"}
            if profile["result"] != "success" and not bad:
                bad = {"ranWhole": str(profile.get("ranWhole"))}
        else:
            bad = {f: v["result"] for f, v in features.items()
                   if f not in EXPECTED and v["result"] in ("failure", "notCovered", "notRun")}
        if bad:
            parts.append(f"{name}: failure ({', '.join(f'{f}: {v}' for f, v in bad.items())})")
            continue
        text = f"{name}: success"
        known, links = _known(profile)
        if known:
            text += f" except {', '.join(known)}"
            text += f" (known upstream bugs: {', '.join(links)})" if links else " (known failures)"
        skipped = [f for f, v in features.items()
                   if f not in known and v["result"] in ("skipped", "partial")]
        if skipped:
            text += f", skipped: {', '.join(skipped)}"
        expected = [f for f in EXPECTED if f in features]
        if expected:
            text += f", expected failures: {', '.join(expected)}"
        parts.append(text)
    return "verdict: " + "; ".join(parts)


def main(argv: list[str]) -> int:
    """python -m lab.conformance.combine TUTORIAL.yaml EXTENDED.yaml OUT.yaml

    Writes the combined report (its `e2e` block has the verdict line), the verdict line alone
    into verdict.txt next to it, prints why the run fails; exit 1 when it does.
    """
    tutorial, extended, out = (Path(a) for a in argv)
    report = combine(yaml.safe_load(tutorial.read_text()), yaml.safe_load(extended.read_text()))
    found = problems(report)
    report["e2e"] = {"result": "failure" if found else "success", "verdict": verdict_line(report),
                     "problems": found}
    out.write_text(yaml.safe_dump(report, sort_keys=False, width=1000), encoding="utf-8")
    out.with_name("verdict.txt").write_text(report["e2e"]["verdict"] + "\n", encoding="utf-8")
    for line in found:
        print(f"e2e: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
