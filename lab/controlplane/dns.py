"""A tiny authoritative DNS responder for one lab's cluster names, on a loopback address.

Istio passes an EnvoyFilter through unchanged, so the `custom-redis-cluster` seeds stay DNS
names (`redis-cluster-N.redis-cluster-headless.redis.svc.cluster.local`). On Kubernetes the
cluster DNS answers them; here Envoy's c-ares resolver is pointed at this responder, which
answers A queries for the lab's names from a JSON zone file (name -> [IPv4, ...]), answers
other types of a known name with no data, and anything else with NXDOMAIN.

Run: `python -m lab.controlplane.dns ZONE.json HOST PORTFILE` (port 0 = any free port; the
bound port is written to PORTFILE once it answers).
"""

from __future__ import annotations

import json
import socket
import struct
import sys
from collections.abc import Mapping
from pathlib import Path

TYPE_A = 1
CLASS_IN = 1
TTL = 5


def _question(packet: bytes) -> tuple[str, int, int, int]:
    """(name, qtype, qclass, offset just past the question)."""
    labels: list[str] = []
    offset = 12
    while True:
        length = packet[offset]
        offset += 1
        if length == 0:
            break
        if length & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(packet[offset:offset + length].decode("ascii").lower())
        offset += length
    qtype, qclass = struct.unpack("!HH", packet[offset:offset + 4])
    return ".".join(labels), qtype, qclass, offset + 4


def answer(packet: bytes, zone: Mapping[str, list[str]]) -> bytes | None:
    """The response to one query packet, or None for something that is not a query."""
    if len(packet) < 12:
        return None
    ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    try:
        name, qtype, qclass, end = _question(packet)
    except (ValueError, IndexError, UnicodeDecodeError, struct.error):
        return struct.pack("!HHHHHH", ident, 0x8001, 0, 0, 0, 0)  # FORMERR
    name = name.rstrip(".")
    known = name in zone
    records = zone.get(name, []) if qtype == TYPE_A and qclass == CLASS_IN else []
    rcode = 0 if known else 3  # NXDOMAIN
    header = struct.pack("!HHHHHH", ident, 0x8400 | (flags & 0x0100) | rcode, 1,
                         len(records), 0, 0)
    body = packet[12:end]
    for address in records:
        body += struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, 4)
        body += socket.inet_aton(address)
    return header + body


def serve(zone: Mapping[str, list[str]], host: str, port: int, port_file: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, port))
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(sock.getsockname()[1]), encoding="ascii")
        tmp.replace(port_file)
        while True:
            packet, peer = sock.recvfrom(4096)
            reply = answer(packet, zone)
            if reply is not None:
                sock.sendto(reply, peer)


def main(argv: list[str]) -> int:
    zone_file, host, port_file = argv
    zone = {k.lower().rstrip("."): list(v)
            for k, v in json.loads(Path(zone_file).read_text(encoding="utf-8")).items()}
    serve(zone, host, 0, Path(port_file))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
