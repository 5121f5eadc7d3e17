"""A lab's own loopback block, for istiod mode on the local backend.

Every 127.0.0.0/8 address routes to loopback on Linux, with no setup. In istiod mode each
lab takes a /24 `127.77.N.0/24`, so every part can listen where Kubernetes would have it:
the Service VIPs on the Service ports (the client connects to `<VIP>:6379`), each Redis
node on its own address at port 6379 (cluster bus 16379), the mirror likewise; istiod on its
well-known ports. The EnvoyFilter's seeds (pod DNS names, port 6379) then resolve, through
the lab's DNS responder, to real addresses of the right nodes.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from lab.errors import LabError

PREFIX = "127.77"
FIRST_NODE = 10
MIRROR = 30
CLIENT = 40
ISTIOD = 50
DNS = 53


@dataclass(frozen=True)
class Block:
    third: int  # 127.77.<third>.0/24

    def host(self, last: int) -> str:
        return f"{PREFIX}.{self.third}.{last}"

    def vip(self, index: int) -> str:
        return self.host(1 + index)

    def node(self, ordinal: int) -> str:
        return self.host(FIRST_NODE + ordinal)

    @property
    def mirror(self) -> str:
        return self.host(MIRROR)

    @property
    def client(self) -> str:
        return self.host(CLIENT)

    @property
    def istiod(self) -> str:
        return self.host(ISTIOD)

    @property
    def dns(self) -> str:
        return self.host(DNS)


def _unused(block: Block, probe_ports: Iterable[int]) -> bool:
    for last, port in ((1, 6379), (FIRST_NODE, 6379), (ISTIOD, 15010), *(
            (FIRST_NODE, p) for p in probe_ports)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((block.host(last), port))
            except OSError:
                return False
    return True


def allocate(name: str, taken: Iterable[int]) -> Block:
    """A block no other lab of this home uses and where nothing listens: start at the
    name's hash, so a lab usually gets the same block again."""
    used = set(taken)
    start = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 250 + 1
    for i in range(250):
        third = (start + i - 1) % 250 + 1
        block = Block(third)
        if third not in used and _unused(block, (16379,)):
            return block
    raise LabError(f"no free loopback block {PREFIX}.N.0/24 for lab {name!r}")
