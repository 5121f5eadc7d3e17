"""`lab.faults`: inject faults on a lab's nodes, remember them, and undo them.

    lab.faults.stop(shard.replicas[0])     # or a node name, or lab.mirror
    ...
    lab.faults.start(shard.replicas[0])    # reverts it (and forgets it)
    lab.faults.undo_all()                  # what the pytest plugin calls at each teardown

Each fault goes to the backend's `Access.fault(node, action)`. A fault that is still in
place is undone by `undo_all()`, newest first: kill/stop by start, freeze by unfreeze,
isolate by reconnect.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from lab import waits
from lab.topology import Node

UNDO = {"kill": "start", "stop": "start", "freeze": "unfreeze", "isolate": "reconnect"}


@dataclass(frozen=True)
class Fault:
    node: Node
    action: str


class Faults:
    def __init__(self, inject: Callable[[Node, str], None],
                 resolve: Callable[[Node | str], Node]) -> None:
        self._inject = inject
        self._resolve = resolve
        self.history: list[Fault] = []  # every fault of this test, in order
        self.active: list[Fault] = []  # those not reverted yet

    def _do(self, node: Node | str, action: str) -> Node:
        target = self._resolve(node)
        with waits.waiting(waits.FAULT):
            self._inject(target, action)
        self.history.append(Fault(target, action))
        reverted = [f for f in self.active if f.node == target and UNDO[f.action] == action]
        if reverted:
            self.active = [f for f in self.active if f not in reverted]
        elif action in UNDO:
            self.active.append(Fault(target, action))
        return target

    def kill(self, node: Node | str) -> Node:
        """SIGKILL (docker kill): no shutdown, no final fsync."""
        return self._do(node, "kill")

    def stop(self, node: Node | str) -> Node:
        """A graceful stop."""
        return self._do(node, "stop")

    def start(self, node: Node | str) -> Node:
        """Bring a killed or stopped node back, with its data and nodes.conf."""
        return self._do(node, "start")

    def freeze(self, node: Node | str) -> Node:
        """SIGSTOP (docker pause): the node holds its connections but answers nothing."""
        return self._do(node, "freeze")

    def unfreeze(self, node: Node | str) -> Node:
        return self._do(node, "unfreeze")

    def isolate(self, node: Node | str) -> Node:
        """Cut the node off from the other nodes and the proxy (LabError if unsupported)."""
        return self._do(node, "isolate")

    def reconnect(self, node: Node | str) -> Node:
        return self._do(node, "reconnect")

    def undo_all(self) -> list[Fault]:
        """Revert every fault still in place, newest first; returns what was reverted.

        Every revert is attempted; the first error is raised after the others ran.
        """
        reverted: list[Fault] = []
        first_error: BaseException | None = None
        for fault in reversed(list(self.active)):
            try:
                self._do(fault.node, UNDO[fault.action])
                reverted.append(fault)
            except Exception as exc:  # keep going: leave as little broken as possible
                first_error = first_error or exc
        self.history.clear()
        if first_error is not None:
            raise first_error
        return reverted

    def clear(self) -> None:
        with contextlib.suppress(Exception):
            self.history.clear()
