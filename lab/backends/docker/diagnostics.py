"""What a failed `up` leaves for debugging: every container's log and `docker inspect`,
the lab dir's logs, Envoy's configuration and the capture rules."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

from . import engine


def collect(client: Any, lab: str, directory: Path, dest: Path) -> Path:
    """Write the bundle into `dest` (replacing an older one); never raises."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(Exception):
        wanted = {"label": engine.label_filter(lab, this_run=True)}
        for container in client.containers.list(all=True, filters=wanted, ignore_removed=True):
            role = container.labels.get(engine.LABEL_ROLE, "container")
            stem = container.name.removeprefix(engine.prefix(lab) + "-") or role
            with contextlib.suppress(Exception):
                (dest / f"{stem}.log").write_bytes(container.logs(tail=5000))
            (dest / f"{stem}.inspect.json").write_text(json.dumps(container.attrs, indent=2),
                                                       encoding="utf-8")
        for network in client.networks.list(filters=wanted):
            (dest / "network.inspect.json").write_text(json.dumps(network.attrs, indent=2),
                                                       encoding="utf-8")
    for source in [*sorted((directory / "logs").glob("*.log")),
                   directory / "sidecar" / "envoy.json", directory / "sidecar" / "capture.rules"]:
        with contextlib.suppress(OSError):
            shutil.copyfile(source, dest / source.name)
    return dest
