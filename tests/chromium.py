"""Headless Chromium driven over the DevTools protocol on a pipe (no extra packages).

`open_page(url)` loads a page, waits until `ready_js` is true, and returns every request the
page made (Network.requestWillBeSent), the text of the rendered page and a PNG screenshot.
Only the page's own requests are recorded: the browser's background traffic is off by flags
and is not part of the page's session anyway.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--remote-debugging-pipe", "--window-size=1400,1000")


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class Page:
    requests: list[str] = field(default_factory=list)
    text: str = ""
    screenshot: bytes = b""


class _Pipe:
    def __init__(self, write_fd: int, read_fd: int) -> None:
        self.write_fd, self.read_fd = write_fd, read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        while True:
            reply = self.read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            self.events.append(reply)

    def read(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return dict(json.loads(raw))


POLL_S = 0.1  # between two checks of a page's ready condition


def open_page(url: str, ready_js: str, timeout: float = 120) -> Page:
    binary = chromium()
    if binary is None:
        raise RuntimeError("chromium not found (apt-get install chromium)")
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    with tempfile.TemporaryDirectory(prefix="redis-mesh-lab-chromium-",
                                     ignore_cleanup_errors=True) as profile:
        # Chromium reads commands on fd 3 and writes replies on fd 4; bash maps them there
        # (dash cannot name fds above 9).
        relay = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}'
        process = subprocess.Popen(
            ["bash", "-c", relay, binary, *FLAGS, f"--user-data-dir={profile}",
             "about:blank"],
            pass_fds=(to_browser_r, from_browser_w), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        pipe = _Pipe(to_browser_w, from_browser_r)
        try:
            return _load(pipe, url, ready_js, timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the browser and its helpers: our group
            process.wait(timeout=30)
            os.close(to_browser_w)
            os.close(from_browser_r)


def _load(pipe: _Pipe, url: str, ready_js: str, timeout: float) -> Page:
    target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
        "sessionId"]
    pipe.send("Network.enable", session=session)
    pipe.send("Page.enable", session=session)
    pipe.send("Page.navigate", {"url": url}, session=session)
    deadline = time.monotonic() + timeout
    ready = False
    while time.monotonic() < deadline:
        # readyState "complete": the load event has fired, so every script the page asked
        # for (async ones too) has been requested.
        check = f"document.readyState === 'complete' && Boolean({ready_js})"
        result = pipe.send("Runtime.evaluate", {"expression": check,
                                                "returnByValue": True}, session=session)
        if result.get("result", {}).get("value") is True:
            ready = True
            break
        # the page's own scripts render it on the same 2 cores: asked back to back, the
        # evaluations starved them (a report not rendered in 60 s under .ci/run's load)
        time.sleep(POLL_S)
    if not ready:
        state = pipe.send("Runtime.evaluate", {
            "expression": "document.readyState + ': ' + (document.body ? "
                          "document.body.innerText.slice(0, 300) : '(no body)')",
            "returnByValue": True}, session=session)
        shown = str(state.get("result", {}).get("value", "?")).replace("\n", " | ")
        raise RuntimeError(f"{url}: not ready within {timeout}s ({ready_js}); the page: "
                           f"{shown}")
    text = pipe.send("Runtime.evaluate", {"expression": "document.body.innerText",
                                          "returnByValue": True}, session=session)
    shot = pipe.send("Page.captureScreenshot", {"format": "png"}, session=session)
    requests = [str(e["params"]["request"]["url"]) for e in pipe.events
                if e.get("method") == "Network.requestWillBeSent"
                and e.get("sessionId") == session]
    return Page(requests=requests, text=str(text.get("result", {}).get("value", "")),
                screenshot=base64.b64decode(shot.get("data", "")))
