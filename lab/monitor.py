"""MONITOR capture over many Redis nodes at once, with a marked window.

Each node gets its own connection in MONITOR mode, read by a thread. The window opens when
every stream has shown a begin marker (an ECHO sent to that node after MONITOR started)
and closes at an end marker sent after the traffic: MONITOR is ordered per node, so
everything the node executed for the traffic is inside the window. The cluster's own
chatter (PING, CLUSTER, REPLCONF, INFO, the markers) is dropped, and commands that arrive
over a replication link (their client is another cluster node) are flagged.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lab.topology import Node

CHATTER = frozenset({"PING", "CLUSTER", "REPLCONF", "INFO", "ECHO", "COMMAND", "SELECT"})
_LINE = re.compile(r'^\+?(?P<ts>\d+\.\d+) \[(?P<db>\d+) (?P<client>[^\]]*)\] (?P<args>.*)$')
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", '"': '"', "\\": "\\"}


def parse_args(text: str) -> list[str]:
    """Split MONITOR's quoted, escaped argument list ("set" "k" "v\\n")."""
    args: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != '"':
            i += 1
            continue
        i += 1
        chunk: list[str] = []
        while i < len(text) and text[i] != '"':
            if text[i] == "\\" and i + 1 < len(text):
                nxt = text[i + 1]
                if nxt == "x" and i + 3 < len(text):
                    chunk.append(chr(int(text[i + 2 : i + 4], 16)))
                    i += 4
                    continue
                chunk.append(_ESCAPES.get(nxt, nxt))
                i += 2
                continue
            chunk.append(text[i])
            i += 1
        args.append("".join(chunk))
        i += 1
    return args


@dataclass(frozen=True)
class Entry:
    node: str
    timestamp: float
    client: str
    args: tuple[str, ...]
    replicated: bool  # arrived over the replication link, not from a client

    @property
    def command(self) -> str:
        return self.args[0].upper() if self.args else ""

    def line(self) -> str:
        quoted = " ".join(f'"{a}"' for a in self.args)
        origin = " (replication)" if self.replicated else ""
        return f"{self.timestamp:.6f} {self.node} [{self.client}]{origin} {quoted}"


class _Stream(threading.Thread):
    def __init__(self, node: Node, address: tuple[str, int]) -> None:
        super().__init__(name=f"monitor-{node.name}", daemon=True)
        self.node = node
        self.sock = socket.create_connection(address, timeout=5)
        self.sock.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
        self.lines: list[str] = []
        self.seen = threading.Condition()
        self.closed = False

    def run(self) -> None:
        buffer = b""
        self.sock.settimeout(0.2)
        while not self.closed:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            buffer += data
            *complete, buffer = buffer.split(b"\r\n")
            with self.seen:
                self.lines.extend(line.decode("utf-8", "replace") for line in complete)
                self.seen.notify_all()

    def wait_for(self, marker: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.seen:
            while not any(marker in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.seen.wait(left)
        return True

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        finally:
            self.join(timeout=2)


class MonitorCapture:
    """Use as a context manager: traffic sent inside the with-block is captured."""

    def __init__(self, nodes: Iterable[Node], address: Callable[[Node], tuple[str, int]],
                 replication_sources: Iterable[str],
                 send: Callable[[Node, str], object]) -> None:
        self.nodes = list(nodes)
        self._address = address
        self._replication = set(replication_sources)
        self._send = send
        self._id = uuid.uuid4().hex[:12]
        self._streams: list[_Stream] = []
        self.entries: list[Entry] = []

    def _marker(self, which: str) -> str:
        return f"redis-mesh-lab-monitor-{self._id}-{which}"

    def _mark(self, which: str, timeout: float = 10.0) -> None:
        marker = self._marker(which)
        for stream in self._streams:
            self._send(stream.node, marker)
        late = [s.node.name for s in self._streams if not s.wait_for(marker, timeout)]
        if late:
            raise TimeoutError(f"MONITOR {which} marker not seen on {', '.join(late)}")

    def __enter__(self) -> MonitorCapture:
        try:
            for node in self.nodes:
                stream = _Stream(node, self._address(node))
                self._streams.append(stream)
                stream.start()
            self._mark("begin")
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._mark("end")
            self.entries = self._collect()
        finally:
            self._close()

    def _close(self) -> None:
        for stream in self._streams:
            stream.close()

    def wait_until(self, done: Callable[[list[Entry]], bool], timeout: float = 10.0) -> bool:
        """Inside the window: wait until the entries seen so far satisfy `done`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.entries = self._collect()
            if done(self.entries):
                return True
            time.sleep(0.02)
        return False

    def _collect(self) -> list[Entry]:
        begin, end = self._marker("begin"), self._marker("end")
        entries: list[Entry] = []
        for stream in self._streams:
            inside = False
            with stream.seen:
                lines = list(stream.lines)
            for line in lines:
                if begin in line:
                    inside = True
                    continue
                if end in line:
                    break
                match = _LINE.match(line)
                if not inside or not match:
                    continue
                args = tuple(parse_args(match["args"]))
                if not args or args[0].upper() in CHATTER:
                    continue
                entries.append(Entry(node=stream.node.name, timestamp=float(match["ts"]),
                                     client=match["client"], args=args,
                                     replicated=match["client"] in self._replication))
        entries.sort(key=lambda e: e.timestamp)
        return entries

    # ---- queries --------------------------------------------------------------------------
    def on(self, node: str | Node, *, command: str | None = None, key: str | None = None,
           include_replication: bool = False) -> list[Entry]:
        name = node.name if isinstance(node, Node) else node
        return [e for e in self.entries
                if e.node == name
                and (include_replication or not e.replicated)
                and (command is None or e.command == command.upper())
                and (key is None or (len(e.args) > 1 and e.args[1] == key))]

    def text(self) -> str:
        return "\n".join(entry.line() for entry in self.entries)
