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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from lab import waits
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

    @property
    def raw(self) -> tuple[bytes, ...]:
        """The arguments as the bytes the client sent (MONITOR escapes every non-ASCII byte)."""
        return tuple(arg.encode("latin-1") for arg in self.args)

    @property
    def key(self) -> bytes | None:
        return self.raw[1] if len(self.args) > 1 else None

    def line(self) -> str:
        quoted = " ".join(f'"{a}"' for a in self.args)
        origin = " (replication)" if self.replicated else ""
        return f"{self.timestamp:.6f} {self.node} [{self.client}]{origin} {quoted}"


MONITOR_OK = b"+OK"
Command = Sequence[str | bytes]


def encode(*commands: Command) -> bytes:
    """RESP arrays of bulk strings."""
    out = bytearray()
    for command in commands:
        out += b"*%d\r\n" % len(command)
        for arg in command:
            raw = arg.encode() if isinstance(arg, str) else bytes(arg)
            out += b"$%d\r\n%s\r\n" % (len(raw), raw)
    return bytes(out)


def start_monitor(sock: socket.socket, prelude: Sequence[Command] = (),
                  timeout: float = 10.0) -> bytes:
    """Send the `prelude` commands (e.g. AUTH) and MONITOR; return once MONITOR answered +OK.

    Until that +OK the server may not have registered the connection as a monitor, and a
    marker sent on another connection could be executed first and never be seen. Every
    reply of the prelude must be a simple status (+...), not an error. Returns the bytes
    that arrived after the +OK (already part of the feed).
    """
    sock.settimeout(timeout)
    sock.sendall(encode(*prelude, ["MONITOR"]))
    buffer = b""
    replies = 0
    deadline = time.monotonic() + timeout
    while True:
        while b"\r\n" in buffer:
            line, buffer = buffer.split(b"\r\n", 1)
            if not line.startswith(b"+"):
                what = "MONITOR" if replies == len(prelude) else "its prelude"
                raise ConnectionError(f"{what} refused: {line[:120].decode(errors='replace')}")
            replies += 1
            if replies > len(prelude):
                if line != MONITOR_OK:
                    raise ConnectionError(f"unexpected reply to MONITOR: {line[:80]!r}")
                return buffer
        if time.monotonic() >= deadline:
            raise TimeoutError("MONITOR did not answer +OK")
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed before MONITOR answered +OK")
        buffer += data


class _Stream(threading.Thread):
    """One node's MONITOR feed, read by a thread into `lines`."""

    def __init__(self, node: Node, address: tuple[str, int], seen: threading.Condition,
                 prelude: Sequence[Command] = ()) -> None:
        super().__init__(name=f"monitor-{node.name}", daemon=True)
        self.node = node
        self.sock = socket.create_connection(address, timeout=5)
        try:
            self._pending = start_monitor(self.sock, prelude)
        except BaseException:
            self.sock.close()
            raise
        self.lines: list[str] = []
        self.seen = seen  # shared by every stream of a capture: one wait for all of them
        self.closed = False
        self.ended = False  # the connection is gone (the node died or closed it)
        self.last = time.monotonic()  # when data last arrived

    def run(self) -> None:
        buffer = self._pending
        self.sock.settimeout(0.2)
        try:
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
                self.last = time.monotonic()
                if complete:
                    with self.seen:
                        self.lines.extend(line.decode("utf-8", "replace") for line in complete)
                        self.seen.notify_all()
        finally:
            with self.seen:
                self.ended = True
                self.seen.notify_all()

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        finally:
            self.join(timeout=2)


class _Window:
    """The entries of one stream between the begin and end markers, parsed as they come."""

    def __init__(self, stream: _Stream, begin: str, end: str,
                 replication: set[str]) -> None:
        self.stream, self.begin, self.end = stream, begin, end
        self.replication = replication
        self.read = 0  # lines consumed so far
        self.opened = self.closed = False
        self.entries: list[Entry] = []

    def advance(self) -> None:
        """Consume the new lines (call with the stream's condition held)."""
        lines = self.stream.lines
        while self.read < len(lines) and not self.closed:
            line = lines[self.read]
            self.read += 1
            if self.begin in line:
                self.opened = True
            elif self.end in line:
                self.closed = self.opened
            elif self.opened:
                self._parse(line)

    def _parse(self, line: str) -> None:
        match = _LINE.match(line)
        if not match:
            return
        args = tuple(parse_args(match["args"]))
        if not args or args[0].upper() in CHATTER:
            return
        self.entries.append(Entry(node=self.stream.node.name, timestamp=float(match["ts"]),
                                  client=match["client"], args=args,
                                  replicated=match["client"] in self.replication))


class MonitorCapture:
    """Use as a context manager: traffic sent inside the with-block is captured.

    Every stream's MONITOR has answered +OK before the begin marker is sent, so the window
    holds everything each node executed between the markers.
    """

    def __init__(self, nodes: Iterable[Node], address: Callable[[Node], tuple[str, int]],
                 replication_sources: Iterable[str],
                 send: Callable[[Node, str], object],
                 prelude: Sequence[Command] = ()) -> None:
        self.nodes = list(nodes)
        self._address = address
        self._replication = set(replication_sources)
        self._send = send
        self._prelude = prelude
        self._id = uuid.uuid4().hex[:12]
        self._seen = threading.Condition()
        self._streams: list[_Stream] = []
        self._windows: list[_Window] = []
        self.entries: list[Entry] = []

    def _marker(self, which: str) -> str:
        return f"redis-mesh-lab-monitor-{self._id}-{which}"

    def _wait(self, done: Callable[[], bool], timeout: float,
              quiet: float | None = None) -> bool:
        """Wait on the streams' shared condition until `done()` (called with it held).

        With `quiet`, give up early once no stream has received anything for that long.
        """
        deadline = time.monotonic() + timeout
        with waits.waiting(waits.MONITOR), self._seen:
            while True:
                for window in self._windows:
                    window.advance()
                if done():
                    return True
                now = time.monotonic()
                left = deadline - now
                if left <= 0:
                    return False
                if quiet is not None:
                    idle = now - max(s.last for s in self._streams)
                    if idle >= quiet:
                        return False
                    left = min(left, quiet - idle)
                self._seen.wait(left)

    def __enter__(self) -> MonitorCapture:
        begin, end = self._marker("begin"), self._marker("end")
        try:
            for node in self.nodes:
                stream = _Stream(node, self._address(node), self._seen, self._prelude)
                self._streams.append(stream)
                self._windows.append(_Window(stream, begin, end, self._replication))
                stream.start()
            for stream in self._streams:  # every MONITOR has answered +OK by now
                self._send(stream.node, begin)
            if not self._wait(lambda: all(w.opened for w in self._windows), 10.0):
                late = [w.stream.node.name for w in self._windows if not w.opened]
                raise TimeoutError(f"MONITOR begin marker not seen on {', '.join(late)}")
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for stream in self._streams:
                self._send(stream.node, self._marker("end"))
            if not self._wait(lambda: all(w.closed for w in self._windows), 10.0):
                late = [w.stream.node.name for w in self._windows if not w.closed]
                raise TimeoutError(f"MONITOR end marker not seen on {', '.join(late)}")
            self.entries = self._collect()
        finally:
            self._close()

    def _close(self) -> None:
        for stream in self._streams:
            stream.close()

    def wait_until(self, done: Callable[[list[Entry]], bool], timeout: float = 10.0,
                   quiet: float | None = None) -> bool:
        """Inside the window: wait until the entries seen so far satisfy `done`; with
        `quiet`, stop waiting once the nodes have sent nothing for that many seconds
        (what was due has arrived; the caller's assertions then judge it)."""
        def check() -> bool:
            self.entries = self._collect()
            return done(self.entries)

        return self._wait(check, timeout, quiet)

    def _collect(self) -> list[Entry]:
        entries = [entry for window in self._windows for entry in window.entries]
        entries.sort(key=lambda e: e.timestamp)
        return entries

    # ---- queries --------------------------------------------------------------------------
    def on(self, node: str | Node, *, command: str | None = None,
           key: str | bytes | None = None, include_replication: bool = False) -> list[Entry]:
        name = node.name if isinstance(node, Node) else node
        wanted = key.encode() if isinstance(key, str) else key
        return [e for e in self.entries
                if e.node == name
                and (include_replication or not e.replicated)
                and (command is None or e.command == command.upper())
                and (wanted is None or e.key == wanted)]

    def text(self) -> str:
        return "\n".join(entry.line() for entry in self.entries)
