"""One user-defined network per lab, on its own /24, and the addresses in it.

Subnets come from 10.213.0.0/16. The engine refuses a subnet that overlaps another
network's, which is what makes parallel `up`s safe: the first free /24 wins, starting from
a place derived from the lab's name so that parallel labs rarely even try the same one.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any

from lab.errors import LabError

from . import engine

POOL = ipaddress.IPv4Network("10.213.0.0/16")
NODE_HOST = 10  # redis-cluster-N gets .10+N
MIRROR_HOST = 20
CLIENT_HOST = 30
VIP_HOST = 100  # the redis-cluster Service's cluster IP: no container holds it


@dataclass(frozen=True)
class Addresses:
    subnet: str

    def _host(self, index: int) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + index)

    @property
    def gateway(self) -> str:
        return self._host(1)

    def node(self, ordinal: int) -> str:
        return self._host(NODE_HOST + ordinal)

    @property
    def mirror(self) -> str:
        return self._host(MIRROR_HOST)

    @property
    def client(self) -> str:
        return self._host(CLIENT_HOST)

    def vip(self, index: int = 0) -> str:
        return self._host(VIP_HOST + index)


def _taken(client: Any) -> set[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    taken: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
    for network in client.networks.list():
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
            subnet = config.get("Subnet")
            if subnet and ":" not in subnet:
                taken.add(ipaddress.ip_network(subnet, strict=False))
    return taken


def create(client: Any, lab: str) -> tuple[Any, Addresses]:
    """A testcontainers Network for the lab (created) and its addresses."""
    from docker.errors import APIError
    from docker.types import IPAMConfig, IPAMPool
    from testcontainers.core.network import Network

    subnets = list(POOL.subnets(new_prefix=24))
    start = int(hashlib.sha256(f"{engine.prefix(lab)}".encode()).hexdigest(), 16) % len(subnets)
    taken = _taken(client)
    for offset in range(len(subnets)):
        subnet = subnets[(start + offset) % len(subnets)]
        if any(subnet.overlaps(other) for other in taken):
            continue
        addresses = Addresses(str(subnet))
        network = Network(docker_network_kw={
            "driver": "bridge",
            "check_duplicate": True,
            "labels": engine.labels(lab, "network"),
            "ipam": IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet),
                                                       gateway=addresses.gateway)]),
        })
        network.name = engine.prefix(lab)
        try:
            network.create()
        except APIError as exc:
            text = str(exc).lower()
            if "overlap" in text:  # taken meanwhile by a parallel `up`
                taken.add(subnet)
                continue
            if "already exists" in text:
                raise LabError(f"lab {lab!r} is already up (network {network.name} exists; "
                               f"redis-mesh-lab down --name {lab})") from None
            raise LabError(f"docker network create {network.name}: {exc}") from None
        return network, addresses
    raise LabError(f"no free /24 left in {POOL} for the lab's network")
