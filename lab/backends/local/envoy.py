"""The local backend's Envoy in a mutant lab: readiness and `reconfigure`.

A lab with extra EnvoyFilters is judged by the suite, not refused by readiness: it is
ready once Envoy is LIVE with its configuration loaded. `reconfigure` swaps the extra
EnvoyFilters of a running lab, re-derives Envoy's configuration, and restarts only Envoy
(the same recorded command line: its config file is rewritten in place).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from tenacity import RetryError, retry, retry_if_exception_type, stop_after_delay, wait_fixed

from lab import procs
from lab.envoy.admin import Admin
from lab.errors import LabError
from lab.state import LabState, Process

ENVOY = "envoy"


class _NotLive(Exception):
    pass


def wait_live(admin: Admin, process: Process, log_tail: Callable[[], str],
              seconds: float = 30) -> None:
    """Envoy is up and its configuration is loaded (its admin says LIVE)."""

    @retry(stop=stop_after_delay(seconds), wait=wait_fixed(0.05),
           retry=retry_if_exception_type((_NotLive, OSError)), reraise=True)
    def live() -> None:
        if not procs.alive(process):
            raise LabError(f"envoy exited: {log_tail()}")
        if admin.get("/ready").strip() != "LIVE":
            raise _NotLive("not LIVE yet")

    try:
        live()
    except (_NotLive, OSError, RetryError) as exc:
        raise LabError(f"Envoy did not become LIVE: {exc}") from None


def envoy_process(state: LabState) -> Process:
    for process in state.processes:
        if process.name == ENVOY:
            return process
    raise LabError(f"lab {state.name!r} records no Envoy process")


def restart(state: LabState, before_start: Callable[[], None]) -> Process:
    """Stop the lab's Envoy (the journal's process, nothing else), run `before_start`,
    start it again with its recorded command line, and journal the new process."""
    old = envoy_process(state)
    if not old.argv:
        raise LabError(f"lab {state.name!r}: the journal has no Envoy command line")
    procs.terminate(old)
    before_start()
    new = procs.relaunch(old, str(state.directory))
    state.processes = [new if p is old else p for p in state.processes]
    state.save()
    return new


def describe(files: Sequence[str | Path]) -> str:
    return ", ".join(Path(f).name for f in files)
