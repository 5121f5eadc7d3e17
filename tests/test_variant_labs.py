"""Variant labs under a backend's cap: a kind lab is a whole cluster, so at most two variants
are up at once, the least recently used taken down first; an existing cluster has room for
no variant, and the test asking for one is skipped with the reason."""

from __future__ import annotations

from typing import Any

import pytest

from lab.backends import UpOptions
from lab.conformance.variants import Variant, VariantLabs
from lab.handle import Lab
from lab.progress import Progress
from lab.state import LabState


class Closable:
    """An Access of which VariantLabs only ever calls close."""

    def fault(self, node: object, action: str) -> None:
        raise AssertionError("no fault here")

    def close(self) -> None:
        pass


class Recording:
    """A backend that records its ups and downs (nothing else is called on it here)."""

    def __init__(self, name: str, capacity: int | None) -> None:
        self.name = name
        self.variant_capacity = capacity
        self.events: list[str] = []

    def up(self, options: UpOptions, progress: Progress) -> LabState:
        self.events.append(f"up {options.read_policy}")
        return LabState.starting(options.name, self.name, options.read_policy, options.mirror)

    def down(self, name: str, progress: Progress) -> bool:
        self.events.append(f"down {name.split('-v-')[1].split('-', maxsplit=1)[0]}")
        return True

    def access(self, state: LabState) -> Any:
        return Closable()


def _labs(backend: Recording) -> VariantLabs:
    base = Lab(LabState.starting("k", backend.name, "REPLICA", True), Closable())  # type: ignore[arg-type]
    return VariantLabs(base, lambda name: UpOptions(name=name),
                       lambda: Progress(quiet=True), backend)  # type: ignore[arg-type]


MASTER, ANY, PREFER = (Variant("master", read_policy="MASTER"), Variant("any", read_policy="ANY"),
                       Variant("prefer", read_policy="PREFER_MASTER"))


def test_kind_keeps_two_variants_and_takes_the_least_recently_used_down() -> None:
    backend = Recording("kind", 2)
    labs = _labs(backend)
    first = labs.get(MASTER)
    labs.get(ANY)
    assert labs.get(MASTER) is first  # a hit: no new lab, and MASTER is now the newest
    labs.get(PREFER)  # over the cap: ANY, the least recently used, goes first
    assert backend.events == ["up MASTER", "up ANY", "down any", "up PREFER_MASTER"]
    labs.get(ANY)  # asked again: brought up again, MASTER goes
    assert backend.events[-2:] == ["down master", "up ANY"]
    labs.close()
    assert backend.events[-2:] == ["down prefer", "down any"]
    assert labs.handles() == []


def test_no_cap_keeps_every_variant_until_the_end() -> None:
    backend = Recording("docker", None)
    labs = _labs(backend)
    for variant in (MASTER, ANY, PREFER):
        labs.get(variant)
    assert not [e for e in backend.events if e.startswith("down")]
    labs.close()
    assert len([e for e in backend.events if e.startswith("down")]) == 3


def test_existing_has_room_for_no_variant_and_says_why() -> None:
    backend = Recording("existing", 0)
    with pytest.raises(NotImplementedError, match=r"one lab per cluster.*--lab-backend kind"):
        _labs(backend).get(MASTER)
    assert backend.events == []


def test_every_backend_declares_its_cap() -> None:
    from lab.backends import BACKENDS, get_backend

    caps = {name: get_backend(name).variant_capacity for name in BACKENDS}
    assert caps == {"local": None, "docker": None, "kind": 2, "existing": 0}


def test_variant_names_are_valid_and_apart_for_bases_that_cut_alike() -> None:
    """Seen under pytest-xdist: conformance-<run>-gw0/gw1/gw2 cut alike, and the name came out
    43 characters long, one more than a lab name may have."""
    from lab.conformance.variants import is_variant_of, variant_name
    from lab.paths import check_name

    variant = Variant("prefer-master", read_policy="PREFER_MASTER")
    bases = [f"conformance-d4bea6-gw{i}" for i in range(3)]
    names = [variant_name(base, variant) for base in bases]
    for name in names:
        assert check_name(name) == name and len(name) <= 42
    assert len(set(names)) == 3
    assert is_variant_of(names[0], bases[0]) and not is_variant_of(names[0], bases[1])
    short = variant_name("mutations-1", variant)
    assert short.startswith("mutations-1-v-prefer-maste")
    assert is_variant_of(short, "mutations-1") and not is_variant_of(short, "mutations-12")
    assert not is_variant_of(short, "mutations")
