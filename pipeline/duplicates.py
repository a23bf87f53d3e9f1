"""GroupNearDuplicates: products whose images are near-duplicates, within and across retailers.

Two images are near-duplicates when their perceptual hashes (``pipeline.images.features``)
differ in at most ``NEAR_DUPLICATE_BITS`` (11) bits. Candidates come from locality-sensitive
bucketing: the 144-bit hash is cut into twelve 12-bit bands, and two hashes within 11 bits
share at least one band exactly (pigeonhole), so only images sharing a band are compared. Matching
products are joined into groups by a union-find ``CombineFn`` over the (few) matching pairs
(the bucketing, matching and union-find are :mod:`pipeline.grouping`'s, shared with training);
each group is named by its smallest member ``retailer/product_id``. Products in no group get
null, so memory scales with the duplicates, not with the catalog.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import apache_beam as beam

from pipeline.grouping import UnionFind, bands, matching_pairs
from pipeline.images.features import NEAR_DUPLICATE_BITS


def _bands(record):
    if not record.image_phash:
        return
    member = (f"{record.retailer}/{record.product_id}", record.image_phash)
    for key in bands(record.image_phash):
        yield key, member


def _pairs(element, bits: int):
    _, members = element
    yield from matching_pairs(members, bits)


class _Groups(beam.CombineFn):
    """Matching pairs -> {product: (group name, group size)} for every product in a group."""

    def create_accumulator(self):
        return set()

    def add_input(self, pairs, pair):
        pairs.add(pair)
        return pairs

    def merge_accumulators(self, accumulators):
        merged = set()
        for pairs in accumulators:
            merged |= pairs
        return merged

    def extract_output(self, pairs):
        sets = UnionFind()
        for a, b in sorted(pairs):
            root_a, root_b = sets.find(a), sets.find(b)
            sets.union(min(root_a, root_b), max(root_a, root_b))  # the smallest member names the group
        groups = sets.groups()
        sizes = Counter(groups.values())
        return {member: (group, sizes[group]) for member, group in groups.items()}


class GroupNearDuplicates(beam.PTransform):
    """ImageRecords -> a singleton PCollection: {"retailer/product_id": (group name, size)}."""

    def __init__(self, bits: int = NEAR_DUPLICATE_BITS):
        super().__init__()
        self._bits = bits

    def expand(self, images):
        return (
            images
            | "Bands" >> beam.FlatMap(_bands)
            | "Buckets" >> beam.GroupByKey()
            | "Pairs" >> beam.FlatMap(_pairs, self._bits)
            | "Groups" >> beam.CombineGlobally(_Groups())
        )


def attach_groups(product, groups: dict[str, tuple[str, int]]):
    """The product with its near-duplicate group and the group's size (null / 0 without one)."""
    found = groups.get(f"{product.retailer}/{product.product_id}")
    if found is None:
        return product
    return dataclasses.replace(product, duplicate_group=found[0], duplicate_group_size=found[1])
