"""The pytest plugin (entry point `pytest11`): the `lab` fixture, features, profiles, reports.

Options (all prefixed, so they never collide with other plugins): --lab-backend
local|kind|existing|attach, --lab-name, --lab-profile, --lab-keep, --lab-istio,
--lab-kubeconfig, --conformance-report. Tests declare `@pytest.mark.feature("Name")`;
tests whose features are outside the profile are skipped and reported as such. Under
pytest-xdist every worker provisions its own lab (`<name>-<worker>`); the report is
written by the controller from the test reports.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.conformance.features import ALL, PROFILES
from lab.conformance.report import Collector

_COLLECTOR = pytest.StashKey[Collector]()
_FEATURES = "redis_mesh_lab_features"
_IMPLEMENTATION = "redis_mesh_lab_implementation"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("redis-mesh-lab", "redis-mesh-lab conformance")
    group.addoption("--lab-backend", default="local",
                    choices=("local", "kind", "existing", "attach"),
                    help="provision a lab on this backend, or attach to one already up")
    group.addoption("--lab-name", default=None,
                    help="attach: the lab to use; otherwise the provisioned lab's name prefix")
    group.addoption("--lab-profile", default="tutorial", choices=sorted(PROFILES),
                    help="the features the run must prove (default: tutorial)")
    group.addoption("--lab-keep", action="store_true",
                    help="leave a provisioned lab up after the run, for debugging")
    group.addoption("--lab-istio", default="modern", choices=("modern", "tutorial"),
                    help="kind/existing: the Istio profile")
    group.addoption("--lab-kubeconfig", default=None, help="existing: the cluster's kubeconfig")
    group.addoption("--conformance-report", default="reports/conformance.yaml",
                    help="where to write the conformance report (YAML)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "feature(*names): conformance features a test proves")
    collector = Collector(profile=config.getoption("--lab-profile"))
    config.stash[_COLLECTOR] = collector
    config.pluginmanager.register(_Recorder(collector), "redis-mesh-lab-recorder")


def _features(item: pytest.Item) -> tuple[str, ...]:
    names: list[str] = []
    for marker in item.iter_markers("feature"):
        names.extend(marker.args)
    return tuple(dict.fromkeys(names))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    profile = config.getoption("--lab-profile")
    wanted = set(PROFILES[profile])
    for item in items:
        features = _features(item)
        if not features:
            continue
        unknown = [f for f in features if f not in ALL]
        if unknown:
            raise pytest.UsageError(f"{item.nodeid}: unknown feature(s) {', '.join(unknown)}")
        item.user_properties.append((_FEATURES, ",".join(features)))
        outside = [f for f in features if f not in wanted]
        if outside:
            item.add_marker(pytest.mark.skip(
                reason=f"feature {', '.join(outside)} is not in profile {profile}"))


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
        pytest.exit(f"cannot attach to lab {name!r}: {exc}", returncode=4)
    if state is None:
        pytest.exit(f"lab {name!r} is not up (redis-mesh-lab up --name {name})", returncode=4)
    access = get_backend(state.backend).access(state)
    problems = health.check(state, access).problems
    if problems:
        access.close()
        pytest.exit(f"lab {name!r} is not healthy: {'; '.join(problems)}", returncode=4)
    return Lab(state, access)


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A running lab (provisioned for this session, or attached), as a `Lab` handle."""
    from lab.backends import UpOptions, get_backend
    from lab.errors import LabError
    from lab.handle import Lab
    from lab.progress import Progress

    config = request.config
    backend_name = config.getoption("--lab-backend")
    name = config.getoption("--lab-name")
    keep = config.getoption("--lab-keep")
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
    options = UpOptions(name=name, istio=config.getoption("--lab-istio"),
                        kubeconfig=config.getoption("--lab-kubeconfig"), keep=keep)
    capture = config.pluginmanager.getplugin("capturemanager")
    shown = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    with shown:  # provisioning is long on Kubernetes: show its steps as they happen
        progress = Progress()  # bound to the real stderr, not pytest's capture
        progress.say(f"\nprovisioning lab {name!r} on backend {backend_name}")
        try:
            from lab.procs import interruptible

            with interruptible():  # SIGTERM/SIGHUP clean up like Ctrl-C
                state = backend.up(options, progress)
        except LabError as exc:
            pytest.exit(f"could not provision the lab: {exc}", returncode=3)
    handle = Lab(state, backend.access(state))
    try:
        yield handle
    finally:
        handle.close()
        if keep:
            shown = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
            with shown:
                Progress().say(f"\n--lab-keep: lab {name!r} left up; "
                               f"redis-mesh-lab down --name {name} removes it")
        else:
            backend.down(name, Progress(quiet=True))


@pytest.fixture(autouse=True)
def _redis_mesh_lab_labels(request: pytest.FixtureRequest) -> Iterator[None]:
    """Allure labels from the features; the implementation under test for the report."""
    features = _features(request.node)
    if not features:
        yield
        return
    import allure

    allure.dynamic.epic("redis-mesh-lab conformance")
    for feature in features:
        allure.dynamic.feature(feature)
    doc = (request.function.__doc__ or "").strip().splitlines()
    allure.dynamic.story(doc[0] if doc else request.node.name)
    if "lab" in request.fixturenames:
        handle = request.getfixturevalue("lab")
        request.node.user_properties.append(
            (_IMPLEMENTATION, json.dumps(handle.implementation())))
        handle.captures = []
    yield


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
        out = Path("reports") / "diagnostics" / re.sub(r"[^\w.-]+", "_", item.nodeid)
        out.mkdir(parents=True, exist_ok=True)
        for label, text in bundle.items():
            (out / label).write_text(text, encoding="utf-8")


class _Recorder:
    """Feeds the conformance collector from test reports (on the xdist controller too)."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        if _FEATURES not in props:
            return
        if _IMPLEMENTATION in props:
            self.collector.record_implementation(json.loads(str(props[_IMPLEMENTATION])))
        reason = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            reason = crash.message.splitlines()[0] if crash is not None else "failed"
        features = tuple(str(props[_FEATURES]).split(","))
        self.collector.record(report.nodeid, features, report.when, report.outcome, reason)


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        return  # xdist workers: the controller writes the report
    collector = config.stash[_COLLECTOR]
    if not collector.results:
        return
    path = Path(config.getoption("--conformance-report"))
    collector.write(path)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        built = collector.build()["profiles"][0]
        summary = ", ".join(f"{f}: {v['result']}" for f, v in built["features"].items())
        reporter.write_sep("-", f"conformance profile {built['name']}: {built['result']}")
        reporter.write_line(summary)
        reporter.write_line(f"conformance report: {path}")
