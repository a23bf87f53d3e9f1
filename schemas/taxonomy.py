"""The 43-node fashion category hierarchy, loaded from ``taxonomy.yaml`` and validated.

A :class:`Taxonomy` answers, for any node: its path from the root, ancestors, depth,
children and its roll-up to a level, plus how two nodes relate (same, parent/child,
ancestor/descendant, unrelated). Every node is a valid label, so a retailer that labels
``JEANS`` and one that labels ``SKINNY_JEANS`` both map somewhere.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

EXPECTED_NODE_COUNT = 43
PATH_SEPARATOR = " > "
_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


class TaxonomyError(ValueError):
    """The taxonomy file is not a valid hierarchy."""


class Relation(enum.StrEnum):
    """How a predicted node relates to a reference node."""

    SAME = "SAME"
    PARENT = "PARENT"  # the other node is the reference's parent
    CHILD = "CHILD"  # the other node is a child of the reference
    ANCESTOR = "ANCESTOR"
    DESCENDANT = "DESCENDANT"
    UNRELATED = "UNRELATED"


@dataclass(frozen=True)
class Taxonomy:
    """An immutable, validated category tree. Build it with :func:`load_taxonomy`."""

    parents: dict[str, str | None]
    order: tuple[str, ...]
    genders: tuple[str, ...]
    age_groups: tuple[str, ...]
    version: int = 1

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict, *, expected_count: int | None = EXPECTED_NODE_COUNT) -> Taxonomy:
        if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
            raise TaxonomyError("taxonomy must be a mapping with a 'nodes' list")
        parents: dict[str, str | None] = {}
        order: list[str] = []
        for i, entry in enumerate(data["nodes"]):
            if not isinstance(entry, dict) or len(entry) != 1:
                raise TaxonomyError(f"node entry {i} must be a single 'NAME: PARENT' pair, got {entry!r}")
            ((name, parent),) = entry.items()
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise TaxonomyError(f"node name {name!r} must be UPPER_SNAKE_CASE")
            if name in parents:
                raise TaxonomyError(f"node {name} is listed twice")
            if parent is not None and not isinstance(parent, str):
                raise TaxonomyError(f"node {name} has a parent that is not a name: {parent!r}")
            parents[name] = parent
            order.append(name)
        for name, parent in parents.items():
            if parent is not None and parent not in parents:
                raise TaxonomyError(f"node {name} has unknown parent {parent}")
        for name in parents:  # cycle check: every chain must reach a root
            seen = set()
            node: str | None = name
            while node is not None:
                if node in seen:
                    raise TaxonomyError(f"node {name} is part of a cycle")
                seen.add(node)
                node = parents[node]
        if expected_count is not None and len(parents) != expected_count:
            raise TaxonomyError(f"taxonomy has {len(parents)} nodes, expected {expected_count}")
        genders = tuple(data.get("genders") or ())
        age_groups = tuple(data.get("age_groups") or ())
        if not genders or not age_groups:
            raise TaxonomyError("taxonomy must list 'genders' and 'age_groups'")
        return cls(parents=parents, order=tuple(order), genders=genders, age_groups=age_groups,
                   version=int(data.get("version", 1)))

    # -- queries ------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return self.order

    @property
    def roots(self) -> tuple[str, ...]:
        return tuple(n for n in self.order if self.parents[n] is None)

    def __contains__(self, name: object) -> bool:
        return name in self.parents

    def __len__(self) -> int:
        return len(self.parents)

    def _check(self, name: str) -> None:
        if name not in self.parents:
            raise KeyError(f"unknown taxonomy node {name!r}")

    def parent(self, name: str) -> str | None:
        self._check(name)
        return self.parents[name]

    def children(self, name: str) -> tuple[str, ...]:
        self._check(name)
        return tuple(n for n in self.order if self.parents[n] == name)

    def path(self, name: str) -> tuple[str, ...]:
        """Root-first path, ending with ``name``."""
        self._check(name)
        out = [name]
        while (parent := self.parents[out[-1]]) is not None:
            out.append(parent)
        return tuple(reversed(out))

    def path_string(self, name: str) -> str:
        return PATH_SEPARATOR.join(self.path(name))

    def ancestors(self, name: str) -> tuple[str, ...]:
        """Nearest first: parent, grandparent, ..., root."""
        return tuple(reversed(self.path(name)[:-1]))

    def depth(self, name: str) -> int:
        """Roots have depth 1."""
        return len(self.path(name))

    def rollup(self, name: str, level: int) -> str | None:
        """The node's ancestor (or itself) at ``level`` (1 = root); None if the node is shallower."""
        if level < 1:
            raise ValueError("level starts at 1")
        path = self.path(name)
        return path[level - 1] if len(path) >= level else None

    def relation(self, reference: str, other: str) -> Relation:
        """How ``other`` relates to ``reference`` (e.g. a prediction against a retailer label)."""
        if reference == other:
            self._check(reference)
            return Relation.SAME
        if self.parent(reference) == other:
            return Relation.PARENT
        if self.parent(other) == reference:
            return Relation.CHILD
        if other in self.ancestors(reference):
            return Relation.ANCESTOR
        if reference in self.ancestors(other):
            return Relation.DESCENDANT
        return Relation.UNRELATED

    def render_tree(self) -> str:
        """The hierarchy as an indented text tree (used by ``fashion-enrich taxonomy``)."""
        lines: list[str] = []

        def walk(node: str, indent: int) -> None:
            lines.append("  " * indent + node)
            for child in self.children(node):
                walk(child, indent + 1)

        for root in self.roots:
            walk(root, 0)
        return "\n".join(lines)


def taxonomy_file() -> Path:
    return Path(str(resources.files("schemas").joinpath("taxonomy.yaml")))


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Load and validate a taxonomy file (the shipped one by default)."""
    if path is None:
        return _default_taxonomy()
    if "://" in str(path):  # gs:// and other object stores, readable from every worker
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(str(path)) as fh:
            return Taxonomy.from_dict(yaml.safe_load(fh.read().decode("utf-8")))
    with open(path, encoding="utf-8") as fh:
        return Taxonomy.from_dict(yaml.safe_load(fh))


@functools.lru_cache(maxsize=1)
def _default_taxonomy() -> Taxonomy:
    with open(taxonomy_file(), encoding="utf-8") as fh:
        return Taxonomy.from_dict(yaml.safe_load(fh))
