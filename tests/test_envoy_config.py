"""The sidecar baseline plus the lab's EnvoyFilters, checked by the real `envoy --mode validate`."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import model
from lab.backends.local import local_vips
from lab.envoy import bootstrap, sidecar
from lab.errors import LabError, PatchError
from tests.conftest import needs_binaries


def _config(read_policy="REPLICA", mirror=True):
    probe = model.load_spec("127.0.10.1")
    vips = local_vips(probe.services)
    spec = model.load_spec(vips["redis-cluster"], read_policy, mirror)
    config = sidecar.patched_config(
        spec, vips, endpoints=lambda s, p: [("127.0.0.1", 7000)],
        bind=lambda s, p: ("127.0.0.1", 0))
    return spec, vips, config


def test_baseline_is_istio_shaped():
    spec, vips, _ = _config()
    from lab.envoy import baseline

    base = baseline.build(spec.services, vips, lambda s, p: [("127.0.0.1", 1)],
                          lambda s, p: ("127.0.0.1", 0))
    names = {c["name"] for c in base["clusters"]}
    assert "outbound|6379||redis-cluster.redis.svc.cluster.local" in names
    assert "outbound|6379||redis-mirror.redis.svc.cluster.local" in names
    listeners = {lst["name"]: lst for lst in base["listeners"]}
    # headless Services get clusters but no VIP listener, as in Istio
    assert set(listeners) == {f"{vips['redis-cluster']}_6379", f"{vips['redis-cluster']}_16379",
                              f"{vips['redis-mirror']}_6379"}
    only = listeners[f"{vips['redis-cluster']}_6379"]["filter_chains"][0]["filters"]
    assert [f["name"] for f in only] == ["envoy.filters.network.tcp_proxy"]


def test_envoyfilters_turn_the_listener_into_a_redis_proxy():
    _, vips, config = _config()
    assert config["clusters"][0]["name"] == "custom-redis-cluster"  # INSERT_FIRST
    listener = next(x for x in config["listeners"] if x["name"] == f"{vips['redis-cluster']}_6379")
    filters = listener["filter_chains"][0]["filters"]
    assert [f["name"] for f in filters] == ["envoy.filters.network.redis_proxy"]
    route = filters[0]["typed_config"]["prefix_routes"]["catch_all_route"]
    assert route["cluster"] == "custom-redis-cluster"
    assert route["request_mirror_policy"][0]["exclude_read_commands"] is True


def test_seed_names_without_a_local_process_are_an_error():
    _, _, config = _config()
    with pytest.raises(PatchError, match="names nothing the lab runs"):
        bootstrap.build(config, ("127.0.0.1", 0), "n", resolve=lambda host, port: None)


@needs_binaries
@pytest.mark.parametrize("policy", model.READ_POLICIES)
@pytest.mark.parametrize("mirror", [True, False])
def test_real_envoy_accepts_every_variant(tmp_path: Path, policy: str, mirror: bool):
    _, _, config = _config(policy, mirror)
    boot = bootstrap.build(config, ("127.0.0.1", 0), "n",
                           resolve=lambda host, port: ("127.0.0.1", 7000))
    sidecar.validate(sidecar.write(boot, tmp_path / "envoy.json"))


@needs_binaries
def test_real_envoy_refusal_is_shown(tmp_path: Path):
    _, _, config = _config()
    boot = bootstrap.build(config, ("127.0.0.1", 0), "n",
                           resolve=lambda host, port: ("127.0.0.1", 7000))
    redis_filter = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    redis_filter["typed_config"]["@type"] = (
        "type.googleapis.com/envoy.config.filter.network.redis_proxy.v2.RedisProxy")  # tutorial's
    with pytest.raises(LabError, match=r"Envoy refused envoy\.json: .*v2"):
        sidecar.validate(sidecar.write(boot, tmp_path / "envoy.json"))
