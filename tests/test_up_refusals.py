"""`up` refuses, in one line, manifests that would produce nothing or a proxy that is not one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from lab import paths
from lab.envoy import proof
from lab.errors import LabError
from tests.conftest import cli, needs_binaries
from tests.lifecycle import (
    assert_nothing_left,
    one_line_error,
)

# ---- manifests that would produce nothing -------------------------------------------------


def _edit_yaml(path: Path, edit) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    edit(docs)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def _patches_oops(docs):
    docs[0]["spec"]["configPatches"] = "oops"


def _patches_empty(docs):
    docs[0]["spec"]["configPatches"] = []


def _mis_kinded(docs):
    docs[0]["kind"] = "EnvoyFilters"


def _replicas_six(docs):
    for doc in docs:
        if doc.get("kind") == "StatefulSet":
            doc["spec"]["replicas"] = "six"


def _unknown_directive(docs):
    for doc in docs:
        if doc.get("kind") == "ConfigMap":
            doc["data"]["redis.conf"] += "\nno-such-directive yes\n"


def _tcp_proxy_instead(docs):
    value = docs[0]["spec"]["configPatches"][0]["patch"]["value"]
    value.clear()
    value.update({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": "plain", "cluster": "outbound|6379||redis-cluster.redis.svc.cluster.local"}})


PROXY_FILTER = "istio/envoyfilter-redis-proxy-with-mirror.yaml"


@needs_binaries
@pytest.mark.parametrize(("relpath", "edit", "needles"), [
    (PROXY_FILTER, _patches_oops, (PROXY_FILTER, "configPatches must be a non-empty list")),
    (PROXY_FILTER, _patches_empty, (PROXY_FILTER, "would change nothing")),
    (PROXY_FILTER, _mis_kinded, (PROXY_FILTER, "no EnvoyFilter in it")),
    ("k8s/redis-cluster.yaml", _replicas_six, ("k8s/redis-cluster.yaml", "'six'")),
    ("k8s/redis-cluster.yaml", _unknown_directive, ("redis-cluster-0 exited",
                                                    "no-such-directive")),
    (PROXY_FILTER, _tcp_proxy_instead, (PROXY_FILTER, "has no envoy.filters.network.redis_proxy",
                                        "127.0.10.1_6379")),
])
def test_manifest_that_produces_nothing_fails_up(home: Path, tmp_path: Path, relpath: str,
                                                 edit, needles):
    copy = tmp_path / "manifests"
    shutil.copytree(paths.manifests_dir(), copy)
    _edit_yaml(copy / relpath, edit)
    result = cli("up", "--name", "nothing", env={"REDIS_MESH_LAB_MANIFESTS": str(copy)})
    one_line_error(result, *needles)
    assert_nothing_left(home, "nothing")


@needs_binaries
def test_redis_cli_timeout_is_one_line(home: Path, tmp_path: Path):
    fake = tmp_path / "redis-cli"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o755)
    result = cli("up", "--name", "slow", env={"REDIS_MESH_LAB_REDIS_CLI": str(fake),
                                             "REDIS_MESH_LAB_CLUSTER_CREATE_TIMEOUT": "1"})
    one_line_error(result, "redis-cli --cluster create did not finish in 1s")
    assert_nothing_left(home, "slow")


def test_listeners_never_share_ports():
    from lab.envoy import bootstrap

    boot = bootstrap.build({"listeners": [{"name": "a"}, {"name": "b"}], "clusters": []},
                           "/x/envoy-admin.sock", "id", lambda h, p: None)
    assert all(listener["enable_reuse_port"] is False
               for listener in boot["static_resources"]["listeners"])
    # one shared accept socket: the workers get the connections dealt evenly, not raced for
    assert all(listener["connection_balance_config"] == {"exact_balance": {}}
               for listener in boot["static_resources"]["listeners"])
    assert boot["admin"]["address"] == {"pipe": {"path": "/x/envoy-admin.sock", "mode": 0o600}}


def test_proxy_check_reads_the_listener_filters():
    dump = {"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                         "static_listeners": [{"listener": {"name": "127.0.10.1_6379",
                                                            "filter_chains": [{"filters": [
                                                                {"name": "envoy.filters.network."
                                                                         "tcp_proxy"}]}]}}]}]}
    with pytest.raises(LabError, match=r"has no envoy\.filters\.network\.redis_proxy.*f\.yaml"):
        proof.check_redis_proxy(json.dumps(dump), "127.0.10.1_6379", "f.yaml")
    with pytest.raises(LabError, match=r"no listener 127\.0\.10\.1_9"):
        proof.check_redis_proxy(json.dumps(dump), "127.0.10.1_9", "f.yaml")
    chain = dump["configs"][0]["static_listeners"][0]["listener"]["filter_chains"][0]
    chain["filters"][0]["name"] = proof.REDIS_PROXY_FILTER
    proof.check_redis_proxy(json.dumps(dump), "127.0.10.1_6379", "f.yaml")
