"""MONITOR capture waits for MONITOR's +OK before it marks its window."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from lab.monitor import encode, start_monitor


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    client, server = socket.socketpair()
    yield client, server
    client.close()
    server.close()


def _read_request(server: socket.socket, expected: bytes) -> None:
    got = b""
    while len(got) < len(expected):
        got += server.recv(4096)
    assert got == expected


def test_returns_only_after_the_ok(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    returned = threading.Event()
    result: list[bytes] = []

    def monitor() -> None:
        result.append(start_monitor(client, timeout=5))
        returned.set()

    thread = threading.Thread(target=monitor)
    thread.start()
    _read_request(server, encode(["MONITOR"]))
    # the request is in, no reply yet: start_monitor must still be waiting
    assert not returned.wait(0.3)
    server.sendall(b"+OK\r\n+1700000000.000001 [0 127.0.0.1:1] \"echo\" \"x\"\r\n")
    assert returned.wait(5)
    thread.join()
    assert result == [b"+1700000000.000001 [0 127.0.0.1:1] \"echo\" \"x\"\r\n"]


def test_the_ok_may_arrive_in_pieces(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    server.sendall(b"+O")
    timer = threading.Timer(0.1, lambda: server.sendall(b"K\r\n"))
    timer.start()
    assert start_monitor(client, timeout=5) == b""
    timer.join()


def test_prelude_replies_come_first(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    server.sendall(b"+OK\r\n+OK\r\n")
    assert start_monitor(client, prelude=[["AUTH", "admin", "secret"]], timeout=5) == b""
    _read_request(server, encode(["AUTH", "admin", "secret"], ["MONITOR"]))


@pytest.mark.parametrize("reply", [b"-NOPERM this user has no permissions\r\n",
                                   b"-ERR unknown command\r\n"])
def test_an_error_reply_is_an_error(pair: tuple[socket.socket, socket.socket],
                                    reply: bytes) -> None:
    client, server = pair
    server.sendall(reply)
    with pytest.raises(ConnectionError, match="refused"):
        start_monitor(client, timeout=5)


def test_no_reply_times_out(pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = pair
    with pytest.raises((TimeoutError, OSError)):
        start_monitor(client, timeout=0.3)
