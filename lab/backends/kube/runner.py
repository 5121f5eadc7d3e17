"""The one seam every kind/kubectl/istioctl invocation goes through.

Tests swap in a recorder and assert the exact command sequence. The lab's kubeconfig is
passed as a flag by the callers and also set as KUBECONFIG here, so a command that forgets
the flag still never touches ~/.kube/config.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from lab.errors import LabError

Completed = subprocess.CompletedProcess


class CommandError(LabError):
    """A command that exited non-zero; the message is one line naming it."""

    def __init__(self, argv: Sequence[str], returncode: int, output: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit {returncode}"
        super().__init__(f"`{short(argv)}` failed (exit {returncode}): {reason}")


def short(argv: Sequence[str], words: int = 6) -> str:
    """The command as a user would type it, cut to its first words."""
    shown = [Path(argv[0]).name, *argv[1:]] if argv else []
    text = " ".join(shown[:words])
    return text + (" ..." if len(shown) > words else "")


class Runner(Protocol):
    def run(self, argv: Sequence[str], input: str | None = None, check: bool = True,
            timeout: float | None = None) -> Completed[str]: ...


class SubprocessRunner:
    """Runs commands for real, with KUBECONFIG pinned to the lab's kubeconfig and the client
    cache (KUBECACHEDIR: kubectl's and istioctl's discovery cache) in the lab's directory, so
    nothing is written under ~/.kube."""

    def __init__(self, kubeconfig: Path | None = None,
                 env: Mapping[str, str] | None = None, cache_dir: Path | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        if kubeconfig is not None:
            self.env["KUBECONFIG"] = str(kubeconfig)
        self.home: str | None = None
        if cache_dir is not None:
            self.env["KUBECACHEDIR"] = str(cache_dir)
            # istioctl ignores KUBECACHEDIR: its cache is $HOME/.kube/cache, so it runs with
            # HOME set to the lab's directory
            self.home = str(cache_dir.parent)

    def run(self, argv: Sequence[str], input: str | None = None, check: bool = True,
            timeout: float | None = None) -> Completed[str]:
        try:
            result = subprocess.run(
                list(argv), input=input, capture_output=True, text=True,
                env={**self.env, "HOME": self.home}
                if self.home and Path(argv[0]).name == "istioctl" else self.env,
                timeout=timeout, check=False,
            )
        except FileNotFoundError:
            raise LabError(f"{argv[0]} not found") from None
        except subprocess.TimeoutExpired:
            raise LabError(f"`{short(argv)}` did not finish within {timeout:.0f}s") from None
        if check and result.returncode != 0:
            raise CommandError(argv, result.returncode, result.stderr or result.stdout)
        return result
