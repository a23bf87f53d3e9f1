"""GroupNearDuplicates: products whose images are near-duplicates, within and across retailers.

Two images are near-duplicates when their perceptual hashes (``pipeline.images.features``)
differ in at most ``NEAR_DUPLICATE_BITS`` (11) bits. Candidates come from locality-sensitive
bucketing: the 144-bit hash is cut into twelve 12-bit bands, and two hashes within 11 bits
share at least one band exactly (pigeonhole), so only images sharing a band are compared. Each
bucket's matching pairs are reduced to a spanning forest (at most one edge per member), and a
union-find ``CombineFn`` joins the edges of all buckets into groups of products (the bucketing,
matching and union-find are :mod:`pipeline.grouping`'s, shared with training); each group is
named by its smallest member ``retailer/product_id``. Products in no group get null, so the
union-find's memory scales with the duplicates, not with the catalog. The run's graph
(:func:`~pipeline.build.build_pipeline`) takes the stages one by one: members, edges (a sharded
run: in band passes), groups, and the join of each product with its group by key.
"""

from __future__ import annotations

import zlib
from collections import Counter

import apache_beam as beam

from pipeline.grouping import MAX_BUCKET, UnionFind, bands, matching_pairs
from pipeline.images.features import NEAR_DUPLICATE_BITS
from pipeline.pickled import replaced
from pipeline.shardfiles import product_key


def slim_member(record) -> list[tuple[str, str]]:
    """An image record -> [(its product key, its perceptual hash)], or [] without a hash: all the
    near-duplicate grouping needs of an image."""
    return [(product_key(record.retailer, record.product_id), record.image_phash)] if record.image_phash else []


def _member_bands(member: tuple[str, str], part: int, parts: int):
    for key in bands(member[1]):
        if parts == 1 or zlib.crc32(repr(key).encode()) % parts == part:
            yield key, member


def _component_edges(element, bits: int):
    """One bucket's members -> a spanning forest of its matching pairs: (member, the smallest
    member of its component) for every other member. The components of all buckets' forests
    together are those of all matching pairs, with at most one edge per member and bucket
    (a bucket of many identical images gives n - 1 edges, not n^2 / 2 pairs)."""
    _, members = element
    compared = sorted(set(members))[:MAX_BUCKET]  # the members matching_pairs would compare
    keys_by_hash: dict[str, list] = {}
    for key, phash in compared:
        keys_by_hash.setdefault(phash, []).append(key)
    sets = UnionFind()
    for keys in keys_by_hash.values():  # identical hashes match (0 bits): joined without comparing
        for key in keys[1:]:
            join(sets, keys[0], key)
    # Then one representative per distinct hash: O(members + distinct^2), not O(members^2), for
    # a bucket of many copies of one image; the components are the same.
    for a, b in matching_pairs([(keys[0], phash) for phash, keys in keys_by_hash.items()], bits):
        join(sets, a, b)
    for member, root in sets.groups().items():
        if member != root:
            yield member, root


def join(sets: UnionFind, a, b) -> None:
    """Union keeping the smallest member as the root (which names the group)."""
    root_a, root_b = sets.find(a), sets.find(b)
    sets.union(min(root_a, root_b), max(root_a, root_b))


class _Groups(beam.CombineFn):
    """Edges -> {product: (group name, group size)} for every product in a group. The accumulator
    is a union-find over the products that have a near-duplicate (never the whole catalog)."""

    def create_accumulator(self):
        return UnionFind()

    def add_input(self, sets, edge):
        join(sets, *edge)
        return sets

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for sets in accumulators:
            for member, parent in sets.parent.items():
                join(merged, member, parent)
        return merged

    def extract_output(self, sets):
        groups = sets.groups()
        sizes = Counter(groups.values())
        return {member: (group, sizes[group]) for member, group in groups.items()}


class NearDuplicateEdges(beam.PTransform):
    """(product key, phash) -> spanning edges (product key, product key) of the near-duplicate
    pairs. ``part``/``parts``: only the buckets whose key hashes to ``part`` (a sharded run
    bounds each pass's bucketing by running ``parts`` of them)."""

    def __init__(self, bits: int = NEAR_DUPLICATE_BITS, *, part: int = 0, parts: int = 1):
        super().__init__()
        self._bits, self._part, self._parts = bits, part, parts

    def expand(self, members):
        part, parts = self._part, self._parts
        return (
            members
            | "Bands" >> beam.FlatMap(_member_bands, part, parts)
            | "Buckets" >> beam.GroupByKey()
            | "Edges" >> beam.FlatMap(_component_edges, self._bits)
        )


class GroupsFromEdges(beam.PTransform):
    """Edges -> a singleton PCollection: {"retailer/product_id": (group name, size)}."""

    def expand(self, edges):
        return edges | "Groups" >> beam.CombineGlobally(_Groups())


class GroupNearDuplicates(beam.PTransform):
    """ImageRecords -> a singleton PCollection: {"retailer/product_id": (group name, size)}."""

    def __init__(self, bits: int = NEAR_DUPLICATE_BITS):
        super().__init__()
        self._bits = bits

    def expand(self, images):
        return (
            images
            | "Members" >> beam.FlatMap(slim_member)
            | "Edges" >> NearDuplicateEdges(self._bits)
            | "Groups" >> GroupsFromEdges()
        )


class AttachGroups(beam.PTransform):
    """{"products": ProductRecords, "groups": (product key, (group, size)) pairs} -> the products
    with their groups, joined by product key (a sharded run's finish pass joins only its own
    products' groups: no catalog-wide side input)."""

    def expand(self, inputs):
        products, groups = inputs["products"], inputs["groups"]
        return (
            {"product": products | "KeyProducts" >> beam.Map(lambda p: (product_key(p.retailer, p.product_id), p)),
             "group": groups}
            | "JoinGroups" >> beam.CoGroupByKey()
            | "Attach" >> beam.FlatMapTuple(_attach_joined)
        )


def _attach_joined(key, grouped):
    groups = list(grouped["group"])
    found = {key: groups[0]} if groups else {}
    for product in grouped["product"]:
        yield attach_groups(product, found)


def attach_groups(product, groups: dict[str, tuple[str, int]]):
    """The product with its near-duplicate group and the group's size (null / 0 without one)."""
    found = groups.get(f"{product.retailer}/{product.product_id}")
    if found is None:
        return product
    return replaced(product, duplicate_group=found[0], duplicate_group_size=found[1])
