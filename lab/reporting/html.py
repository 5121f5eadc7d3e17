"""Build the single-file HTML report with Allure Report 3 (npm package `allure`, no Java).

The npm package is installed on first use into ./.tools/allure (or $REDIS_MESH_LAB_TOOLS),
pinned in lab/versions.py. Usage: python -m lab.reporting.html [RESULTS] [OUTPUT]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lab import versions
from lab.errors import LabError

CONFIG = """\
name: redis-mesh-lab conformance
plugins:
  awesome:
    options:
      singleFile: true
      reportName: redis-mesh-lab conformance
      groupBy: [epic, feature, story]
"""


def tools_dir() -> Path:
    return Path(os.environ.get("REDIS_MESH_LAB_TOOLS", Path.cwd() / ".tools")) / "allure"


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
        raise LabError("npm not found: install Node.js 20+ (apt-get install nodejs npm)")
    prefix.mkdir(parents=True, exist_ok=True)
    print(f"installing {versions.ALLURE_NPM} into {prefix} ...", file=sys.stderr, flush=True)
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix",
         str(prefix), versions.ALLURE_NPM],
        capture_output=True, text=True, check=False, timeout=600,
    )
    if result.returncode != 0 or not binary.exists():
        last = (result.stderr or result.stdout).strip().splitlines()
        raise LabError(f"npm install {versions.ALLURE_NPM} failed: {last[-1] if last else ''}")
    marker.write_text(wanted + "\n")
    return binary


def build(results: Path, output: Path) -> Path:
    """Generate `output/index.html` (one self-contained file) from allure-pytest results."""
    if not results.is_dir() or not any(results.iterdir()):
        raise LabError(f"no Allure results in {results} (run the suite with --alluredir)")
    allure = ensure_allure()
    shutil.rmtree(output, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="redis-mesh-lab-allure-") as tmp:
        config = Path(tmp) / "allurerc.yaml"
        config.write_text(CONFIG, encoding="utf-8")
        result = subprocess.run(
            [str(allure), "generate", "--config", str(config), "--output", str(output),
             str(results)],
            capture_output=True, text=True, check=False, timeout=600,
        )
    index = output / "index.html"
    if result.returncode != 0 or not index.is_file():
        last = (result.stderr or result.stdout).strip().splitlines()
        raise LabError(f"allure generate failed: {last[-1] if last else result.returncode}")
    return index


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    results = Path(args[0] if args else "reports/allure-results")
    output = Path(args[1] if len(args) > 1 else "reports/html")
    try:
        index = build(results, output)
    except LabError as exc:
        print(f"redis-mesh-lab: error: {exc}", file=sys.stderr)
        return 2
    print(f"HTML report: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
