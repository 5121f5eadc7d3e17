"""The one provisioning pipeline: a backend that implements only the runtime protocol
(lab.pipeline.runtime) is brought up, refused, cleaned after and taken down by it.

The fake runtime keeps its "pods" in memory and records what the pipeline asked of it: what
is tested is the sequence every backend shares (lab.pipeline.stages), its waits, its journal
and its failure path, not a backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lab.backends.base import Access, UpOptions
from lab.errors import LabError
from lab.model import LabSpec, load_spec
from lab.pipeline import UP, Pipeline, ProxyProof, StageKey
from lab.progress import Progress
from lab.state import LabState, MirrorEndpoint, ProxyEndpoint
from lab.topology import Node, Shard, Topology

QUIET = Progress(quiet=True)


@dataclass
class World:
    """What the fake runtime's infrastructure holds: the labs' pods, by lab name."""

    pods: dict[str, list[str]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    fail_in: StageKey | None = None
    not_ready_polls: int = 2  # each probe says "not yet" this many times first
    never_converges: bool = False
    undo_fails: bool = False


class FakeBuild:
    poll_interval = 0.0

    def __init__(self, world: World, options: UpOptions, journal: LabState) -> None:
        self.world, self.options, self.journal = world, options, journal
        self.polls: dict[str, int] = {}
        self.undone = False

    def sleep(self, seconds: float) -> None:
        pass

    def _do(self, key: StageKey) -> None:
        self.world.calls.append(str(key))
        if self.world.fail_in is key:
            raise LabError(f"the fake {key} stage failed")

    def _probe(self, what: str) -> str | None:
        self.polls[what] = self.polls.get(what, 0) + 1
        self.world.calls.append(f"poll {what}")
        return None if self.polls[what] > self.world.not_ready_polls else f"{what}: not yet"

    def render(self) -> LabSpec:
        self._do(StageKey.RENDER)
        return load_spec("10.0.0.1", self.options.read_policy, self.options.mirror)

    def prepare(self) -> None:
        self._do(StageKey.INFRASTRUCTURE)

    def start_control_plane(self) -> None:
        self._do(StageKey.CONTROL_PLANE)

    def start_nodes(self) -> None:
        self._do(StageKey.NODES)
        self.world.pods[self.options.name] = [f"redis-cluster-{i}" for i in range(6)]

    def nodes_not_ready(self) -> str | None:
        return self._probe("nodes")

    def create_cluster(self) -> None:
        self._do(StageKey.CLUSTER)

    def cluster_not_converged(self) -> str | None:
        if self.world.never_converges:
            return "redis-cluster-5: cluster_state:fail"
        return self._probe("cluster")

    def start_proxy(self) -> None:
        self._do(StageKey.PROXY)

    def proxy_not_ready(self) -> str | None:
        return self._probe("proxy")

    def check_control_plane(self) -> None:
        self.world.calls.append("check control plane")

    def topology(self) -> Topology:
        nodes = [Node(f"redis-cluster-{i}", "10.0.0.1", 6379) for i in range(6)]
        return Topology((Shard(((0, 16383),), nodes[0], (nodes[3],)),))

    def proof(self) -> ProxyProof | None:
        return None

    def finish(self) -> None:
        self._do(StageKey.PROVE)
        self.journal.proxy = ProxyEndpoint(host="redis-cluster", port=6379, vip="10.0.0.1")
        self.journal.mirror = MirrorEndpoint(host="10.0.0.2", port=6379)
        self.journal.shards = self.topology().to_list()

    def diagnostics(self, dest: Path) -> Path | None:
        dest.mkdir(parents=True)
        (dest / "calls.txt").write_text("\n".join(self.world.calls))
        return dest

    def undo(self) -> bool:
        self.world.calls.append("undo")
        if self.world.undo_fails:
            raise LabError("the fake engine went away")
        self.world.pods.pop(self.options.name, None)
        return True

    def close(self) -> None:
        self.world.calls.append("close")


class FakeRuntime:
    name = "local"  # a registered name: the registry reads its labs back
    variant_capacity: int | None = None
    timeouts: Mapping[StageKey, float] = {StageKey.NODES: 1.0, StageKey.CONVERGE: 1.0,
                                          StageKey.PROXY: 1.0}

    def __init__(self, world: World) -> None:
        self.world = world

    def header(self, options: UpOptions) -> list[str]:
        return [f"lab {options.name!r} on the fake runtime"]

    def describe(self, key: StageKey, options: UpOptions) -> list[str]:
        return [f"the fake {key} primitive"] if key is not StageKey.RENDER else []

    def preflight(self, options: UpOptions) -> None:
        if options.spare_pods:
            raise LabError("the fake runtime has no spare pods")

    def build(self, options: UpOptions, journal: LabState, progress: Progress) -> FakeBuild:
        return FakeBuild(self.world, options, journal)

    def running(self, state: LabState) -> bool:
        return state.name in self.world.pods

    def leftovers(self, name: str) -> bool:
        return name in self.world.pods

    def stop(self, name: str, state: LabState | None, progress: Progress) -> bool:
        self.world.calls.append(f"stop {name}")
        return self.world.pods.pop(name, None) is not None

    def access(self, state: LabState) -> Access:
        raise NotImplementedError

    def reconfigure(self, name: str, envoyfilters: Sequence[Path | str],
                    progress: Progress) -> LabState:
        raise NotImplementedError


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def fake(world: World, lab_home: Path, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    monkeypatch.chdir(tmp_path)  # diagnostics go to ./reports
    return Pipeline(FakeRuntime(world))


def test_a_fake_runtime_is_brought_up_and_down(fake: Pipeline, world: World,
                                               lab_home: Path) -> None:
    state = fake.up(UpOptions(name="f1"), QUIET)
    assert state.phase == "ready" and LabState.load("f1") == state
    stages = [c for c in world.calls if not c.startswith(("poll", "check", "close"))]
    # every stage, in the pipeline's order (converging is only waited for)
    assert stages == [str(s.key) for s in UP if s.key is not StageKey.CONVERGE]
    assert world.calls.index("cluster") < world.calls.index("poll cluster") \
        < world.calls.index("proxy")
    # each wait is polled until its probe holds, never past it
    assert world.calls.count("poll nodes") == world.calls.count("poll cluster") == \
        world.calls.count("poll proxy") == world.not_ready_polls + 1
    assert world.calls.index("poll proxy") > world.calls.index(str(StageKey.PROXY))
    assert [s.master.name for s in state.topology.shards] == ["redis-cluster-0"]

    assert fake.down("f1", QUIET) is True
    assert "f1" not in world.pods and not (lab_home / "f1").exists()
    assert fake.down("f1", QUIET) is False


def test_its_dry_run_is_the_pipeline_stages_with_its_primitives(fake: Pipeline,
                                                                lab_home: Path) -> None:
    plan = fake.dry_run(UpOptions(name="f2"))
    assert plan.splitlines()[0] == "lab 'f2' on the fake runtime"
    for number, stage in enumerate(UP, 1):
        assert f"[{number}/{len(UP)}] {stage.key}: {stage.title}" in plan
    assert "the fake converge primitive" in plan
    assert "(timeout 1s)" in plan
    assert not lab_home.exists()  # a plan creates nothing


def test_a_running_lab_is_refused_and_a_dead_ups_remains_cleared(fake: Pipeline,
                                                                 world: World) -> None:
    fake.up(UpOptions(name="f3"), QUIET)
    with pytest.raises(LabError, match="already up"):
        fake.up(UpOptions(name="f3"), QUIET)
    # an `up` killed mid-way: its journal still says "starting"
    state = LabState.load("f3")
    assert state is not None
    state.phase = "starting"
    state.save()
    world.calls.clear()
    fake.up(UpOptions(name="f3"), QUIET)
    assert world.calls[0] == "stop f3"  # what it left went first


def test_a_failed_stage_leaves_nothing_and_says_where_its_diagnostics_are(
        fake: Pipeline, world: World, lab_home: Path, tmp_path: Path) -> None:
    world.fail_in = StageKey.CLUSTER
    with pytest.raises(LabError) as caught:
        fake.up(UpOptions(name="f4"), QUIET)
    message = str(caught.value)
    assert "\n" not in message and "the fake cluster stage failed" in message
    bundle = tmp_path / "reports" / "diagnostics" / "f4"
    assert f"diagnostics in {bundle}" in message and (bundle / "calls.txt").is_file()
    assert "undo" in world.calls and "f4" not in world.pods
    assert not (lab_home / "f4").exists()


def test_keep_leaves_what_a_failed_up_created(fake: Pipeline, world: World,
                                              lab_home: Path) -> None:
    world.fail_in = StageKey.PROXY
    with pytest.raises(LabError, match="was kept: redis-mesh-lab down --name f5"):
        fake.up(UpOptions(name="f5", keep=True), QUIET)
    assert "f5" in world.pods and (lab_home / "f5").is_dir()
    assert fake.down("f5", QUIET) is True and "f5" not in world.pods


def test_a_wait_that_never_holds_names_its_condition(fake: Pipeline, world: World) -> None:
    world.never_converges = True
    with pytest.raises(LabError, match=r"timed out after 1s waiting until every node says "
                                       r"cluster_state:ok .*: redis-cluster-5: "
                                       r"cluster_state:fail"):
        fake.up(UpOptions(name="f6"), QUIET)


def test_preflight_refuses_before_anything_is_created(fake: Pipeline, world: World,
                                                      lab_home: Path) -> None:
    with pytest.raises(LabError, match="no spare pods"):
        fake.up(UpOptions(name="f7", spare_pods=1), QUIET)
    assert world.calls == [] and not (lab_home / "f7").exists()


def test_a_cleanup_that_fails_keeps_the_first_error_and_the_lab_for_down(
        fake: Pipeline, world: World, lab_home: Path) -> None:
    world.fail_in, world.undo_fails = StageKey.NODES, True
    with pytest.raises(LabError, match="the fake nodes stage failed"):
        fake.up(UpOptions(name="f8"), QUIET)
    assert (lab_home / "f8").is_dir()  # its journal: `down` finds what is left
    world.undo_fails = False
    assert fake.down("f8", QUIET) is True and "f8" not in world.pods
