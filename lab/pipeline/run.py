"""The one provisioning pipeline: `up`, `down` and `--dry-run` of every backend.

The create sequence is lab.pipeline.stages.UP, carried out on a runtime
(lab.pipeline.runtime): the lab's lock, clearing what an earlier run left, the journal saved
before anything starts, each stage and its waits, and on failure the diagnostics and the
removal of everything this `up` created (unless --keep). `down` is the reverse.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lab import locks, paths, procs
from lab.backends.base import Access, UpOptions
from lab.errors import LabError
from lab.progress import Progress
from lab.state import CorruptState, LabState

from .runtime import Build, Runtime
from .stages import DOWN, UP, Stage, StageKey

INDENT = "      "


def reports_dir() -> Path:
    return Path.cwd() / "reports"


def poll(probe: Callable[[], str | None], stage: Stage, timeout: float, interval: float,
         sleep: Callable[[float], None] = time.sleep) -> None:
    """Ask `probe` until it says None; LabError naming the stage's condition once `timeout`
    seconds passed (by the clock, or by the pauses alone: a test's instant sleep ends it)."""
    began, slept, reason = time.monotonic(), 0.0, "not checked yet"
    while True:
        reason = probe() or ""
        if not reason:
            return
        if time.monotonic() - began >= timeout or slept >= timeout:
            raise LabError(f"timed out after {timeout:g}s waiting until {stage.until}: "
                           f"{reason}")
        sleep(interval)
        slept += interval


class Pipeline:
    """A backend: the stages of lab.pipeline.stages carried out on one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.name = runtime.name
        self.variant_capacity = runtime.variant_capacity

    def timeout(self, stage: Stage) -> float | None:
        return self.runtime.timeouts.get(stage.key, stage.timeout_s)

    # ---- the plan ----------------------------------------------------------------------
    def dry_run(self, options: UpOptions) -> str:
        """Every stage `up` runs, in order, with how this backend carries it out."""
        paths.check_name(options.name)
        lines = list(self.runtime.header(options))
        for number, stage in enumerate(UP, 1):
            lines.append(f"[{number}/{len(UP)}] {stage.key}: {stage.title}")
            how = self.runtime.describe(stage.key, options)
            lines += [INDENT + line if line else line for line in how] or \
                [INDENT + "(nothing to do on this backend)"]
            timeout = self.timeout(stage)
            if stage.until:
                lines.append(f"{INDENT}until {stage.until}"
                             + (f" (timeout {timeout:g}s)" if timeout else ""))
        lines.append(f"down: {'; then '.join(s.title for s in DOWN)}")
        return "\n".join(lines)

    # ---- up ----------------------------------------------------------------------------
    def up(self, options: UpOptions, progress: Progress) -> LabState:
        name = paths.check_name(options.name)
        self.runtime.preflight(options)
        paths.home(create=True)
        with procs.interruptible(), locks.lab_lock(name, "being brought up") as held:
            self._clear(name, progress)
            journal = LabState.starting(name, self.name, options.read_policy, options.mirror)
            directory = journal.directory
            (directory / "logs").mkdir(mode=0o700, parents=True)
            directory.chmod(0o700)
            journal.save()  # before anything starts: a `kill -9` of this `up` is found
            build: Build | None = None
            try:
                build = self.runtime.build(options, journal, progress)
                self._stages(build, options, journal, progress)
                journal.phase = "ready"
                journal.save()
                return journal
            except BaseException as exc:
                bundle = None
                if isinstance(exc, LabError) and build is not None:
                    with contextlib.suppress(Exception):
                        bundle = build.diagnostics(reports_dir() / "diagnostics" / name)
                if options.keep and bundle is not None:
                    raise LabError(f"{exc} (diagnostics in {bundle}; what it created was kept: "
                                   f"redis-mesh-lab down --name {name} removes it)") from None
                held.remove = True  # nothing of the lab is left: nor is its lock file
                removed = True
                if build is not None:
                    build.close()  # what it started meanwhile is journaled, and so removed
                    try:
                        removed = build.undo()
                    except Exception as failed:  # the first error is the one to report
                        progress.say(f"  cleanup incomplete: {failed}; redis-mesh-lab down "
                                     f"--name {name} tries again")
                        removed = held.remove = False
                if removed:
                    shutil.rmtree(directory, ignore_errors=True)
                if bundle is not None:
                    raise LabError(f"{exc} (diagnostics in {bundle})") from None
                raise
            finally:
                if build is not None:
                    build.close()

    def _stages(self, build: Build, options: UpOptions, journal: LabState,
                progress: Progress) -> None:
        def waited(stage: Stage, probe: Callable[[], str | None]) -> None:
            timeout = self.timeout(stage)
            assert timeout is not None, stage
            with progress.step(f"wait until {stage.until}"):
                poll(probe, stage, timeout, build.poll_interval, build.sleep)

        for number, stage in enumerate(UP, 1):
            progress.say(f"[{number}/{len(UP)}] {stage.title}")
            if stage.key is StageKey.RENDER:
                build.render()
            elif stage.key is StageKey.INFRASTRUCTURE:
                build.prepare()
            elif stage.key is StageKey.CONTROL_PLANE:
                build.start_control_plane()
            elif stage.key is StageKey.NODES:
                build.start_nodes()
                waited(stage, build.nodes_not_ready)
            elif stage.key is StageKey.CLUSTER:
                build.create_cluster()
            elif stage.key is StageKey.CONVERGE:
                waited(stage, build.cluster_not_converged)
            elif stage.key is StageKey.PROXY:
                build.start_proxy()
                waited(stage, build.proxy_not_ready)
            elif stage.key is StageKey.PROVE:
                build.check_control_plane()
                self._prove(build, options, progress)
                build.finish()
            journal.save()

    @staticmethod
    def _prove(build: Build, options: UpOptions, progress: Progress) -> None:
        from lab.envoy import proof

        how = build.proof()
        if how is None:
            return
        proof.prove_proxy(progress, envoyfilters=tuple(options.envoyfilters),
                          mirror=options.mirror, config_dump=how.config_dump,
                          listener=how.listener, client_factory=how.client,
                          topology=build.topology(), where=how.where, through=how.through)

    def _clear(self, name: str, progress: Progress) -> None:
        """What an earlier run of this name left: refuse if it runs, else remove it (the
        lab's lock is held, so a journal still "starting" is a dead `up`'s)."""
        quiet = Progress(quiet=True)
        try:
            state = LabState.load(name)
        except CorruptState as exc:
            progress.say(f"{exc}: removing what it left")
            self._remove(name, None, quiet)
            return
        if state is None:
            if self.runtime.leftovers(name) or paths.lab_dir(name).exists():
                self._remove(name, None, quiet)
            return
        owner = self.runtime if state.backend == self.name else runtime_of(state.backend)
        if state.phase == "ready" and owner.running(state):
            raise LabError(f"lab {name!r} is already up on backend {state.backend} "
                           f"(redis-mesh-lab status --name {name})")
        if state.phase != "ready":
            progress.say(f"lab {name!r}: an earlier `up` (pid {state.owner_pid}) was "
                         "interrupted; removing what it left")
        Pipeline(owner)._remove(name, state, quiet)

    def _remove(self, name: str, state: LabState | None, progress: Progress) -> bool:
        found = self.runtime.stop(name, state, progress)
        shutil.rmtree(paths.lab_dir(name), ignore_errors=True)
        return found

    # ---- down --------------------------------------------------------------------------
    def down(self, name: str, progress: Progress) -> bool:
        """The reverse of `up`: stop what runs, remove the files; False if there was nothing."""
        name = paths.check_name(name)
        directory = paths.lab_dir(name)
        if (not directory.exists() and locks.held_by(name) is None
                and not self.runtime.leftovers(name)):
            return False  # nothing to take down (and no registry created for nothing)
        with locks.lab_lock(name, "being taken down", remove=True):
            state: LabState | None = None
            try:
                state = LabState.load(name)
            except CorruptState as exc:
                progress.say(f"{exc}")
            progress.say(f"[1/{len(DOWN)}] {DOWN[0].title} (lab {name!r})")
            found = self.runtime.stop(name, state, progress)
            progress.say(f"[2/{len(DOWN)}] {DOWN[1].title}")
            existed = directory.exists()
            shutil.rmtree(directory, ignore_errors=True)
        return found or existed or state is not None

    # ---- the rest is the runtime's -----------------------------------------------------
    def access(self, state: LabState) -> Access:
        return self.runtime.access(state)

    def reconfigure(self, name: str, envoyfilters: Sequence[Path | str],
                    progress: Progress) -> LabState:
        return self.runtime.reconfigure(name, envoyfilters, progress)


def runtime_of(backend: str) -> Runtime:
    from lab.backends import get_backend

    found = get_backend(backend)
    assert isinstance(found, Pipeline)
    return found.runtime
