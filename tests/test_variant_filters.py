"""The extended profile's EnvoyFilters (variants, extended mutants): each applies to the lab's
own with the patcher and the real Envoy accepts the result."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lab import model
from lab.backends.local import local_vips
from lab.envoy import bootstrap, sidecar
from lab.paths import manifests_dir
from tests.conftest import needs_binaries

VARIANTS = sorted((manifests_dir() / "variants").glob("*.yaml"))
EXTENDED_MUTANTS = sorted(
    p for p in (manifests_dir() / "mutants").glob("*.yaml")
    if yaml.safe_load(p.read_text())["metadata"].get("annotations", {})
    .get("redis-mesh-lab.io/profile") == "extended")


def _patched(extra: Path) -> dict:
    probe = model.load_spec("127.0.10.1")
    vips = local_vips(probe.services)
    # the lab's EnvoyFilters and the extra one, combined as `kubectl apply` would (an extra
    # filter named like one of the lab's replaces it)
    spec = model.load_spec(vips["redis-cluster"], extra_envoyfilters=[extra])
    return sidecar.patched_config(spec, vips, endpoints=lambda s, p: [("127.0.0.1", 7000)],
                                  bind=lambda s, p: ("127.0.0.1", 0))


def test_there_are_variants_and_extended_mutants():
    assert {p.name for p in VARIANTS} >= {"downstream-auth.yaml", "mirror-fraction-50.yaml",
                                          "redis-health-check.yaml"}
    assert EXTENDED_MUTANTS


@pytest.mark.parametrize("path", EXTENDED_MUTANTS, ids=lambda p: p.stem)
def test_extended_mutants_declare_extended_features(path: Path):
    from lab.conformance.features import EXTENDED

    notes = yaml.safe_load(path.read_text())["metadata"]["annotations"]
    expected = [f for f in notes["redis-mesh-lab.io/expect-fail"].split(",") if f]
    assert set(expected) <= set(EXTENDED), expected
    assert notes["redis-mesh-lab.io/description"]


@needs_binaries
@pytest.mark.parametrize("path", VARIANTS + EXTENDED_MUTANTS, ids=lambda p: p.stem)
def test_real_envoy_accepts_it(tmp_path: Path, path: Path):
    boot = bootstrap.build(_patched(path), ("127.0.0.1", 0), "n",
                           resolve=lambda host, port: ("127.0.0.1", 7000))
    sidecar.validate(sidecar.write(boot, tmp_path / "envoy.json"))
