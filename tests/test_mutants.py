"""The mutant catalogue (manifests/mutants/): its loader, and every entry applies cleanly
on top of the lab's own EnvoyFilters and changes what it says it changes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from lab import model, mutants
from lab.backends.local import local_vips
from lab.conformance.features import ALL, TUTORIAL
from lab.envoy import bootstrap, sidecar
from lab.errors import ManifestError
from lab.mutations import judge
from tests.conftest import needs_binaries

REDIS_PROXY = "envoy.filters.network.redis_proxy"


def _config(extra: list[Path]) -> dict:
    vips = local_vips(model.load_spec("127.0.10.1").services)
    spec = model.load_spec(vips["redis-cluster"], extra_envoyfilters=extra)
    return sidecar.patched_config(spec, vips, endpoints=lambda s, p: [("127.0.0.1", 7000)],
                                  bind=lambda s, p: ("127.0.0.1", 0))


def _proxy_filter(config: dict) -> dict:
    listener = next(lst for lst in config["listeners"] if lst["name"] == "127.0.10.1_6379")
    return listener["filter_chains"][0]["filters"][0]


def test_the_catalogue_has_what_the_issue_asks_for():
    found = {m.name: m for m in mutants.catalogue()}
    assert len(found) >= 18
    for name in ("read-policy-master", "read-policy-prefer-master", "read-policy-any",
                 "read-policy-prefer-replica", "mirror-read-commands", "mirror-to-the-cluster",
                 "mirror-to-a-node", "mirror-fraction-50", "mirror-fraction-95",
                 "mirror-fraction-99", "catch-all-to-mirror", "catch-all-to-passthrough",
                 "tcp-proxy-left", "no-redirection", "prefix-routes-partial",
                 "prefix-diverted"):
        assert found[name].expect_fail, name
    assert found["seeds-three"].conforming and found["seed-one-replica"].conforming
    assert found["no-redirection"].expect_fail == ("Resharding",)
    for mutant in found.values():
        assert set(mutant.expect_fail) <= set(ALL) and mutant.description


@pytest.mark.parametrize("mutant", mutants.catalogue(), ids=lambda m: m.name)
def test_every_entry_applies_after_the_labs_own_envoyfilters(mutant: mutants.Mutant):
    changed = _config([mutant.path]) != _config([])
    # an extended entry may target a variant lab (another read policy) and change nothing here
    assert changed or mutant.profile != "tutorial"


def test_entries_change_what_they_say():
    def settings(name: str) -> dict:
        return _proxy_filter(_config([mutants.get(name).path]))["typed_config"]

    assert settings("read-policy-prefer-replica")["settings"]["read_policy"] == "PREFER_REPLICA"
    assert settings("no-redirection")["settings"]["enable_redirection"] is False
    mirror = settings("mirror-fraction-99")["prefix_routes"]["catch_all_route"]
    assert mirror["request_mirror_policy"][0]["runtime_fraction"]["default_value"] == {
        "numerator": 99, "denominator": "HUNDRED"}
    assert settings("catch-all-to-passthrough")["prefix_routes"]["catch_all_route"][
        "cluster"] == "outbound|6379||redis-cluster.redis.svc.cluster.local"
    assert _proxy_filter(_config([mutants.get("tcp-proxy-left").path]))["name"] == \
        "envoy.filters.network.tcp_proxy"
    seeds = next(c for c in _config([mutants.get("seed-one-replica").path])["clusters"]
                 if c["name"] == "custom-redis-cluster")
    endpoints = seeds["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["address"] for e in endpoints] == [
        "redis-cluster-5.redis-cluster-headless.redis.svc.cluster.local"]
    # the lab's own proxy filter is untouched without a mutant
    assert _proxy_filter(_config([]))["typed_config"]["settings"]["read_policy"] == "REPLICA"


def _write(tmp_path: Path, doc: object, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(doc) if isinstance(doc, list) else yaml.safe_dump(doc))
    return path


def _mutant_doc(**annotations: str) -> dict:
    base = {"redis-mesh-lab.io/expect-fail": "WriteMirroring",
            "redis-mesh-lab.io/profile": "tutorial",
            "redis-mesh-lab.io/description": "a test mutant"}
    base.update(annotations)
    return {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
            "metadata": {"name": "m", "annotations": {k: v for k, v in base.items() if v != "-"}},
            "spec": {"configPatches": []}}


def test_loader_reads_the_annotations(tmp_path: Path):
    mutant = mutants.load(_write(tmp_path, _mutant_doc(
        **{"redis-mesh-lab.io/expect-fail": " Sharding, WriteMirroring "})))
    assert mutant.name == "m" and mutant.expect_fail == ("Sharding", "WriteMirroring")
    assert not mutant.conforming and mutant.profile == "tutorial"
    conforming = mutants.load(_write(tmp_path, _mutant_doc(
        **{"redis-mesh-lab.io/expect-fail": ""}), "ok.yaml"))
    assert conforming.conforming and conforming.expect_fail == ()
    assert [m.name for m in mutants.catalogue(tmp_path)] == ["m", "ok"]


@pytest.mark.parametrize(("doc", "message"), [
    (_mutant_doc(**{"redis-mesh-lab.io/expect-fail": "Shardingg"}), "unknown feature Shardingg"),
    (_mutant_doc(**{"redis-mesh-lab.io/profile": "gold"}), "'gold' is not one of"),
    (_mutant_doc(**{"redis-mesh-lab.io/description": "-"}), "missing annotation"),
    (_mutant_doc(**{"redis-mesh-lab.io/description": " "}), "description is empty"),
    ([_mutant_doc(), _mutant_doc()], "exactly one EnvoyFilter"),
    ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
     "exactly one EnvoyFilter"),
])
def test_loader_names_the_file_and_the_mistake(tmp_path: Path, doc: object, message: str):
    path = _write(tmp_path, doc)
    with pytest.raises(ManifestError, match=message) as error:
        mutants.load(path)
    assert str(path) in str(error.value)


def test_extra_envoyfilter_files_hold_envoyfilters_only(tmp_path: Path):
    path = _write(tmp_path, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
    with pytest.raises(ManifestError, match="EnvoyFilters only"):
        model.load_spec("127.0.10.1", extra_envoyfilters=[path])
    with pytest.raises(ManifestError, match="cannot read"):
        model.load_spec("127.0.10.1", extra_envoyfilters=[tmp_path / "missing.yaml"])


def test_verdicts():
    assert judge(["WriteMirroring"], ["WriteMirroring"]) == "caught"
    assert judge([], []) == "passed"
    assert judge(["WriteMirroring"], []) == "missed"
    assert judge([], ["Sharding"]) == "false alarm"
    assert judge(["WriteMirroring"], ["Sharding"]) == "missed, false alarm"
    assert set(TUTORIAL) <= set(ALL)


@needs_binaries
@pytest.mark.parametrize("mutant", mutants.catalogue(profile="tutorial"), ids=lambda m: m.name)
def test_real_envoy_accepts_every_entry(tmp_path: Path, mutant: mutants.Mutant):
    boot = bootstrap.build(_config([mutant.path]), ("127.0.0.1", 0), "n",
                           resolve=lambda host, port: ("127.0.0.1", 7000))
    sidecar.validate(sidecar.write(boot, tmp_path / "envoy.json"))


def test_a_suite_run_past_its_time_is_stopped_with_sigterm_so_it_can_clean_up() -> None:
    from lab import mutations

    script = ("import signal, sys, time\n"
              "def stop(*_):\n    print('variant labs taken down', flush=True); sys.exit(2)\n"
              "signal.signal(signal.SIGTERM, stop)\nprint('running', flush=True)\n"
              "while True:\n    time.sleep(0.05)\n")
    code, output = mutations._run_bounded([sys.executable, "-c", script], dict(os.environ),
                                          timeout=0.5)
    assert code == 2
    assert output.splitlines() == ["running", "variant labs taken down",
                                   "timed out after 0.5 s (stopped with SIGTERM)"]


def test_variant_labs_left_behind_by_a_run_are_taken_down(lab_home: Path) -> None:
    from lab import mutations

    for name in ("mutations-1", "mutations-1-v-auth-0ad5ae", "mutations-1-v-any-12ab34",
                 "mutations-2-v-auth-0ad5ae", "other"):
        (lab_home / name).mkdir(parents=True)

    class Downs:
        def __init__(self) -> None:
            self.names: list[str] = []

        def down(self, name: str, progress: object) -> bool:
            self.names.append(name)
            return True

    backend = Downs()
    left = mutations.sweep_variants(backend, "mutations-1")  # type: ignore[arg-type]
    assert left == backend.names == ["mutations-1-v-any-12ab34", "mutations-1-v-auth-0ad5ae"]


def test_each_profile_of_the_chosen_entries_gets_its_baseline(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lab_home: Path) -> None:
    from lab import mutations
    from lab.progress import Progress

    class Quiet:
        name = "fake"

        def up(self, options, progress):
            return None

        def down(self, name, progress):
            return True

        def reconfigure(self, name, files, progress):
            return None

    ran: list[tuple[str, str]] = []

    def evaluate(name, description, expected, *, lab, profile, reports, timeout):
        ran.append((name, profile))
        return mutations.Verdict(name, description, expected, verdict="passed")

    monkeypatch.setattr(mutations, "get_backend", lambda name: Quiet())
    monkeypatch.setattr(mutations, "evaluate", evaluate)
    extended = [m.name for m in mutants.catalogue(profile="extended")][:1]
    results = mutations.run("fake", labs=1, only=[*extended, "tcp-proxy-left"],
                            reports=tmp_path, prefix="m", keep=False,
                            progress=Progress(quiet=True))
    assert ran[:2] == [("baseline", "tutorial"), ("baseline-extended", "extended")]
    assert [r.mutant for r in results] == ["baseline", "baseline-extended", *sorted(
        [*extended, "tcp-proxy-left"])]
    ran.clear()
    mutations.run("fake", labs=1, only=["tcp-proxy-left"], reports=tmp_path, prefix="m",
                  keep=False, progress=Progress(quiet=True))
    assert [name for name, _ in ran] == ["baseline", "tcp-proxy-left"]
