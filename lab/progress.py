"""Visible progress for long steps: each step's name, then its time."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.stream, flush=True)

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        if not self.quiet:
            print(f"  - {title} ...", end="", file=self.stream, flush=True)
        began = time.monotonic()
        try:
            yield
        except BaseException:
            if not self.quiet:
                print(" failed", file=self.stream, flush=True)
            raise
        if not self.quiet:
            print(f" ok ({time.monotonic() - began:.2f}s)", file=self.stream, flush=True)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
