"""The pytest plugin (entry point `pytest11`): the `lab` fixture, features, profiles, reports.

Options (each also an ini key and an environment variable, see lab/conformance/options.py):
--lab-backend local|docker|kind|existing|attach, --lab-name, --lab-profile, --lab-also,
--lab-keep, --lab-istio, --lab-kubeconfig, --lab-reports DIR.

- A verdict only when one is asked for: `--lab-profile` given (flag, ini key or environment),
  or tests of the shipped suite (`lab.suites`, `suites/` in a checkout) collected. Then tests
  whose `@pytest.mark.feature`s are outside the profile are skipped and reported as such, the
  terminal ends with the profile's verdict, and the plugin's exit codes apply. Otherwise (a
  project's own tests using the `lab` fixture, marked or not) pytest's own exit codes, no
  verdict, nothing skipped.
- Reports only where asked: `--lab-reports DIR` gets one folder per run, `DIR/<UTC timestamp>/`
  (conformance.yaml, allure-results/, diagnostics/ of failed feature tests), `DIR/latest`
  pointing at it. Without it the run writes nothing (the terminal says so when a verdict or a
  failure would have been written).
- A lab per run: without `--lab-name` the provisioned lab is `conformance-<6 hex>`, unique to
  the run, so two runs on one machine never meet. Under pytest-xdist every worker provisions
  its own lab `<run's name>-<worker>` (tests stop nodes: workers cannot share one). A lab of
  the asked name left by a pytest that died (kill -9) is taken down and provisioned again, said
  in one line; a lab left by `--lab-keep` (or brought up by `redis-mesh-lab up`) is not: an
  error naming `redis-mesh-lab down --name NAME` (or use `--lab-backend attach`).
- When the lab is taken down under the run (`redis-mesh-lab down`), the session stops within a
  second or so: "lab NAME was taken down while the suite ran", exit code 13.

Exit codes of the plugin's own (pytest uses 0-5): see EXIT_* below.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import re
import secrets
import signal
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pytest

from lab import waits
from lab.conformance import options
from lab.conformance.features import ALL, PROFILES
from lab.conformance.report import INCOMPLETE, Collector
from lab.reporting import rundir

if TYPE_CHECKING:
    from lab.handle import Lab

EXIT_NOT_PROVISIONED = 10  # the lab could not be brought up
EXIT_NO_SUCH_LAB = 11  # --lab-backend attach: no lab of that name is up
EXIT_INCOMPLETE = 12  # nothing failed, but the profile is not proven (not covered, skipped)
EXIT_LAB_GONE = 13  # the lab was taken down (redis-mesh-lab down) while the suite ran

_COLLECTOR = pytest.StashKey[Collector]()
_RUN = pytest.StashKey["Path | None"]()
_NAME = pytest.StashKey[str]()  # the run's lab name (workers add their id)
_GONE = pytest.StashKey[str]()  # the lab taken down under the run
_FEATURES = "redis_mesh_lab_features"
_IMPLEMENTATION = "redis_mesh_lab_implementation"
MEASUREMENT = "redis_mesh_lab_measurement"  # (name, figures) as JSON: record_measurement
_WAITS = "redis_mesh_lab_waits"  # what a test waited on, per timer (lab.waits), as JSON
_TITLE = "redis_mesh_lab_title"
_WORKER_RUN = "redis_mesh_lab_run"
_WORKER_NAME = "redis_mesh_lab_name"
_VERDICT = "redis_mesh_lab_verdict"  # on a feature test of a run that asked for a verdict
OWNER = "pytest-owner.json"  # in the lab's directory: the pytest run that provisioned it


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "feature(*names): conformance features a test proves")
    config.addinivalue_line("markers", "profile(name): the test runs in this profile only, "
                            "even where --lab-also adds its feature to another")
    for option in options.OPTIONS:  # a bad value from the environment or ini fails early
        options.get(config, option.flag)
    if options.get(config, "--lab-backend") == "attach" and not options.text(config,
                                                                              "--lab-name"):
        raise pytest.UsageError("--lab-backend attach needs --lab-name")
    profile = str(options.get(config, "--lab-profile"))
    collector = Collector(profile=profile, wanted=options.given(config, "--lab-profile"))
    config.stash[_COLLECTOR] = collector
    workerinput = getattr(config, "workerinput", None)
    if workerinput and _WORKER_RUN in workerinput:
        config.stash[_RUN] = Path(workerinput[_WORKER_RUN]) if workerinput[_WORKER_RUN] else None
        config.stash[_NAME] = str(workerinput[_WORKER_NAME])
    else:
        reports = options.text(config, "--lab-reports")
        config.stash[_RUN] = rundir.choose(Path(reports)) if reports else None
        config.stash[_NAME] = (options.text(config, "--lab-name")
                               or f"conformance-{secrets.token_hex(3)}")
    config.pluginmanager.register(_Recorder(collector, config), "redis-mesh-lab-recorder")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: every worker writes into the controller's run folder, and names its lab
    after the run's."""
    run = node.config.stash[_RUN]
    node.workerinput[_WORKER_RUN] = str(run) if run else ""
    node.workerinput[_WORKER_NAME] = node.config.stash[_NAME]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist: a worker whose lab was taken down stops the whole run."""
    gone = getattr(node, "workeroutput", {}).get(_GONE_OUTPUT)
    if gone:
        node.config.stash[_GONE] = str(gone)
        session = getattr(node.config, "_redis_mesh_lab_session", None)
        if session is not None:
            session.shouldstop = _gone_message(str(gone))


def run_folder(config: pytest.Config) -> Path | None:
    """This run's report folder (created, and `latest` pointed at it, on first use); None
    when no --lab-reports was given: the run writes nothing."""
    run = config.stash[_RUN]
    if run is not None and not run.is_dir():
        rundir.create(run)
    return run


@functools.cache
def _shipped_suite() -> Path | None:
    """Where the shipped suite's test files are (`lab.suites`: suites/ in a checkout)."""
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec("lab.suites")
        locations = list(spec.submodule_search_locations or []) if spec else []
        if locations:
            return Path(locations[0]).resolve()
    return None


def _is_shipped(item: pytest.Item) -> bool:
    shipped = _shipped_suite()
    return shipped is not None and Path(item.path).resolve().parent == shipped


def _features(item: pytest.Item) -> tuple[str, ...]:
    names: list[str] = []
    for marker in item.iter_markers("feature"):
        names.extend(marker.args)
    return tuple(dict.fromkeys(names))


def _profile(item: pytest.Item) -> str | None:
    """The profile a `@pytest.mark.profile` keeps the test to; None: its features decide."""
    marker = item.get_closest_marker("profile")
    if marker is None:
        return None
    name = str(marker.args[0]) if marker.args else ""
    if name not in PROFILES:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.profile({name!r}) names no "
                                f"profile; valid: {', '.join(sorted(PROFILES))}")
    return name


def _title(item: pytest.Item) -> str:
    """The test as a sentence: its docstring's first line, else its name with spaces."""
    function = getattr(item, "function", None)
    doc = (getattr(function, "__doc__", None) or "").strip().splitlines()
    if doc:
        return doc[0].strip()
    name = getattr(item, "originalname", item.name).removeprefix("test_").replace("_", " ")
    return name[:1].upper() + name[1:]


def _selection(config: pytest.Config) -> list[str]:
    """Why this run may not be the whole suite: -k/-m, node ids, only single modules."""
    why = []
    if config.getoption("keyword", ""):
        why.append(f"-k {config.getoption('keyword')}")
    if config.getoption("markexpr", ""):
        why.append(f"-m {config.getoption('markexpr')}")
    pyargs = config.getoption("pyargs", False)
    modules = []
    for arg in config.args:
        if "::" in arg:
            why.append(f"node id {arg}")
        elif arg.endswith(".py") or (pyargs and arg.rsplit(".", 1)[-1].startswith("test_")):
            modules.append(arg)
    if modules and len(modules) == len(config.args):  # no directory or package given
        why.append(f"only {', '.join(modules)}")
    return why


def _also(config: pytest.Config) -> set[str]:
    """--lab-also: features run besides the profile's (`nox -s e2e` adds Resharding)."""
    names = {f.strip() for f in (options.text(config, "--lab-also") or "").split(",") if f.strip()}
    unknown = sorted(names - set(ALL))
    if unknown:
        raise pytest.UsageError(f"--lab-also: unknown feature {', '.join(unknown)}; "
                                f"valid features: {', '.join(ALL)}")
    return names


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    collector = config.stash[_COLLECTOR]
    profile = collector.profile
    wanted = set(PROFILES[profile]) | _also(config)
    featured = [item for item in items if _features(item)]
    if any(_is_shipped(item) for item in featured):
        collector.wanted = True  # the shipped suite is a conformance run: a verdict
    if collector.wanted:
        elsewhere = [item for item in featured if _profile(item) not in (None, profile)
                     and set(_features(item)) <= wanted]
        if elsewhere:  # a feature added by --lab-also brings its own profile's tests only
            config.hook.pytest_deselected(items=elsewhere)
            items[:] = [item for item in items if item not in elsewhere]
            featured = [item for item in featured if item not in elsewhere]
    for item in featured:
        features = _features(item)
        unknown = [f for f in features if f not in ALL]
        if unknown:
            raise pytest.UsageError(
                f"{item.nodeid}: unknown feature {', '.join(map(repr, unknown))} in "
                f"@pytest.mark.feature; valid features: {', '.join(ALL)}")
        item.user_properties.append((_FEATURES, ",".join(features)))
        item.user_properties.append((_TITLE, _title(item)))
        if not collector.wanted:
            continue  # no profile asked for: a project's own tests all run
        item.user_properties.append((_VERDICT, "1"))
        outside = [f for f in features if f not in wanted]
        if outside:
            item.add_marker(pytest.mark.skip(
                reason=f"feature {', '.join(outside)} is not in profile {profile}"))
    if featured and run_folder(config) is not None:
        _start_allure(config)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Remember every feature test the suite has (even deselected) and how it was selected."""
    config = session.config
    collector = config.stash[_COLLECTOR]
    for item in session.items:
        collector.record_collected(item.nodeid, _features(item))
    collector.selection = _selection(config)


def pytest_deselected(items: list[pytest.Item]) -> None:
    if not items:
        return
    config = items[0].config
    collector = config.stash[_COLLECTOR]
    for item in items:
        collector.record_collected(item.nodeid, _features(item))


def _start_allure(config: pytest.Config) -> None:
    """Allure results into the run folder, unless the user chose --alluredir."""
    if getattr(config.option, "allure_report_dir", None) or config.option.collectonly:
        return
    if config.pluginmanager.has_plugin("allure_listener"):
        return
    import allure_commons
    from allure_commons.logger import AllureFileLogger
    from allure_pytest.listener import AllureListener

    run = run_folder(config)
    assert run is not None
    results = run / rundir.ALLURE_RESULTS
    listener = AllureListener(config)
    config.pluginmanager.register(listener, "allure_listener")
    allure_commons.plugin_manager.register(listener)
    logger = AllureFileLogger(str(results))
    allure_commons.plugin_manager.register(logger)

    def stop() -> None:
        for plugin in (listener, logger):
            with contextlib.suppress(Exception):
                allure_commons.plugin_manager.unregister(plugin)

    config.add_cleanup(stop)


def _worker(config: pytest.Config) -> str:
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else ""


def _attach(name: str) -> Any:
    """The Lab handle of a running lab, after a health check (one line if something is down)."""
    from lab import health
    from lab.backends import get_backend
    from lab.errors import LabError
    from lab.handle import Lab
    from lab.state import LabState

    try:
        state = LabState.load(name)
    except LabError as exc:
        pytest.exit(f"cannot attach to lab {name!r}: {exc}", returncode=EXIT_NO_SUCH_LAB)
    if state is None:
        pytest.exit(f"lab {name!r} is not up (redis-mesh-lab up --name {name})",
                    returncode=EXIT_NO_SUCH_LAB)
    access = get_backend(state.backend).access(state)
    problems = health.check(state, access).problems
    if problems:
        access.close()
        pytest.exit(f"lab {name!r} is not healthy: {'; '.join(problems)}",
                    returncode=EXIT_NO_SUCH_LAB)
    return Lab(state, access)


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A running lab (provisioned for this session, or attached), as a `Lab` handle."""
    from lab.backends import UpOptions, get_backend
    from lab.errors import LabError
    from lab.handle import Lab
    from lab.progress import Progress

    config = request.config
    backend_name = str(options.get(config, "--lab-backend"))
    name = options.text(config, "--lab-name")
    keep = options.flag(config, "--lab-keep")
    if backend_name == "attach":
        if not name:
            raise pytest.UsageError("--lab-backend attach needs --lab-name")
        handle = _attach(name)
        with _Watch(config, name):
            yield handle
        handle.close()
        return

    worker = _worker(config)
    name = re.sub(r"[^a-z0-9-]", "-", f"{config.stash[_NAME]}{'-' + worker if worker else ''}")
    backend = get_backend(backend_name)
    up = UpOptions(name=name, istio=str(options.get(config, "--lab-istio")),
                   kubeconfig=options.text(config, "--lab-kubeconfig"), keep=keep)
    capture = config.pluginmanager.getplugin("capturemanager")
    shown = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    with shown:  # provisioning is long on Kubernetes: show its steps as they happen
        progress = Progress()  # bound to the real stderr, not pytest's capture
        progress.say(f"\nprovisioning lab {name!r} on backend {backend_name}")
        from lab.procs import interruptible

        signals = contextlib.ExitStack()  # SIGTERM/SIGHUP, while provisioning and after,
        signals.enter_context(interruptible())  # stop the run like Ctrl-C: the lab goes down
        try:
            _reclaim(name, progress)
            state = waits.counted(waits.PROVISIONING)(backend.up)(up, progress)
            _own(name, keep)
        except LabError as exc:
            signals.close()
            pytest.exit(f"could not provision the lab: {exc}", returncode=EXIT_NOT_PROVISIONED)
        except BaseException:
            signals.close()
            raise
    handle = Lab(state, backend.access(state))
    watch = _Watch(config, name)
    try:
        with watch:
            yield handle
    finally:
        with signals:  # released once the lab is down
            handle.close()
            if not watch.gone:  # else whoever took it down removes it
                _release(config, backend, name, keep)


def _release(config: pytest.Config, backend: Any, name: str, keep: bool) -> None:
    """The session's end: the provisioned lab goes down, unless --lab-keep."""
    from lab.progress import Progress

    if not keep:
        backend.down(name, Progress(quiet=True))
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        Progress().say(f"\n--lab-keep: lab {name!r} left up; "
                       f"redis-mesh-lab down --name {name} removes it")


def _own(name: str, keep: bool) -> None:
    """Record, in the lab's directory, that this pytest run provisioned it (and if it keeps it)."""
    from lab import paths, procs

    owner = {"pid": os.getpid(), "started": procs.start_time(os.getpid()), "keep": keep}
    (paths.lab_dir(name) / OWNER).write_text(json.dumps(owner), encoding="utf-8")


def _reclaim(name: str, progress: Any) -> None:
    """A lab of this name left by a pytest run that died is taken down (said in one line);
    one kept (--lab-keep) or in use by a live run is an error. Anything else (a lab brought
    up by `redis-mesh-lab up`, an interrupted `up`) is for the backend's `up` to judge."""
    from lab import paths, procs
    from lab.backends import get_backend
    from lab.errors import LabError
    from lab.progress import Progress
    from lab.state import LabState

    try:
        owner = json.loads((paths.lab_dir(name) / OWNER).read_text(encoding="utf-8"))
        pid, started, kept = int(owner["pid"]), owner.get("started"), bool(owner.get("keep"))
    except (OSError, ValueError, TypeError, KeyError):
        return
    if kept:
        raise LabError(f"lab {name!r} was kept by an earlier run (--lab-keep): "
                       f"redis-mesh-lab down --name {name} removes it, or use it with "
                       f"--lab-backend attach --lab-name {name}")
    if started is not None and procs.start_time(pid) == started:
        raise LabError(f"lab {name!r} is in use by a running pytest (pid {pid}); "
                       "give this run another --lab-name")
    try:
        state = LabState.load(name)
    except LabError:
        state = None
    backend = get_backend(state.backend if state else "local")
    progress.say(f"lab {name!r} was left by a pytest run that died (pid {pid}): "
                 "taking it down to provision it again")
    backend.down(name, Progress(quiet=True))


_GONE_OUTPUT = "redis_mesh_lab_gone"  # xdist workeroutput: the lab taken down under a worker
_WATCH_S = 0.5  # how often the watch looks at the lab's state file


def _gone_message(name: str) -> str:
    return f"lab {name} was taken down while the suite ran"


class _Watch:
    """While the tests run: if the lab is taken down under them (`redis-mesh-lab down`), stop
    the session at once with one line and EXIT_LAB_GONE, instead of every test failing slowly.

    A thread looks at the lab's state file and lock; when `down` holds the lock or the state
    is gone, it interrupts the main thread (SIGINT, which this watch's handler turns into
    `pytest.exit`; any other SIGINT goes to the handler it replaced).
    """

    def __init__(self, config: pytest.Config, name: str) -> None:
        self.config, self.name = config, name
        self.gone = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous: Any = None

    def __enter__(self) -> _Watch:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: no watch
            return self
        self._thread = threading.Thread(target=self._run, name="redis-mesh-lab-watch",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            signal.signal(signal.SIGINT, self._previous)

    def taken_down(self) -> bool:
        from lab import locks, paths
        from lab.state import STATE_FILE

        if not (paths.lab_dir(self.name) / STATE_FILE).is_file():
            return True
        holder = locks.held_by(self.name) or ""
        return "taken down" in holder

    def _run(self) -> None:
        while not self._stop.wait(_WATCH_S):
            if self.taken_down():
                self.gone = True
                self.config.stash[_GONE] = self.name
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
                return

    def _handler(self, signum: int, frame: Any) -> None:
        if self.gone:
            raise pytest.exit.Exception(_gone_message(self.name), returncode=EXIT_LAB_GONE)
        if callable(self._previous):
            self._previous(signum, frame)
        elif self._previous != signal.SIG_IGN:
            raise KeyboardInterrupt


# ---- variant labs (the logic is in lab/conformance/variants.py) ------------------------------
@pytest.fixture(scope="session")
def lab_variant(request: pytest.FixtureRequest, lab: Lab) -> Iterator[Any]:
    """`lab_variant(Variant(...)) -> Lab`: a second lab on the session lab's backend, with
    another read policy / mirror / extra EnvoyFilters; one per distinct variant, down at the end.
    """
    import dataclasses as _dc

    from lab.backends import UpOptions
    from lab.conformance.variants import Variant, VariantLabs
    from lab.errors import LabError
    from lab.procs import Interrupted, interrupted, interruptible
    from lab.progress import Progress

    config = request.config
    base = UpOptions(istio=str(options.get(config, "--lab-istio")),
                     kubeconfig=options.text(config, "--lab-kubeconfig"))
    capture = config.pluginmanager.getplugin("capturemanager")
    labs = VariantLabs(lab, lambda name: _dc.replace(base, name=name), Progress)

    class Provide:
        def __call__(self, variant: Variant) -> Lab:
            shown = (capture.global_and_fixture_disabled() if capture
                     else contextlib.nullcontext())
            with shown:
                try:
                    return labs.get(variant)
                except NotImplementedError as exc:
                    pytest.skip(f"variant {variant.label}: {exc}")
                except LabError as exc:
                    if (signum := interrupted()) is not None:  # an up that was interrupted
                        raise Interrupted(signum) from None  # ends the run, as Ctrl-C does
                    pytest.fail(f"could not provision variant lab {variant.label}: {exc}",
                                pytrace=False)

        def handles(self) -> list[Lab]:
            return labs.handles()

    try:
        with interruptible():  # SIGTERM/SIGHUP end the run like Ctrl-C: the variants go down
            yield Provide()
    finally:
        labs.close()


@pytest.hookimpl(tryfirst=True)
def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """Let pytest report a SIGTERM/Ctrl-C whatever instruction it landed on.

    A signal handler can raise at an instruction that has no line number (CPython 3.11 gives
    such a frame's `tb_lineno` as None). pytest's own report of the interruption then fails
    with a TypeError, and the "Interrupted: SIGTERM" summary is lost. Those frames say
    nothing to a reader, so they are left out of the report, here and in the chained
    exceptions.
    """
    seen: set[int] = set()
    exc: BaseException | None = excinfo.value
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = without_lineless_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__
    excinfo.traceback = excinfo.traceback.filter(_has_a_line)


def _has_a_line(entry: Any) -> bool:
    try:
        return entry.lineno is not None  # pytest computes it as tb_lineno - 1
    except TypeError:
        return False


def without_lineless_frames(tb: TracebackType | None) -> TracebackType | None:
    """The traceback `tb` with the entries whose line number is unknown unlinked."""
    kept: list[TracebackType] = []
    while tb is not None:
        if tb.tb_lineno is not None:
            kept.append(tb)
        tb = tb.tb_next
    for entry, after in zip(kept, [*kept[1:], None], strict=True):
        entry.tb_next = after
    return kept[0] if kept else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """Allure title, labels and the implementation under test, before the test body runs.

    Done here rather than in an autouse fixture so that no internal fixture shows in the
    report's "Set up".
    """
    features = _features(item)
    if not features:
        return
    import allure

    allure.dynamic.title(_title(item))
    allure.dynamic.epic("redis-mesh-lab conformance")
    for feature in features:
        allure.dynamic.feature(feature)
    handle: Lab | None = getattr(item, "funcargs", {}).get("lab")
    if handle is None:
        return
    implementation = handle.implementation()
    item.user_properties.append((_IMPLEMENTATION, json.dumps(implementation)))
    for key, value in implementation_parameters(implementation).items():
        allure.dynamic.parameter(key, _Shown(value))
        allure.dynamic.label(f"lab.{key}", value)
    handle.captures = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Revert the faults a test left in place (a stopped node is started again)."""
    handles = [getattr(item, "funcargs", {}).get("lab")]
    variants = getattr(item, "funcargs", {}).get("lab_variant")  # variant labs too
    handles += list(getattr(variants, "handles", list)())
    for handle in handles:
        faults = getattr(handle, "faults", None)
        if faults is not None and faults.active:
            faults.undo_all()


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("redis-mesh-lab")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class _Shown:
    """A parameter value Allure shows as it is (it quotes plain strings: 'local')."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def implementation_parameters(implementation: dict[str, Any]) -> dict[str, str]:
    """What a reader needs to know about the system under test, as short strings."""
    extra = implementation.get("envoyfilters") or []
    control_plane = str(implementation.get("controlPlane")
                        or (f"istio ({implementation['istioProfile']})"
                            if implementation.get("istioProfile") else "builtin patcher"))
    if control_plane == "builtin patcher":  # its version is this package's
        control_plane += f" (redis-mesh-lab {_version()})"
    return {
        "backend": str(implementation.get("backend", "")),
        "control plane": control_plane,
        "envoy": str(implementation.get("envoyVersion", "")),
        "redis": str(implementation.get("redisVersion", "")),
        "read policy": str(implementation.get("readPolicy", "")),
        "mirror": "on" if implementation.get("mirrorEnabled") else "off",
        "extra EnvoyFilters": ", ".join(map(str, extra)) if extra else "none",
    }


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    if call.when == "teardown":  # what the test waited on, into this last report of it
        taken = waits.taken()  # (also under xdist), then into the conformance report
        if taken:
            item.user_properties.append((_WAITS, json.dumps(
                {name: [t.count, round(t.seconds, 3)] for name, t in taken.items()})))
    report = yield
    if report.failed and _features(item) and item.config.stash.get(_GONE, None) is None:
        handle = getattr(item, "funcargs", {}).get("lab")
        run = run_folder(item.config)
        if handle is not None and run is not None:  # diagnostics go where reports go
            _attach_diagnostics(item, handle, run)
    return report


def _attach_diagnostics(item: pytest.Item, handle: Any, run: Path) -> None:
    """MONITOR captures, Envoy config_dump/clusters/stats, CLUSTER NODES, logs."""
    import allure

    with contextlib.suppress(Exception):
        for capture in getattr(handle, "captures", []):
            allure.attach(capture.text(), name="MONITOR capture",
                          attachment_type=allure.attachment_type.TEXT)
        bundle = handle.diagnostics()
        for label, text in bundle.items():
            kind = (allure.attachment_type.JSON if label.endswith(".json")
                    else allure.attachment_type.TEXT)
            allure.attach(text, name=label, attachment_type=kind)
        out = run / rundir.DIAGNOSTICS / re.sub(r"[^\w.-]+", "_", item.nodeid)
        out.mkdir(parents=True, exist_ok=True)
        for label, text in bundle.items():
            (out / label).write_text(text, encoding="utf-8")


def record_measurement(item: pytest.Item, name: str, figures: Any) -> None:
    """A test's figures into the conformance report (`measurements`), also under xdist."""
    item.user_properties.append((MEASUREMENT, json.dumps([name, figures])))


class _Recorder:
    """Feeds the conformance collector from test reports (on the xdist controller too)."""

    def __init__(self, collector: Collector, config: pytest.Config) -> None:
        self.collector = collector
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # pytest's own category for the report, as its summary line counts it
        category = self.config.hook.pytest_report_teststatus(report=report, config=self.config)[0]
        if category and getattr(report, "count_towards_summary", True):
            self.collector.count(str(category))
        props = dict(report.user_properties)
        for key, value in report.user_properties:  # any phase: a teardown may measure too
            if key == MEASUREMENT:
                name, figures = json.loads(str(value))
                self.collector.record_measurement(name, figures)
            elif key == _WAITS:
                self.collector.record_waits({name: waits.Tally(int(c), float(s))
                                             for name, (c, s) in json.loads(str(value)).items()})
        if _FEATURES not in props:
            return
        if _VERDICT in props:
            self.collector.wanted = True  # decided at collection (on the xdist workers)
        if _IMPLEMENTATION in props:
            self.collector.record_implementation(json.loads(str(props[_IMPLEMENTATION])))
        reason, outcome = "", str(report.outcome)
        if getattr(report, "wasxfail", None) is not None:  # expected failure: keep why
            reason = f"xfail: {report.wasxfail}" if report.wasxfail else "xfail"
            outcome = "xfailed" if report.skipped else outcome
        elif report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            reason = crash.message.splitlines()[0] if crash is not None else "failed"
        features = tuple(str(props[_FEATURES]).split(","))
        self.collector.record(report.nodeid, features, report.when, outcome, reason,
                              title=str(props.get(_TITLE, "")))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    waits.reset()  # the ledger is this test's from its setup (a lab it brings up included)


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config._redis_mesh_lab_session = session  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    gone = config.stash.get(_GONE, None)
    if hasattr(config, "workerinput"):
        if gone:
            config.workeroutput[_GONE_OUTPUT] = gone  # type: ignore[attr-defined]
        return  # xdist workers: the controller writes the report
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if gone:  # the run proves nothing: no verdict, one line
        session.exitstatus = EXIT_LAB_GONE
        if reporter is not None and config.pluginmanager.has_plugin("dsession"):
            reporter.write_line(_gone_message(gone))  # xdist: the worker's line is not shown
        return
    collector = config.stash[_COLLECTOR]
    failed = any(r.outcome == "failed" for r in collector.results.values())
    if not collector.results or not (collector.wanted or failed):
        return
    run = run_folder(config)
    path = collector.write(run / rundir.CONFORMANCE) if run and collector.wanted else None
    if (collector.wanted and exitstatus == pytest.ExitCode.OK and collector.whole
            and collector.overall() == INCOMPLETE):
        session.exitstatus = EXIT_INCOMPLETE
    if reporter is None:
        return
    writer = getattr(reporter, "_tw", None)
    if writer is not None and writer.width_of_current_line:
        reporter.write("\n")  # after -q's "[100%]", which ends no line
    if collector.wanted:
        reporter.write_sep("-", f"conformance profile {collector.profile}: {collector.overall()}")
        for line in collector.summary():
            reporter.write_line(line)
    if path is not None:
        reporter.write_line(f"conformance report: {path}")
    elif run is None:
        reporter.write_line("redis-mesh-lab wrote no reports (conformance.yaml, Allure results, "
                            "failure diagnostics): --lab-reports DIR writes them")
    if session.exitstatus == EXIT_INCOMPLETE:
        reporter.write_line(f"exit status {EXIT_INCOMPLETE}: the profile is not proven")
