from __future__ import annotations

import copy

import pytest

from lab.envoy import baseline, patcher
from lab.errors import PatchError


def _config():
    listener = baseline.outbound_listener(
        "10.0.0.1", 6379, "outbound|6379||redis.ns.svc.cluster.local", ("127.0.0.1", 0))
    listener["filter_chains"][0]["filters"].append({"name": "envoy.filters.network.other"})
    return {
        "listeners": [listener,
                      baseline.outbound_listener("10.0.0.2", 80, "outbound|80||web.ns.svc."
                                                 "cluster.local", ("127.0.0.1", 0))],
        "clusters": [baseline.outbound_cluster("outbound|6379||redis.ns.svc.cluster.local",
                                               [("127.0.0.1", 1)])],
    }


def _filter(*patches):
    return {"kind": "EnvoyFilter", "metadata": {"name": "t", "namespace": "istio-system"},
            "spec": {"configPatches": list(patches)}}


def _nf(operation, value=None, listener="10.0.0.1_6379", name=baseline.TCP_PROXY, **match):
    chain = {"filter": {"name": name}} if name else {}
    return {"applyTo": "NETWORK_FILTER",
            "match": {"listener": {"name": listener, "filterChain": chain, **match}},
            "patch": {"operation": operation, "value": value}}


def _names(config, index=0):
    return [f["name"] for f in config["listeners"][index]["filter_chains"][0]["filters"]]


NEW = {"name": "envoy.filters.network.redis_proxy", "typed_config": {"@type": "x"}}


def test_replace_swaps_the_matched_filter_only():
    out = patcher.apply_envoyfilters(_config(), [_filter(_nf("REPLACE", NEW))])
    assert _names(out) == ["envoy.filters.network.redis_proxy", "envoy.filters.network.other"]
    assert _names(out, 1) == [baseline.TCP_PROXY]


def test_input_is_not_mutated():
    config = _config()
    before = copy.deepcopy(config)
    patcher.apply_envoyfilters(config, [_filter(_nf("REMOVE"))])
    assert config == before


@pytest.mark.parametrize(("operation", "expected"), [
    ("REMOVE", ["envoy.filters.network.other"]),
    ("INSERT_BEFORE", ["envoy.filters.network.redis_proxy", baseline.TCP_PROXY,
                       "envoy.filters.network.other"]),
    ("INSERT_AFTER", [baseline.TCP_PROXY, "envoy.filters.network.redis_proxy",
                      "envoy.filters.network.other"]),
    ("INSERT_FIRST", ["envoy.filters.network.redis_proxy", baseline.TCP_PROXY,
                      "envoy.filters.network.other"]),
    ("ADD", [baseline.TCP_PROXY, "envoy.filters.network.other",
             "envoy.filters.network.redis_proxy"]),
])
def test_network_filter_operations(operation, expected):
    out = patcher.apply_envoyfilters(_config(), [_filter(_nf(operation, NEW))])
    assert _names(out) == expected


def test_insert_after_the_other_filter():
    out = patcher.apply_envoyfilters(
        _config(), [_filter(_nf("INSERT_AFTER", NEW, name="envoy.filters.network.other"))])
    assert _names(out) == [baseline.TCP_PROXY, "envoy.filters.network.other",
                           "envoy.filters.network.redis_proxy"]


def test_merge_is_a_protobuf_merge():
    value = {"typed_config": {"@type": baseline.TCP_PROXY_TYPE, "idle_timeout": "5s",
                              "access_log": [{"name": "a"}]}}
    out = patcher.apply_envoyfilters(_config(), [_filter(_nf("MERGE", value))])
    merged = out["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert merged["idle_timeout"] == "5s"
    assert merged["cluster"] == "outbound|6379||redis.ns.svc.cluster.local"
    assert merged["access_log"] == [{"name": "a"}]
    assert patcher.merge({"l": [1]}, {"l": [2]}) == {"l": [1, 2]}  # repeated fields append


def test_merge_of_a_different_type_is_refused():
    value = {"typed_config": {"@type": "type.googleapis.com/other"}}
    with pytest.raises(PatchError, match="types differ"):
        patcher.apply_envoyfilters(_config(), [_filter(_nf("MERGE", value))])


def test_match_by_port_number():
    patch = _nf("REPLACE", NEW, listener=None)
    patch["match"]["listener"] = {"portNumber": 6379,
                                  "filterChain": {"filter": {"name": baseline.TCP_PROXY}}}
    out = patcher.apply_envoyfilters(_config(), [_filter(patch)])
    assert _names(out)[0] == "envoy.filters.network.redis_proxy"


def test_patch_that_matches_nothing_is_an_error_saying_what_exists():
    """The tutorial's classic failure: ${REDIS_VIP} not rendered or a wrong VIP."""
    with pytest.raises(PatchError) as error:
        patcher.apply_envoyfilters(
            _config(), [_filter(_nf("REPLACE", NEW, listener="1.2.3.4_6379"))])
    message = str(error.value)
    assert "EnvoyFilter istio-system/t configPatches[0]" in message
    assert "matched nothing" in message and "10.0.0.1_6379" in message


def test_wrong_filter_name_matches_nothing():
    with pytest.raises(PatchError, match="matched nothing"):
        patcher.apply_envoyfilters(_config(), [_filter(_nf("REPLACE", NEW, name="envoy.tcp"))])


def test_other_context_matches_nothing():
    patch = _nf("REPLACE", NEW)
    patch["match"]["context"] = "SIDECAR_INBOUND"
    with pytest.raises(PatchError, match="SIDECAR_INBOUND"):
        patcher.apply_envoyfilters(_config(), [_filter(patch)])


def test_cluster_add_and_insert_first():
    new = {"name": "custom-redis-cluster"}
    out = patcher.apply_envoyfilters(_config(), [_filter(
        {"applyTo": "CLUSTER", "patch": {"operation": "INSERT_FIRST", "value": new}},
        {"applyTo": "CLUSTER", "patch": {"operation": "ADD", "value": {"name": "last"}}},
    )])
    assert [c["name"] for c in out["clusters"]] == [
        "custom-redis-cluster", "outbound|6379||redis.ns.svc.cluster.local", "last"]


def test_cluster_add_of_an_existing_name_is_refused():
    dup = {"name": "outbound|6379||redis.ns.svc.cluster.local"}
    with pytest.raises(PatchError, match="already exists"):
        patcher.apply_envoyfilters(_config(), [_filter(
            {"applyTo": "CLUSTER", "patch": {"operation": "ADD", "value": dup}})])


def test_cluster_match_by_service_and_port():
    patch = {"applyTo": "CLUSTER",
             "match": {"cluster": {"service": "redis.ns.svc.cluster.local", "portNumber": 6379}},
             "patch": {"operation": "MERGE", "value": {"connect_timeout": "1s"}}}
    out = patcher.apply_envoyfilters(_config(), [_filter(patch)])
    assert out["clusters"][0]["connect_timeout"] == "1s"
    patch["match"]["cluster"]["portNumber"] = 80
    with pytest.raises(PatchError, match="matched nothing"):
        patcher.apply_envoyfilters(_config(), [_filter(patch)])


def test_unsupported_apply_to_is_refused():
    with pytest.raises(PatchError, match="HTTP_FILTER is not supported"):
        patcher.apply_envoyfilters(_config(), [_filter({"applyTo": "HTTP_FILTER",
                                                        "patch": {"operation": "ADD"}})])
