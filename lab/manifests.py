"""Load and render the manifests: `${NAME}` placeholders are filled in code, never by sed.

Every error names the file it comes from. A rendered document that still holds a
placeholder is an error: an unrendered `${REDIS_VIP}` is the tutorial's commonest mistake.

A manifest may come from a user (`up --envoyfilter FILE`), so what is read is bounded: at
most MAX_BYTES of UTF-8 text without NUL bytes, whose YAML expands (aliases followed) to at
most MAX_NODES nodes. An alias bomb is refused before anything is built from it.
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
MAX_BYTES = 1 << 20  # the largest mutant in the catalogue is ~7 KiB
MAX_NODES = 100_000  # YAML nodes once every alias is followed; the catalogue's are < 1,000

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


def read_text(path: Path, source: str) -> str:
    """A manifest file's text: bounded, UTF-8, no NUL byte; else a ManifestError."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ManifestError(f"{source}: cannot read ({exc.strerror or exc})") from None
    if len(raw) > MAX_BYTES:
        raise ManifestError(f"{source}: larger than {MAX_BYTES >> 20} MiB; not a manifest")
    try:
        if b"\0" in raw:
            raise ValueError
        return raw.decode("utf-8")
    except ValueError:
        raise ManifestError(f"{source}: not a text file (YAML must be UTF-8 text)") from None


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses a document expanding (aliases followed) past MAX_NODES."""

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _expanded_size(node, {}, set())
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise yaml.YAMLError("a recursive alias")
    open_.add(key)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, open_)
        if total > MAX_NODES:
            raise yaml.YAMLError(f"expands to more than {MAX_NODES:,} nodes (an alias bomb?)")
    open_.discard(key)
    sizes[key] = total
    return total


def parse(text: str, source: str) -> list[Any]:
    """The non-empty YAML documents of `text`, bounded; a ManifestError naming `source`."""
    try:
        return [doc for doc in yaml.load_all(text, Loader=_BoundedLoader)
                if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ManifestError(f"{source}:{where} malformed YAML: {problem}") from None


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
    rendered = render_text(read_text(path, source), values or {}, source)
    documents = parse(rendered, source)
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
