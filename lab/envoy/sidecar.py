"""From a LabSpec to a validated Envoy bootstrap: baseline, EnvoyFilters, local addresses."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lab import binaries
from lab.envoy import baseline, bootstrap, patcher
from lab.errors import LabError
from lab.model import LabSpec, Service

Address = tuple[str, int]


def patched_config(
    spec: LabSpec,
    vips: Mapping[str, str],
    endpoints: Callable[[Service, int], list[Address]],
    bind: Callable[[Service, int], Address],
) -> dict[str, list[dict[str, Any]]]:
    """The sidecar's listeners and clusters after the lab's EnvoyFilters, then the extra ones."""
    base = baseline.build(spec.services, vips, endpoints, bind)
    return patcher.apply_envoyfilters(base, spec.all_envoyfilter_documents)


def write(config: dict[str, Any], path: Path) -> Path:
    """Write the bootstrap as JSON: YAML 1.1 would turn a value like `n` into false."""
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def validate(path: Path, envoy: str | None = None) -> None:
    """`envoy --mode validate`; Envoy's own complaint becomes the error message."""
    result = subprocess.run(
        [envoy or binaries.envoy(), "--mode", "validate", "-c", str(path), "-l", "error"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if result.returncode != 0:
        lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
        reason = next((ln for ln in reversed(lines) if "error" in ln.lower()),
                      lines[-1] if lines else f"exit {result.returncode}")
        raise LabError(f"Envoy refused {path.name}: {reason.strip()}")


__all__ = ["bootstrap", "patched_config", "validate", "write"]
