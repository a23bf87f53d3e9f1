"""Near-duplicate grouping shared by the enrichment pipeline and training: plain Python, no Beam.

* :func:`bands`: locality-sensitive buckets. A 144-bit perceptual hash
  (:mod:`pipeline.images.features`) is cut into ``BANDS`` (12) bands; two hashes within
  ``NEAR_DUPLICATE_BITS`` (11) bits share at least one band exactly (pigeonhole), so only
  images sharing a band need comparing.
* :func:`matching_pairs`: the near-duplicate pairs among one bucket's members.
* :func:`near_duplicate_pairs`: all pairs of a list of hashes (in memory, for training data).
* :class:`UnionFind`: pairs -> groups.

``pipeline.duplicates`` runs the first two and the last inside Beam (bucketing by
``GroupByKey``); ``models.evaluation`` runs them in memory to keep near-duplicates in one fold.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Sequence

from pipeline.images.features import NEAR_DUPLICATE_BITS, hamming

BANDS = 12  # > NEAR_DUPLICATE_BITS: a match shares at least one band
MAX_BUCKET = 500  # members compared pairwise per bucket (a flood of identical placeholders stays bounded)
GROUPING_VERSION = "1"  # of the groups made from the same members: raise it when BANDS, MAX_BUCKET,
# NEAR_DUPLICATE_BITS or the naming of groups change (an incremental run then does not keep stored
# groups: pipeline/kept_groups.py; it is stored in the manifest's versions)


def bands(phash: str) -> list[tuple[int, str]]:
    """The hash's ``BANDS`` bucket keys: (band number, the band's hex digits)."""
    width = len(phash) // BANDS
    return [(band, phash[band * width:(band + 1) * width]) for band in range(BANDS)]


def matching_pairs(members: Iterable[tuple[Hashable, str]], bits: int = NEAR_DUPLICATE_BITS) -> Iterator[tuple]:
    """(key, phash) members of one bucket -> (smaller key, larger key) for every two distinct
    keys whose hashes differ in at most ``bits`` bits. Only the ``MAX_BUCKET`` smallest
    members are compared, so a bucket flooded with one placeholder image stays bounded."""
    members = sorted(set(members))[:MAX_BUCKET]
    for i, (key_a, hash_a) in enumerate(members):
        for key_b, hash_b in members[i + 1:]:
            if key_a != key_b and hamming(hash_a, hash_b) <= bits:
                yield (min(key_a, key_b), max(key_a, key_b))


def near_duplicate_pairs(phashes: Sequence[str], bits: int = NEAR_DUPLICATE_BITS) -> list[tuple[int, int]]:
    """Sorted index pairs (i < j) of near-duplicate hashes; empty hashes match nothing."""
    buckets: dict[tuple[int, str], list[tuple[int, str]]] = {}
    for i, phash in enumerate(phashes):
        if phash:
            for key in bands(phash):
                buckets.setdefault(key, []).append((i, phash))
    pairs: set[tuple[int, int]] = set()
    for members in buckets.values():
        pairs.update(matching_pairs(members, bits))
    return sorted(pairs)


class UnionFind:
    """Disjoint sets over hashable members, with path halving."""

    def __init__(self):
        self.parent: dict = {}

    def find(self, x):
        parent = self.parent
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, keep, other) -> None:
        """Join the two members' sets; the root of ``keep``'s set stays the root (the name)."""
        root_keep, root_other = self.find(keep), self.find(other)
        if root_keep != root_other:
            self.parent[root_other] = root_keep

    def groups(self) -> dict:
        """{member: its set's root} for every member seen."""
        return {member: self.find(member) for member in list(self.parent)}
