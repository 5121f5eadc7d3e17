"""The docker backend's Envoy configuration, without an engine: the sidecar's capture shape."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from lab import model
from lab.backends.docker import sidecar
from lab.envoy import baseline
from lab.envoy import sidecar as envoy_files
from tests.conftest import needs_binaries

VIP = "10.213.7.100"
PODS = [f"10.213.7.{10 + i}" for i in range(6)]


def _config(read_policy: str = "REPLICA") -> dict:
    spec = model.load_spec(VIP, read_policy, True)
    vips = {model.CLIENT_SERVICE: VIP, model.MIRROR_SERVICE: "10.213.7.101"}
    return sidecar.config(spec, vips, PODS, "10.213.7.20")


def test_with_capture_keeps_build_output_and_adds_the_virtual_listener():
    spec = model.load_spec(VIP)
    vips = {model.CLIENT_SERVICE: VIP, model.MIRROR_SERVICE: "10.213.7.101"}
    built = baseline.build(spec.services, vips, lambda s, p: [("10.0.0.1", p)],
                           lambda s, p: ("127.0.0.1", 0))
    before = copy.deepcopy(built)
    shaped = baseline.with_capture(built)
    assert built == before  # the local backend's baseline is untouched
    virtual = shaped["listeners"][0]
    assert virtual["name"] == "virtualOutbound" and virtual["use_original_dst"] is True
    assert virtual["address"]["socket_address"]["port_value"] == 15001
    assert all(lst["bind_to_port"] is False for lst in shaped["listeners"][1:])
    assert {c["name"] for c in shaped["clusters"]} >= {"PassthroughCluster"}


def test_envoyfilters_apply_as_written():
    config = _config()
    listener = next(lst for lst in config["listeners"] if lst["name"] == f"{VIP}_6379")
    assert listener["bind_to_port"] is False
    assert listener["address"]["socket_address"] == {"address": VIP, "port_value": 6379}
    [proxy] = listener["filter_chains"][0]["filters"]
    assert proxy["name"] == "envoy.filters.network.redis_proxy"
    assert proxy["typed_config"]["settings"]["read_policy"] == "REPLICA"
    seeds = [e["endpoint"]["address"]["socket_address"]
             for c in config["clusters"] if c["name"] == "custom-redis-cluster"
             for loc in c["load_assignment"]["endpoints"] for e in loc["lb_endpoints"]]
    # the pod DNS names verbatim, on 6379: Envoy resolves them through the engine's DNS
    assert seeds == [{"address": f"redis-cluster-{i}.redis-cluster-headless.redis.svc."
                                 "cluster.local", "port_value": 6379} for i in range(6)]


def test_capture_rules_exempt_envoy_and_loopback():
    rules = sidecar.capture_rules()
    assert "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN" in rules
    assert "-A ISTIO_OUTPUT -o lo -j RETURN" in rules
    assert "REDIRECT --to-ports 15001" in rules
    assert rules.index("--uid-owner 1337") < rules.index("-j ISTIO_REDIRECT\n")


@needs_binaries
def test_the_sidecar_bootstrap_validates(tmp_path: Path):
    boot = sidecar.bootstrap(_config(), "10.213.7.30")
    boot = json.loads(json.dumps(boot).replace(sidecar.CONFIG_DIR, str(tmp_path)))
    envoy_files.validate(envoy_files.write(boot, tmp_path / "envoy.json"))
