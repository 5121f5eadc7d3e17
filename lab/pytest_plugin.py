"""The pytest plugin (entry point `pytest11`): the `lab` fixture, features, profiles, reports.

Options (each also an ini key and an environment variable, see lab/conformance/options.py):
--lab-backend local|kind|existing|attach, --lab-name, --lab-profile, --lab-keep,
--lab-istio, --lab-kubeconfig, --lab-reports DIR. Tests declare
`@pytest.mark.feature("Name")`; tests whose features are outside the profile are skipped and
reported as such. A run with feature tests writes its reports into its own folder
`<DIR>/<UTC timestamp>/` (conformance.yaml, allure-results/, diagnostics/), and
`<DIR>/latest` points at it. Under pytest-xdist every worker provisions its own lab
(`<name>-<worker>`); the controller writes the conformance report from the test reports.

Exit codes of the plugin's own (pytest uses 0-5): see EXIT_* below.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from lab.conformance import options
from lab.conformance.features import ALL, PROFILES
from lab.conformance.report import INCOMPLETE, Collector
from lab.reporting import rundir

if TYPE_CHECKING:
    from lab.handle import Lab

EXIT_NOT_PROVISIONED = 10  # the lab could not be brought up
EXIT_NO_SUCH_LAB = 11  # --lab-backend attach: no lab of that name is up
EXIT_INCOMPLETE = 12  # nothing failed, but the profile is not proven (not covered, skipped)

_COLLECTOR = pytest.StashKey[Collector]()
_RUN = pytest.StashKey[Path]()
_FEATURES = "redis_mesh_lab_features"
_IMPLEMENTATION = "redis_mesh_lab_implementation"
MEASUREMENT = "redis_mesh_lab_measurement"  # (name, figures) as JSON: record_measurement
_TITLE = "redis_mesh_lab_title"
_WORKER_RUN = "redis_mesh_lab_run"


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "feature(*names): conformance features a test proves")
    for option in options.OPTIONS:  # a bad value from the environment or ini fails early
        options.get(config, option.flag)
    if options.get(config, "--lab-backend") == "attach" and not options.text(config,
                                                                              "--lab-name"):
        raise pytest.UsageError("--lab-backend attach needs --lab-name")
    profile = str(options.get(config, "--lab-profile"))
    collector = Collector(profile=profile)
    config.stash[_COLLECTOR] = collector
    workerinput = getattr(config, "workerinput", None)
    if workerinput and _WORKER_RUN in workerinput:
        config.stash[_RUN] = Path(workerinput[_WORKER_RUN])
    else:
        config.stash[_RUN] = rundir.choose(Path(str(options.get(config, "--lab-reports"))))
    config.pluginmanager.register(_Recorder(collector), "redis-mesh-lab-recorder")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: every worker writes into the controller's run folder."""
    node.workerinput[_WORKER_RUN] = str(node.config.stash[_RUN])


def run_folder(config: pytest.Config) -> Path:
    """This run's report folder (created, and `latest` pointed at it, on first use)."""
    run = config.stash[_RUN]
    if not run.is_dir():
        rundir.create(run)
    return run


def _features(item: pytest.Item) -> tuple[str, ...]:
    names: list[str] = []
    for marker in item.iter_markers("feature"):
        names.extend(marker.args)
    return tuple(dict.fromkeys(names))


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
    profile = config.stash[_COLLECTOR].profile
    wanted = set(PROFILES[profile]) | _also(config)
    featured = False
    for item in items:
        features = _features(item)
        if not features:
            continue
        featured = True
        unknown = [f for f in features if f not in ALL]
        if unknown:
            raise pytest.UsageError(
                f"{item.nodeid}: unknown feature {', '.join(map(repr, unknown))} in "
                f"@pytest.mark.feature; valid features: {', '.join(ALL)}")
        item.user_properties.append((_FEATURES, ",".join(features)))
        item.user_properties.append((_TITLE, _title(item)))
        outside = [f for f in features if f not in wanted]
        if outside:
            item.add_marker(pytest.mark.skip(
                reason=f"feature {', '.join(outside)} is not in profile {profile}"))
    if featured:
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

    results = run_folder(config) / rundir.ALLURE_RESULTS
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
        yield handle
        handle.close()
        return

    worker = _worker(config)
    name = re.sub(r"[^a-z0-9-]", "-", f"{name or 'conformance'}{'-' + worker if worker else ''}")
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
            state = backend.up(up, progress)
        except LabError as exc:
            signals.close()
            pytest.exit(f"could not provision the lab: {exc}", returncode=EXIT_NOT_PROVISIONED)
        except BaseException:
            signals.close()
            raise
    handle = Lab(state, backend.access(state))
    try:
        yield handle
    finally:
        with signals:  # released once the lab is down
            handle.close()
            if keep:
                shown = (capture.global_and_fixture_disabled() if capture
                         else contextlib.nullcontext())
                with shown:
                    Progress().say(f"\n--lab-keep: lab {name!r} left up; "
                                   f"redis-mesh-lab down --name {name} removes it")
            else:
                backend.down(name, Progress(quiet=True))


# ---- seam 6: variant labs (owner: extended; logic in lab/conformance/variants.py) -----------
@pytest.fixture(scope="session")
def lab_variant(request: pytest.FixtureRequest, lab: Lab) -> Iterator[Any]:
    """`lab_variant(Variant(...)) -> Lab`: a second lab on the session lab's backend, with
    another read policy / mirror / extra EnvoyFilters; one per distinct variant, down at the end.
    """
    import dataclasses as _dc

    from lab.backends import UpOptions
    from lab.conformance.variants import Variant, VariantLabs
    from lab.errors import LabError
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
                    pytest.fail(f"could not provision variant lab {variant.label}: {exc}",
                                pytrace=False)

        def handles(self) -> list[Lab]:
            return labs.handles()

    try:
        yield Provide()
    finally:
        labs.close()


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
    """Seam 3: revert the faults a test left in place (a stopped node is started again)."""
    handles = [getattr(item, "funcargs", {}).get("lab")]
    variants = getattr(item, "funcargs", {}).get("lab_variant")  # seam 6: its labs too
    handles += list(getattr(variants, "handles", list)())
    for handle in handles:
        faults = getattr(handle, "faults", None)
        if faults is not None and faults.active:
            faults.undo_all()


class _Shown:
    """A parameter value Allure shows as it is (it quotes plain strings: 'local')."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def implementation_parameters(implementation: dict[str, Any]) -> dict[str, str]:
    """What a reader needs to know about the system under test, as short strings."""
    extra = implementation.get("envoyfilters") or []
    return {
        "backend": str(implementation.get("backend", "")),
        "control plane": str(implementation.get("controlPlane")
                             or (f"istio ({implementation['istioProfile']})"
                                 if implementation.get("istioProfile") else "builtin patcher")),
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
    report = yield
    if report.failed and _features(item):
        handle = getattr(item, "funcargs", {}).get("lab")
        if handle is not None:
            _attach_diagnostics(item, handle)
    return report


def _attach_diagnostics(item: pytest.Item, handle: Any) -> None:
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
        out = (run_folder(item.config) / rundir.DIAGNOSTICS
               / re.sub(r"[^\w.-]+", "_", item.nodeid))
        out.mkdir(parents=True, exist_ok=True)
        for label, text in bundle.items():
            (out / label).write_text(text, encoding="utf-8")


def record_measurement(item: pytest.Item, name: str, figures: Any) -> None:
    """A test's figures into the conformance report (`measurements`), also under xdist."""
    item.user_properties.append((MEASUREMENT, json.dumps([name, figures])))


class _Recorder:
    """Feeds the conformance collector from test reports (on the xdist controller too)."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        for key, value in report.user_properties:  # any phase: a teardown may measure too
            if key == MEASUREMENT:
                name, figures = json.loads(str(value))
                self.collector.record_measurement(name, figures)
        if _FEATURES not in props:
            return
        if _IMPLEMENTATION in props:
            self.collector.record_implementation(json.loads(str(props[_IMPLEMENTATION])))
        reason = ""
        if getattr(report, "wasxfail", None) is not None:  # expected failure: keep why
            reason = f"xfail: {report.wasxfail}" if report.wasxfail else "xfail"
        elif report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            reason = crash.message.splitlines()[0] if crash is not None else "failed"
        features = tuple(str(props[_FEATURES]).split(","))
        self.collector.record(report.nodeid, features, report.when, report.outcome, reason,
                              title=str(props.get(_TITLE, "")))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        return  # xdist workers: the controller writes the report
    collector = config.stash[_COLLECTOR]
    if not collector.results:
        return
    path = collector.write(run_folder(config) / rundir.CONFORMANCE)
    if exitstatus == pytest.ExitCode.OK and collector.whole and collector.overall() == INCOMPLETE:
        session.exitstatus = EXIT_INCOMPLETE
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        writer = getattr(reporter, "_tw", None)
        if writer is not None and writer.width_of_current_line:
            reporter.write("\n")  # after -q's "[100%]", which ends no line
        reporter.write_sep("-", f"conformance profile {collector.profile}: {collector.overall()}")
        for line in collector.summary():
            reporter.write_line(line)
        reporter.write_line(f"conformance report: {path}")
        if session.exitstatus == EXIT_INCOMPLETE:
            reporter.write_line(f"exit status {EXIT_INCOMPLETE}: the profile is not proven")
