"""The mutant catalogue: broken proxies the suite must catch, and conforming
variants it must pass, each one EnvoyFilter layered after the lab's own.

`manifests/mutants/<name>.yaml` holds one EnvoyFilter whose metadata.annotations say

    redis-mesh-lab.io/expect-fail: "Feature,Feature"   # "" = a conforming variant
    redis-mesh-lab.io/profile: tutorial                 # or extended
    redis-mesh-lab.io/description: what is broken

`nox -s mutations` (lab/mutations.py) runs the suite against each one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab import manifests, paths
from lab.conformance.features import ALL, PROFILES
from lab.errors import ManifestError

ANNOTATION = "redis-mesh-lab.io/"
EXPECT_FAIL = ANNOTATION + "expect-fail"
PROFILE = ANNOTATION + "profile"
DESCRIPTION = ANNOTATION + "description"


@dataclass(frozen=True)
class Mutant:
    name: str  # the file's stem
    path: Path
    expect_fail: tuple[str, ...]  # empty: a conforming variant, every feature must pass
    profile: str
    description: str

    @property
    def conforming(self) -> bool:
        return not self.expect_fail


def catalogue_dir() -> Path:
    return paths.manifests_dir() / "mutants"


def load(path: Path) -> Mutant:
    """One catalogue entry; every mistake in it is an error naming the file."""
    documents = manifests.parse(manifests.read_text(path, str(path)), str(path))
    if len(documents) != 1 or not isinstance(documents[0], dict) \
            or documents[0].get("kind") != "EnvoyFilter":
        raise ManifestError(f"{path}: a mutant is exactly one EnvoyFilter document")
    annotations = (documents[0].get("metadata") or {}).get("annotations") or {}
    missing = [a for a in (EXPECT_FAIL, PROFILE, DESCRIPTION) if a not in annotations]
    if missing:
        raise ManifestError(f"{path}: missing annotation {', '.join(missing)}")
    expect = tuple(f.strip() for f in str(annotations[EXPECT_FAIL]).split(",") if f.strip())
    unknown = [f for f in expect if f not in ALL]
    if unknown:
        raise ManifestError(f"{path}: {EXPECT_FAIL} names unknown feature "
                            f"{', '.join(unknown)}; valid: {', '.join(ALL)}")
    profile = str(annotations[PROFILE])
    if profile not in PROFILES:
        raise ManifestError(f"{path}: {PROFILE} {profile!r} is not one of "
                            f"{', '.join(sorted(PROFILES))}")
    description = str(annotations[DESCRIPTION]).strip()
    if not description:
        raise ManifestError(f"{path}: {DESCRIPTION} is empty")
    return Mutant(name=path.stem, path=path, expect_fail=expect, profile=profile,
                  description=description)


def catalogue(directory: Path | None = None, profile: str | None = None) -> list[Mutant]:
    """Every entry of the catalogue, by name (only those of `profile` if given)."""
    root = directory or catalogue_dir()
    found = [load(path) for path in sorted(root.glob("*.yaml"))]
    return [m for m in found if profile is None or m.profile == profile]


def get(name: str, directory: Path | None = None) -> Mutant:
    for mutant in catalogue(directory):
        if mutant.name == name:
            return mutant
    raise ManifestError(f"no mutant {name!r} in {directory or catalogue_dir()}")
