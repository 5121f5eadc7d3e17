"""Variant labs: a second lab, on the session lab's backend, with another configuration.

A test that needs a configuration other than the session lab's (another read policy, a 50%
mirror, downstream AUTH, a health check) asks the `lab_variant` fixture for a `Variant`; each
distinct variant is brought up once per session and taken down at its end. A backend whose
labs are costly caps how many are up at once (`Backend.variant_capacity`): beyond it, the
least recently used variant is taken down, and brought up again if a later test asks for it.

A variant starts from the session lab and changes only what it names: the session lab's mirror
setting and its extra EnvoyFilters (a mutant's) are kept, the mutant's filters applied AFTER
the variant's own, so a broken proxy stays broken in every variant of it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab import paths, waits

if TYPE_CHECKING:
    from lab.backends import Backend, UpOptions
    from lab.handle import Lab
    from lab.progress import Progress

MAX_NAME = 42  # lab.paths.check_name


@dataclass(frozen=True)
class Variant:
    label: str  # short, readable: part of the lab's name (e.g. "any", "auth")
    read_policy: str | None = None  # None: the session lab's
    mirror: bool | None = None  # None: the session lab's
    envoyfilters: tuple[str, ...] = ()  # files under manifests/variants/, or paths
    spare_pods: int = 0  # redis pods started outside the cluster (UpOptions.spare_pods)

    def filter_paths(self) -> tuple[Path, ...]:
        found = []
        for name in self.envoyfilters:
            path = Path(name)
            if not path.is_absolute():
                path = paths.manifests_dir() / "variants" / name
            found.append(path)
        return tuple(found)


def _base_digest(base: str) -> str:
    return hashlib.sha1(base.encode()).hexdigest()[:4]


def variant_name(base: str, variant: Variant) -> str:
    """`<base>-v-<label>-<digest>`, at most MAX_NAME long. A long base is cut, so the digest
    holds the whole base's (4 hex digits) and the variant's (4): the variants of two bases that
    cut alike (pytest-xdist's ...-gw0, ...-gw1) never share a name."""
    digest = _base_digest(base) + hashlib.sha1(repr(variant).encode()).hexdigest()[:4]
    label = "".join(c if c.isalnum() else "-" for c in variant.label.lower())[:12].strip("-")
    room = MAX_NAME - len(label) - len(digest) - 4  # "-v-" and "-"
    return f"{base[:room].rstrip('-')}-v-{label}-{digest}"


def is_variant_of(name: str, base: str) -> bool:
    """Whether the lab `name` is a variant of `base` (its name cut or not)."""
    if name.startswith(f"{base}-v-"):
        return True
    prefix, sep, _ = name.partition("-v-")
    digest = name.rsplit("-", 1)[-1]
    return bool(sep and prefix) and base.startswith(prefix) and len(digest) == 8 \
        and digest.startswith(_base_digest(base))


class VariantLabs:
    """The variants of one session lab, brought up on demand and all taken down by `close`."""

    def __init__(self, base: Lab, options: Callable[[str], UpOptions],
                 progress: Callable[[], Progress], backend: Backend | None = None) -> None:
        from lab.backends import get_backend

        self.base = base
        self._backend = backend or get_backend(base.state.backend)
        self._options = options  # UpOptions for a lab name (backend-specific fields filled)
        self._progress = progress
        self._labs: dict[Variant, Lab] = {}

    def get(self, variant: Variant) -> Lab:
        from lab.handle import Lab

        if variant in self._labs:
            self._labs[variant] = self._labs.pop(variant)  # the most recently used, last
            return self._labs[variant]
        backend = self._backend
        capacity = backend.variant_capacity
        if capacity == 0:
            raise NotImplementedError(
                f"backend {backend.name} holds one lab per cluster; a variant needs a "
                "lab of its own (run the extended profile with --lab-backend kind)")
        while capacity is not None and len(self._labs) >= capacity:
            self._down(next(iter(self._labs)))  # the least recently used
        inherited = [str(p) for p in self.base.state.envoyfilters]
        extra = [str(p) for p in variant.filter_paths()] + inherited
        name = variant_name(self.base.name, variant)
        fields: dict[str, Any] = {
            "read_policy": variant.read_policy or self.base.state.read_policy,
            "mirror": self.base.state.mirror_enabled if variant.mirror is None else variant.mirror,
        }
        if extra:
            fields["envoyfilters"] = tuple(Path(p) for p in extra)
        if variant.spare_pods:
            fields["spare_pods"] = variant.spare_pods
        options = dataclasses.replace(self._options(name), **fields)
        progress = self._progress()
        progress.say(f"\nprovisioning variant lab {name!r} ({variant.label}) "
                     f"on backend {backend.name}")
        with waits.waiting(waits.PROVISIONING):
            state = backend.up(options, progress)
        handle = Lab(state, backend.access(state))
        self._labs[variant] = handle
        return handle

    def handles(self) -> list[Lab]:
        return list(self._labs.values())

    def _down(self, variant: Variant) -> None:
        from lab.progress import Progress

        handle = self._labs.pop(variant)
        handle.close()
        self._backend.down(handle.name, Progress(quiet=True))

    def close(self) -> None:
        while self._labs:
            self._down(next(iter(self._labs)))
