"""One folder per run: `<reports>/<UTC timestamp>/`, with `<reports>/latest` pointing at the newest.

A later run never replaces an earlier run's evidence: each gets its own folder, and the
`latest` symlink is swapped atomically once the new folder exists.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

LATEST = "latest"
CONFORMANCE = "conformance.yaml"
ALLURE_RESULTS = "allure-results"
DIAGNOSTICS = "diagnostics"
HTML = "html"


def choose(root: Path, now: dt.datetime | None = None) -> Path:
    """A fresh folder name under `root` for a run starting now (not created yet)."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    candidate, index = root / stamp, 1
    while candidate.exists():
        index += 1
        candidate = root / f"{stamp}-{index}"
    return candidate.absolute()


def create(run: Path) -> Path:
    """Make the run folder (idempotent) and point `<root>/latest` at it."""
    run.mkdir(parents=True, exist_ok=True)
    point_latest(run)
    return run


def point_latest(run: Path) -> None:
    link = run.parent / LATEST
    if link.exists() and not link.is_symlink():
        return  # a real folder named "latest": never replace the user's files
    tmp = run.parent / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run.name, target_is_directory=True)
    os.replace(tmp, link)


def latest(root: Path) -> Path | None:
    link = root / LATEST
    return link.resolve() if link.is_dir() else None
