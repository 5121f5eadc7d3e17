"""Load and render the manifests: `${NAME}` placeholders are filled in code, never by sed.

Every error names the file it comes from. A rendered document that still holds a
placeholder is an error: an unrendered `${REDIS_VIP}` is the tutorial's commonest mistake.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab import paths
from lab.errors import ManifestError

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

Document = dict[str, Any]


@dataclass(frozen=True)
class Manifest:
    """One rendered file: where it came from and its YAML documents."""

    path: Path
    documents: list[Document]

    @property
    def relpath(self) -> str:
        try:
            return str(self.path.relative_to(paths.manifests_dir()))
        except ValueError:
            return str(self.path)


def render_text(text: str, values: Mapping[str, str], source: str) -> str:
    """Fill every `${NAME}` from values; a name with no value is an error naming `source`."""
    missing = sorted({m.group(1) for m in PLACEHOLDER.finditer(text)} - set(values))
    if missing:
        names = ", ".join("${" + name + "}" for name in missing)
        raise ManifestError(f"{source}: no value for placeholder {names}")
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


def _find_placeholder(node: Any) -> str | None:
    if isinstance(node, str):
        match = PLACEHOLDER.search(node)
        return match.group(0) if match else None
    if isinstance(node, dict):
        for key, value in node.items():
            found = _find_placeholder(key) or _find_placeholder(value)
            if found:
                return found
    if isinstance(node, list):
        for item in node:
            found = _find_placeholder(item)
            if found:
                return found
    return None


def load(relpath: str | Path, values: Mapping[str, str] | None = None) -> Manifest:
    """Read a manifest (relative to the manifests directory, or absolute) and render it."""
    path = Path(relpath)
    if not path.is_absolute():
        path = paths.manifests_dir() / path
    source = str(relpath)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"{source}: cannot read ({exc.strerror})") from None
    rendered = render_text(text, values or {}, source)
    try:
        documents = [doc for doc in yaml.safe_load_all(rendered) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ManifestError(f"{source}:{where} malformed YAML: {problem}") from None
    for doc in documents:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise ManifestError(f"{source}: every document needs apiVersion and kind")
        leftover = _find_placeholder(doc)
        if leftover:
            raise ManifestError(f"{source}: placeholder {leftover} left after rendering")
    return Manifest(path=path, documents=documents)


def by_kind(manifests: list[Manifest], kind: str) -> list[Document]:
    return [doc for m in manifests for doc in m.documents if doc["kind"] == kind]


def dump(documents: list[Document]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False)
