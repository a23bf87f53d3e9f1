"""What a retailer value's images say: the vote and roll-up rules of a drafted mapping.

Every product carrying a retailer value (a category path, a gender or age word) votes with the
label the pipeline gave it (the product's model category, gender and age group: the calibrated
decision, KIDS included). A value maps to a node only with a **clear majority**: the lower bound
of the Wilson score interval of the node's vote share (one-sided, ``z`` = 1.645: 95 %) above
one half, so 4 of 5 products is not clear and 60 of 100 is. Too few products never map.

* **Category**: a node's votes are those of its whole subtree (a vote for SKINNY_JEANS is a vote
  for JEANS and CLOTHING), and the value maps to the *deepest* node with a clear majority: the
  leaf when the products agree on it, else the parent or grandparent the split leaves share.
* **Gender**: MALE or FEMALE with a clear majority of their own; otherwise UNISEX, which is to
  them what a parent is to its children (a unisex product is right for either gender,
  :data:`pipeline.label_quality.ALSO_RIGHT_ABOUT`) when UNISEX is the most voted label, or the
  value holds products of both (MALE and FEMALE each at least ``UNISEX_MIN_SHARE`` of the
  votes: "Kids"); a value short of a clear majority for one gender that is its most voted label
  (62 % FEMALE, 38 % UNISEX) is left to a person.
* **Age group**: the head's KIDS decision is set for recall on a rare class (the class-balanced
  threshold of :mod:`models.label_quality`), so on some photos (amateur shots of small garments)
  it calls most adult products KIDS. A value is therefore read *against the rest of the catalog*:
  KIDS with a clear majority of KIDS votes unless its KIDS share is clearly below the other
  values' (the two Wilson intervals apart); ADULT with a clear majority of ADULT votes, or a
  KIDS share clearly below the other values'. A catalog of one age value is read on its own.

The functions are pure: they take counts and return a :class:`Vote`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from schemas.taxonomy import Taxonomy

MIN_PRODUCTS = 5  # a value with fewer products is never mapped automatically
Z = 1.645  # one-sided 95 % Wilson lower bound
MAJORITY = 0.5
UNISEX_MIN_SHARE = 0.25  # MALE's and FEMALE's least share each for a split value to read as UNISEX


def wilson_lower(successes: int, n: int, z: float = Z) -> float:
    """Lower bound of the Wilson score interval of a share ``successes / n``."""
    if n <= 0:
        return 0.0
    p = successes / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (centre - spread) / (1 + z2 / n)


def wilson_upper(successes: int, n: int, z: float = Z) -> float:
    """Upper bound of the Wilson score interval of a share ``successes / n``."""
    return 1.0 - wilson_lower(n - successes, n, z) if n > 0 else 1.0


def votes_for(counts: Mapping[str, int], node: str, taxonomy: Taxonomy | None = None) -> int:
    """The votes for ``node``: with a taxonomy, for it or any node under it."""
    if taxonomy is None or node not in taxonomy:
        return counts.get(node, 0)
    return sum(n for label, n in counts.items() if label == node or (label in taxonomy
                                                                       and node in taxonomy.ancestors(label)))


def clearly_minority(votes: int, voters: int, z: float = Z) -> bool:
    """Fewer than half the voters, beyond doubt (the share's Wilson upper bound under one half)."""
    return voters > 0 and wilson_upper(votes, voters, z) < MAJORITY


@dataclass(frozen=True)
class Vote:
    """A value's vote: the node it maps to (None: a person decides), and why."""

    node: str | None
    products: int  # products carrying the value
    voters: int  # of them, those the model gave a label
    support: int = 0  # votes for ``node`` (its subtree for a category)
    runner_up: str | None = None  # the most-voted label outside ``node``
    runner_up_votes: int = 0
    reason: str = ""  # why ``node`` is None, or how it was reached ("rolled up", "split")

    @property
    def share(self) -> float:
        return self.support / self.voters if self.voters else 0.0

    @property
    def runner_up_share(self) -> float:
        return self.runner_up_votes / self.voters if self.voters else 0.0


def _too_few(counts: Mapping[str, int], products: int, min_products: int) -> Vote | None:
    voters = sum(counts.values())
    if products < min_products or voters < min_products:
        top = max(counts, key=counts.get) if counts else None
        return Vote(None, products, voters, 0, top, counts.get(top, 0) if top else 0,
                    f"too few products ({voters} with a model label, {min_products} needed)")
    return None


def _clear(votes: int, voters: int, z: float) -> bool:
    return wilson_lower(votes, voters, z) > MAJORITY


def _runner_up(counts: Mapping[str, int], excluded) -> tuple[str | None, int]:
    rest = {label: n for label, n in counts.items() if label not in excluded and n}
    if not rest:
        return None, 0
    label = min(rest, key=lambda k: (-rest[k], k))  # the most votes, then by name
    return label, rest[label]


def vote_category(counts: Mapping[str, int], taxonomy: Taxonomy, *, products: int | None = None,
                  min_products: int = MIN_PRODUCTS, z: float = Z) -> Vote:
    """The deepest taxonomy node whose subtree holds a clear majority of the votes."""
    counts = {label: n for label, n in counts.items() if n and label in taxonomy}
    voters = sum(counts.values())
    products = voters if products is None else products
    few = _too_few(counts, products, min_products)
    if few:
        return few
    support: dict[str, int] = {}
    for label, n in counts.items():
        for node in (label, *taxonomy.ancestors(label)):
            support[node] = support.get(node, 0) + n
    clear = [node for node, n in support.items() if _clear(n, voters, z)]
    if not clear:
        top, top_votes = _runner_up(counts, ())
        return Vote(None, products, voters, 0, top, top_votes,
                    f"no clear majority: {_shares(counts, voters)}")
    node = max(clear, key=lambda n: (taxonomy.depth(n), support[n], n))
    runner, runner_votes = _runner_up(counts, (node,))
    rolled = "" if _clear(counts.get(node, 0), voters, z) else "rolled up: the votes split under it"
    return Vote(node, products, voters, support[node], runner, runner_votes, rolled)


def vote_gender(counts: Mapping[str, int], *, products: int | None = None, min_products: int = MIN_PRODUCTS,
                z: float = Z) -> Vote:
    """MALE / FEMALE with a clear majority, else UNISEX for a value that holds both, else None."""
    counts = {label: n for label, n in counts.items() if n}
    voters = sum(counts.values())
    products = voters if products is None else products
    few = _too_few(counts, products, min_products)
    if few:
        return few
    for label in ("MALE", "FEMALE", "UNISEX"):
        if _clear(counts.get(label, 0), voters, z):
            runner, runner_votes = _runner_up(counts, (label,))
            return Vote(label, products, voters, counts[label], runner, runner_votes)
    top, _ = _runner_up(counts, ())
    if top == "UNISEX" or min(counts.get("MALE", 0), counts.get("FEMALE", 0)) >= UNISEX_MIN_SHARE * voters:
        return Vote("UNISEX", products, voters, voters, reason=f"split: {_shares(counts, voters)}")
    top, top_votes = _runner_up(counts, ())
    return Vote(None, products, voters, 0, top, top_votes, f"no clear majority: {_shares(counts, voters)}")


def vote_age(counts: Mapping[str, int], rest: Mapping[str, int] | None = None, *, products: int | None = None,
             min_products: int = MIN_PRODUCTS, z: float = Z) -> Vote:
    """ADULT or KIDS for a value, read against ``rest``: the votes of the catalog's other values
    (module docstring), else None."""
    counts = {label: n for label, n in counts.items() if n}
    voters = sum(counts.values())
    products = voters if products is None else products
    few = _too_few(counts, products, min_products)
    if few:
        return few
    kids, others = counts.get("KIDS", 0), sum((rest or {}).values())
    below = others > 0 and wilson_upper(kids, voters, z) < wilson_lower((rest or {}).get("KIDS", 0), others, z)
    adult = voters - kids
    if _clear(kids, voters, z) and not below:
        return Vote("KIDS", products, voters, kids, "ADULT" if adult else None, adult)
    if _clear(adult, voters, z) or below:
        reason = "" if _clear(adult, voters, z) else \
            f"KIDS {kids / voters:.0%}, clearly under the other values' {rest.get('KIDS', 0) / others:.0%}"
        return Vote("ADULT", products, voters, adult, "KIDS" if kids else None, kids, reason)
    return Vote(None, products, voters, 0, "KIDS", kids, f"no clear majority: {_shares(counts, voters)}")


def _shares(counts: Mapping[str, int], voters: int, top: int = 3) -> str:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return ", ".join(f"{label} {n / voters:.0%}" for label, n in ordered)
