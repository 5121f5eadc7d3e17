"""Envoy admin /clusters?format=json: the hosts of a cluster and their health."""

from __future__ import annotations

import json

from lab.envoy.admin import parse_hosts


def _host(port: int, **health: object) -> dict:
    return {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "health_status": health or {"eds_health_status": "HEALTHY"}}


CLUSTERS = json.dumps({"cluster_statuses": [
    {"name": "other", "host_statuses": [_host(1)]},
    {"name": "custom-redis-cluster", "host_statuses": [
        _host(7001), _host(7002, failed_active_health_check=True, eds_health_status="HEALTHY"),
        _host(7003, eds_health_status="UNHEALTHY"), _host(7004, failed_outlier_check=True)]},
]})


def test_hosts_and_health_from_json():
    assert parse_hosts(CLUSTERS, "custom-redis-cluster") == {
        "127.0.0.1:7001": "healthy", "127.0.0.1:7002": "/failed_active_hc",
        "127.0.0.1:7003": "/eds_unhealthy", "127.0.0.1:7004": "/failed_outlier_check"}
    assert parse_hosts(CLUSTERS, "missing") == {}


def test_the_text_form_still_parses():
    text = ("custom-redis-cluster::127.0.0.1:7001::health_flags::healthy\n"
            "custom-redis-cluster::127.0.0.1:7001::cx_active::0\n")
    assert parse_hosts(text, "custom-redis-cluster") == {"127.0.0.1:7001": "healthy"}
