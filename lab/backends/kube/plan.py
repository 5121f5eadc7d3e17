"""A provisioning plan: ordered steps that print themselves (`--dry-run`) and run (`up`).

The same step objects produce both, so the printed plan is the executed plan. Values only
known at run time are `Ref`s: shown as `<...>` markers, filled from the executor's context.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_fixed,
)

from lab.errors import LabError
from lab.manifests import Document
from lab.progress import Progress

from .kubeapi import FIELD_MANAGER, KubeApi, ref
from .runner import Completed, Runner

TOOLS = ("kind", "istioctl", "kubectl")


@dataclass(frozen=True)
class Ref:
    """A value known only at run time: `label` in the plan, `context[key]` when running."""

    key: str
    label: str


Arg = str | Ref


class NotReady(Exception):
    """A wait's condition does not hold yet."""


@dataclass
class Executor:
    runner: Runner
    api: KubeApi
    progress: Progress
    tools: dict[str, str] = field(default_factory=dict)  # "kind" -> its path
    context: dict[str, Any] = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep

    def argv(self, args: Sequence[Arg]) -> list[str]:
        out: list[str] = []
        for arg in args:
            if isinstance(arg, Ref):
                value = self.context[arg.key]
                out.extend(str(v) for v in value) if isinstance(value, list | tuple) \
                    else out.append(str(value))
            else:
                out.append(arg)
        if out and out[0] in TOOLS:
            out[0] = self.tools.get(out[0], out[0])
        return out

    def run(self, args: Sequence[Arg], input: str | None = None, check: bool = True,
            timeout: float | None = None) -> Completed[str]:
        return self.runner.run(self.argv(args), input=input, check=check, timeout=timeout)


class _PlanDumper(yaml.SafeDumper):
    """Multi-line strings (redis.conf, scripts) as literal blocks, as they read in the files."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not any(line != line.rstrip() for line in
                                              value.splitlines()) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_PlanDumper.add_representer(str, _str)


def dump(documents: Sequence[Document]) -> str:
    """YAML of documents as applied (the same data lab.manifests.dump gives, easier to read)."""
    return yaml.dump_all(list(documents), Dumper=_PlanDumper, sort_keys=False)


def show(args: Sequence[Arg]) -> str:
    def one(arg: Arg) -> str:
        if isinstance(arg, Ref):
            return arg.label
        return arg if arg and not any(c in arg for c in " '\"$;&|") else repr(arg)

    return "$ " + " ".join(one(arg) for arg in args)


def indent(text: str, prefix: str = "      ") -> str:
    return "\n".join(prefix + line if line else line for line in text.rstrip("\n").splitlines())


class Step:
    title: str

    def describe(self) -> str:
        raise NotImplementedError

    def execute(self, ex: Executor) -> None:
        raise NotImplementedError


@dataclass
class Run(Step):
    """A command; retried `attempts` times, running `between` before each retry."""

    title: str
    argv: tuple[Arg, ...]
    attempts: int = 1
    between: tuple[Arg, ...] | None = None
    timeout: float | None = None
    skip_if: str | None = None  # a context key; the step is skipped when it is true
    skip_note: str = ""
    capture: str | None = None  # store stdout in the context under this key

    def describe(self) -> str:
        lines = [show(self.argv)]
        if self.timeout:
            lines.append(f"  (timeout {self.timeout:.0f}s)")
        if self.attempts > 1:
            retry = f"retry: up to {self.attempts} attempts, 5s apart"
            if self.between:
                retry += f"; before each retry {show(self.between)}"
            lines.append(retry)
        if self.skip_if:
            lines.append(f"skipped when {self.skip_note or self.skip_if}")
        return "\n".join(lines)

    def execute(self, ex: Executor) -> None:
        if self.skip_if and ex.context.get(self.skip_if):
            ex.progress.say(f"    skipped: {self.skip_note or self.skip_if}")
            return

        def cleanup(_: RetryCallState) -> None:
            if self.between:
                ex.run(self.between, check=False, timeout=self.timeout)

        for attempt in Retrying(stop=stop_after_attempt(self.attempts), wait=wait_fixed(5),
                                retry=retry_if_exception_type(LabError), reraise=True,
                                sleep=ex.sleep, before_sleep=cleanup):
            with attempt:
                result = ex.run(self.argv, timeout=self.timeout)
        if self.capture:
            ex.context[self.capture] = result.stdout


@dataclass
class WriteFile(Step):
    title: str
    path: Path
    text: str

    def describe(self) -> str:
        return f"write {self.path}:\n{indent(self.text)}"

    def execute(self, ex: Executor) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(self.text, encoding="utf-8")


@dataclass
class Apply(Step):
    """Server-side apply of documents; `render` (if given) re-renders them at run time."""

    title: str
    source: str
    documents: list[Document]
    render: Callable[[dict[str, Any]], list[Document]] | None = None
    note: str = ""
    attempts: int = 3

    def describe(self) -> str:
        head = (f"apply (Kubernetes API, server-side, field manager {FIELD_MANAGER}, "
                f"up to {self.attempts} attempts): {self.source}")
        if self.note:
            head += f"\n{self.note}"
        return f"{head}\n{indent('---' + chr(10) + dump(self.documents))}"

    def execute(self, ex: Executor) -> None:
        documents = self.render(ex.context) if self.render else self.documents
        for doc in documents:
            for attempt in Retrying(stop=stop_after_attempt(self.attempts), wait=wait_fixed(3),
                                    retry=retry_if_exception_type(LabError), reraise=True,
                                    sleep=ex.sleep):
                with attempt:
                    ex.api.apply(doc)
            ex.context.setdefault("applied", []).append(doc)


@dataclass
class Delete(Step):
    """Delete objects through the Kubernetes API (absent ones are not an error)."""

    title: str
    documents: list[Document]

    def describe(self) -> str:
        return "delete (Kubernetes API): " + ", ".join(ref(d) for d in self.documents)

    def execute(self, ex: Executor) -> None:
        for doc in self.documents:
            ex.api.delete(doc)


@dataclass
class Wait(Step):
    """Poll `probe` (None = condition holds, else the reason) until it holds or time is up."""

    title: str
    condition: str
    timeout: float
    probe: Callable[[Executor], str | None]
    interval: float = 2.0

    def describe(self) -> str:
        return (f"wait until {self.condition} "
                f"(timeout {self.timeout:.0f}s, polled every {self.interval:.0f}s)")

    def execute(self, ex: Executor) -> None:
        last = ["not checked yet"]

        def check() -> None:
            try:
                reason = self.probe(ex)
            except LabError as exc:
                reason = str(exc)
            if reason is not None:
                last[0] = reason
                raise NotReady(reason)

        # time is up when the clock says so or when the pauses alone add up to the timeout
        # (the same in a real run; with a test's instant sleep, the second ends the wait)
        slept = [0.0]

        def pause(seconds: float) -> None:
            slept[0] += seconds
            ex.sleep(seconds)

        def out_of_time(state: RetryCallState) -> bool:
            return stop_after_delay(self.timeout)(state) or slept[0] >= self.timeout

        try:
            for attempt in Retrying(stop=out_of_time, wait=wait_fixed(self.interval),
                                    retry=retry_if_exception_type(NotReady), reraise=True,
                                    sleep=pause):
                with attempt:
                    check()
        except NotReady:
            raise LabError(f"timed out after {self.timeout:.0f}s waiting until "
                           f"{self.condition}: {last[0]}") from None


@dataclass
class Resolve(Step):
    """Compute a run-time value (a Service IP, pod IPs, ...) into the context."""

    title: str
    key: str
    description: str
    fn: Callable[[Executor], Any]

    def describe(self) -> str:
        return f"resolve {self.description}"

    def execute(self, ex: Executor) -> None:
        ex.context[self.key] = self.fn(ex)


def render_plan(header: str, steps: Sequence[Step], start: int = 1) -> str:
    parts = [header.rstrip("\n"), ""]
    for number, step in enumerate(steps, start):
        parts.append(f"{number:2d}. {step.title}")
        parts.append(indent(step.describe()))
        parts.append("")
    return "\n".join(parts)


def execute_plan(ex: Executor, steps: Sequence[Step]) -> None:
    for step in steps:
        with ex.progress.step(step.title):
            step.execute(ex)


__all__ = ["Apply", "Delete", "Executor", "Ref", "Resolve", "Run", "Step", "Wait", "WriteFile",
           "execute_plan", "ref", "render_plan"]
