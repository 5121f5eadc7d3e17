"""A plain connection to the proxy speaking RESP2 by hand: replies kept as the client sees them
("+OK", "-MOVED ...", integers, strings, lists), so a leaked redirection or an exact error
text is visible."""

from __future__ import annotations


def _encode(*args: str) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class Raw:
    """One plain connection to the proxy, speaking RESP2 by hand (replies kept as raw lines)."""

    def __init__(self, lab, timeout: float = 10) -> None:
        self.sock = lab.proxy_stream(timeout)
        self.file = self.sock.makefile("rb")

    def reply(self) -> object:
        line = self.file.readline().rstrip(b"\r\n").decode("utf-8", "replace")
        kind, rest = line[:1], line[1:]
        if kind == "*":
            return [self.reply() for _ in range(int(rest))] if int(rest) >= 0 else None
        if kind == "$":
            if int(rest) < 0:
                return None
            data = self.file.read(int(rest) + 2)[:-2]
            return data.decode("utf-8", "replace")
        if kind == ":":
            return int(rest)
        return line  # "+OK" / "-ERR ..." kept with their marker

    def call(self, *args: str) -> object:
        self.sock.sendall(_encode(*args))
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()
