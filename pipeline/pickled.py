"""PickledByValues: a dataclass mixin that pickles as the field values alone, not their names.

Plain Python, no Beam. Used by the record types that the DirectRunner holds at its stage
boundaries (:mod:`pipeline.records`).
"""

from __future__ import annotations

import dataclasses
import functools


@functools.cache
def _field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


class PickledByValues:
    """Pickled as its field values in declaration order, without the field names: 40 % smaller
    for an image row. Records cross the DirectRunner's stage boundaries pickled and are held
    there (benchmarks/README.md, "Memory model"), and a sharded run spills them to work files."""

    __slots__ = ()

    def __reduce__(self):
        return type(self), tuple(getattr(self, name) for name in _field_names(type(self)))
