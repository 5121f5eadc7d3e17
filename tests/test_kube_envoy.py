"""The EnvoyFilters as rendered for a kind cluster (a 10.96/12 cluster IP, pod IPs), patched
onto an Istio-shaped sidecar and checked by the real `envoy --mode validate`. Nothing runs:
validate mode parses and checks the configuration, then exits."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import model
from lab.backends.kube import readiness
from lab.envoy import bootstrap, sidecar
from lab.model import Service
from tests.conftest import needs_binaries

VIPS = {"redis-cluster": "10.96.0.50", "redis-mirror": "10.96.0.51"}
POD_IPS = {f"redis-cluster-{i}": f"10.244.0.{10 + i}" for i in range(6)}


def _config(read_policy: str, mirror: bool) -> tuple[model.LabSpec, dict]:
    spec = model.load_spec(VIPS["redis-cluster"], read_policy, mirror)

    def endpoints(service: Service, port: int) -> list[tuple[str, int]]:
        if service.name == "redis-mirror":
            return [("10.244.0.31", port)]
        return [(ip, port) for ip in POD_IPS.values()]

    config = sidecar.patched_config(spec, VIPS, endpoints,
                                    bind=lambda s, p: (VIPS.get(s.name, "0.0.0.0"), p))
    return spec, config


def _resolve(spec: model.LabSpec):
    def resolve(host: str, port: int) -> tuple[str, int] | None:
        ordinal = model.pod_ordinal(host, spec.statefulset)
        return None if ordinal is None else (POD_IPS[spec.statefulset.pod(ordinal)], port)
    return resolve


def test_patched_listener_is_what_the_readiness_check_wants() -> None:
    _, config = _config("REPLICA", True)
    listener = next(lst for lst in config["listeners"] if lst["name"] == "10.96.0.50_6379")
    names = [f["name"] for ch in listener["filter_chains"] for f in ch["filters"]]
    assert names == [readiness.REDIS_PROXY]
    assert config["clusters"][0]["name"] == model.PROXY_CLUSTER


@needs_binaries
@pytest.mark.parametrize(("read_policy", "mirror"),
                         [("REPLICA", True), ("REPLICA", False), ("MASTER", True),
                          ("PREFER_REPLICA", True), ("ANY", False)])
def test_envoy_accepts_the_kind_rendered_filters(tmp_path: Path, read_policy: str,
                                                 mirror: bool) -> None:
    spec, config = _config(read_policy, mirror)
    boot = bootstrap.build(config, ("127.0.0.1", 15000),
                           "sidecar~10.244.0.30~redis-client-abc.redis~redis.svc.cluster.local",
                           _resolve(spec))
    seeds = [e["endpoint"]["address"]["socket_address"]["address"]
             for e in boot["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0][
                 "lb_endpoints"]]
    assert seeds == list(POD_IPS.values())
    sidecar.validate(sidecar.write(boot, tmp_path / "sidecar.json"))


@needs_binaries
def test_envoy_refuses_a_bad_patch_value(tmp_path: Path) -> None:
    from lab.errors import LabError

    spec, config = _config("REPLICA", True)
    listener = next(lst for lst in config["listeners"] if lst["name"] == "10.96.0.50_6379")
    settings = listener["filter_chains"][0]["filters"][0]["typed_config"]["settings"]
    settings["read_policy"] = "SOMETIMES"
    boot = bootstrap.build(config, ("127.0.0.1", 15000), "sidecar~x", _resolve(spec))
    with pytest.raises(LabError, match="Envoy refused"):
        sidecar.validate(sidecar.write(boot, tmp_path / "bad.json"))
