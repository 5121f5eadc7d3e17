"""Is the client's sidecar configured? Its config_dump and /clusters, as the admin API gives."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from lab import model
from lab.envoy.admin import parse_hosts

REDIS_PROXY = "envoy.filters.network.redis_proxy"


_AGENT_LOG = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z\t")


def admin_answer(output: str) -> str:
    """What the admin API answered through `pilot-agent request`, without the lines pilot-agent
    logs to stdout before its flags are read (its `--log_target` applies only after)."""
    lines = output.splitlines(keepends=True)
    while lines and _AGENT_LOG.match(lines[0]):
        lines.pop(0)
    return "".join(lines)


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def listener_filters(config_dump: str, listener: str) -> list[str] | None:
    """The network filter names of `listener` in a config_dump, None if it is absent."""
    try:
        dump = json.loads(config_dump)
    except json.JSONDecodeError:
        return None
    for node in _walk(dump):
        if node.get("name") == listener and "filter_chains" in node:
            return [f.get("name", "") for chain in node["filter_chains"]
                    for f in chain.get("filters", [])]
    return None


def sidecar_not_ready(config_dump: str, clusters: str, vip: str, port: int,
                      hosts: int) -> str | None:
    """None when the redis proxy filter and all `hosts` Redis nodes are in place, else why."""
    listener = f"{vip}_{port}"
    filters = listener_filters(config_dump, listener)
    if filters is None:
        return f"no listener {listener} in the client sidecar"
    if REDIS_PROXY not in filters:
        return f"listener {listener} has filters {filters}, not {REDIS_PROXY}"
    found = parse_hosts(clusters, model.PROXY_CLUSTER)
    if len(found) < hosts:
        return f"{model.PROXY_CLUSTER} has {len(found)}/{hosts} hosts"
    return None
