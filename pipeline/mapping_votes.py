"""What a retailer value's images say: the vote and roll-up rules of a drafted mapping.

Every product carrying a retailer value (a category path, a gender or age word) votes with the
label the pipeline gave it (the product's model category, gender and age group: the calibrated
decision, KIDS included). A value maps to a node only with a **clear majority**: the lower bound
of the Wilson score interval of the node's vote share (one-sided, ``z`` = 1.645: 95 %) above
one half, so 4 of 5 products is not clear and 60 of 100 is. Too few products never map.

* **Category**: a node's votes are those of its whole subtree (a vote for SKINNY_JEANS is a vote
  for JEANS and CLOTHING), and the value maps to the *deepest* node with a clear majority: the
  leaf when the products agree on it, else the parent or grandparent the split leaves share.
* **Gender**: MALE, FEMALE or UNISEX with a clear majority of their own; otherwise UNISEX, which
  is to them what a parent is to its children (a unisex product is right for either gender,
  :data:`pipeline.label_quality.ALSO_RIGHT_ABOUT`), when MALE and FEMALE are *each* clearly
  short of a majority (the Wilson upper bound of each share under one half: a "Unisex" of 46 %
  UNISEX, 38 % MALE, 16 % FEMALE), or the value clearly holds both: each gender's share clearly
  above what the model says of the other gender's products in the same catalog (the other
  gender's votes on its clearly MALE, resp. FEMALE values: :func:`gender_background`; without
  such values, ``BOTH_GENDERS``), so a "Unisex" of 53 % MALE, 33 % UNISEX, 15 % FEMALE beside
  "Men" with 4 % FEMALE votes is UNISEX; a value that might still be one gender's (62 % FEMALE,
  38 % UNISEX) is left to a person.
* **Age group**: the head's KIDS decision is set for recall on a rare class (the class-balanced
  threshold of :mod:`models.label_quality`), so on some photos (amateur shots of small garments)
  it calls most adult products KIDS. The catalog's age values are therefore first split in two
  by their KIDS share (:func:`kids_like`: Otsu's split, weighted by products, kept only where
  the two groups' Wilson intervals are apart). A value of the kid-like group maps to KIDS with
  a clear majority of KIDS votes; a value of the other group maps to ADULT with a clear
  majority of ADULT votes, or with a KIDS share clearly under the kid-like group's (58 % KIDS
  against 90 %). Without such a split (one value, or no gap) every value is read on its own.

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
BOTH_GENDERS = 0.2  # a value holds both genders when each one's share is clearly at least this


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


def _tally(counts: Mapping[str, int], products: int | None, min_products: int, known=None):
    """(the non-zero counts of known labels, voters, products, the Vote when there are too few)."""
    counts = {label: n for label, n in counts.items() if n and (known is None or label in known)}
    voters = sum(counts.values())
    products = voters if products is None else products
    return counts, voters, products, _too_few(counts, products, min_products)


def _too_few(counts: Mapping[str, int], products: int, min_products: int) -> Vote | None:
    voters = sum(counts.values())
    if not voters:
        return Vote(None, products, 0, reason="no model label (no model of this field ran)")
    if products < min_products or voters < min_products:
        top = max(counts, key=counts.get)
        return Vote(None, products, voters, 0, top, counts[top],
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
    counts, voters, products, few = _tally(counts, products, min_products, known=taxonomy)
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
                    _no_majority(counts, voters))
    node = max(clear, key=lambda n: (taxonomy.depth(n), support[n], n))
    inside = {label for label in counts if label == node or node in taxonomy.ancestors(label)}
    runner, runner_votes = _runner_up(counts, inside)
    if not _clear(counts.get(node, 0), voters, z):
        how = f"rolled up: {_shares({k: counts[k] for k in inside}, voters)}"
    else:
        under = {k: counts[k] for k in inside if k != node}
        how = f"{_shares(under, voters)} under it" if under else ""
    return Vote(node, products, voters, support[node], runner, runner_votes, how)


def gender_background(values: list[Mapping[str, int]], *, min_products: int = MIN_PRODUCTS,
                      z: float = Z) -> dict[str, tuple[int, int]]:
    """How often the model says the other gender on the catalog's clearly one-gender values:
    for each gender, the pooled (votes for the other gender, voters) of the values with a clear
    MALE (resp. FEMALE) majority; genders without such values are left out."""
    pooled: dict[str, list[int]] = {}
    for counts in values:
        voters = sum(counts.values())
        for label, other in (("MALE", "FEMALE"), ("FEMALE", "MALE")):
            if voters >= min_products and _clear(counts.get(label, 0), voters, z):
                seen = pooled.setdefault(label, [0, 0])
                seen[0] += counts.get(other, 0)
                seen[1] += voters
    return {label: (k, n) for label, (k, n) in pooled.items()}


def _holds(votes: int, voters: int, background: tuple[int, int] | None, z: float) -> bool:
    """A gender's votes are more than the model's slips: clearly above what it says of the other
    gender's products in this catalog (``background``), or, without one, clearly at least BOTH_GENDERS."""
    floor = wilson_upper(*background, z) if background else BOTH_GENDERS
    return wilson_lower(votes, voters, z) > floor


def vote_gender(counts: Mapping[str, int], background: Mapping[str, tuple[int, int]] | None = None, *,
                products: int | None = None, min_products: int = MIN_PRODUCTS, z: float = Z) -> Vote:
    """MALE / FEMALE with a clear majority, else UNISEX for a value that holds both, else None
    (module docstring); ``background``: :func:`gender_background` of the catalog."""
    counts, voters, products, few = _tally(counts, products, min_products)
    if few:
        return few
    for label in ("MALE", "FEMALE", "UNISEX"):
        if _clear(counts.get(label, 0), voters, z):
            runner, runner_votes = _runner_up(counts, (label,))
            return Vote(label, products, voters, counts[label], runner, runner_votes)
    male, female = counts.get("MALE", 0), counts.get("FEMALE", 0)
    background = background or {}
    if (clearly_minority(male, voters, z) and clearly_minority(female, voters, z)) or \
            (_holds(female, voters, background.get("MALE"), z) and _holds(male, voters, background.get("FEMALE"), z)):
        return Vote("UNISEX", products, voters, voters, reason=f"split: {_shares(counts, voters)}")
    top, top_votes = _runner_up(counts, ())
    return Vote(None, products, voters, 0, top, top_votes, _no_majority(counts, voters))


def kids_like(values: Mapping[str, tuple[int, int]], *, min_products: int = MIN_PRODUCTS,
              z: float = Z) -> tuple[set[str], tuple[int, int]] | None:
    """The kid-like group of a catalog's age values (key -> (KIDS votes, voters)) and its pooled
    (KIDS votes, voters): Otsu's split of the KIDS shares weighted by voters, among the values of
    at least ``min_products`` voters; None without two groups whose Wilson intervals are apart."""
    ranked = sorted(((k / n, k, n, key) for key, (k, n) in values.items() if n >= min_products), key=lambda r: r[0])
    best = None
    for cut in range(1, len(ranked)):
        low, high = ranked[:cut], ranked[cut:]
        k0, n0 = sum(r[1] for r in low), sum(r[2] for r in low)
        k1, n1 = sum(r[1] for r in high), sum(r[2] for r in high)
        between = n0 * n1 * (k1 / n1 - k0 / n0) ** 2  # Otsu: the between-group variance, times total^2
        if best is None or between > best[0]:
            best = (between, high, (k0, n0), (k1, n1))
    if best is None:
        return None
    _, high, (k0, n0), (k1, n1) = best
    if wilson_upper(k0, n0, z) >= wilson_lower(k1, n1, z):
        return None
    return {r[3] for r in high}, (k1, n1)


def vote_age(counts: Mapping[str, int], kid_like: tuple[int, int] | None = None, *, in_kid_like: bool = False,
             products: int | None = None, min_products: int = MIN_PRODUCTS, z: float = Z) -> Vote:
    """ADULT or KIDS for a value (module docstring); ``kid_like``: the pooled (KIDS votes, voters)
    of the catalog's kid-like group, ``in_kid_like``: the value is of that group."""
    counts, voters, products, few = _tally(counts, products, min_products)
    if few:
        return few
    kids = counts.get("KIDS", 0)
    adult = voters - kids
    below = kid_like is not None and not in_kid_like and \
        wilson_upper(kids, voters, z) < wilson_lower(kid_like[0], kid_like[1], z)
    if _clear(kids, voters, z) and not below:
        return Vote("KIDS", products, voters, kids, "ADULT" if adult else None, adult)
    if _clear(adult, voters, z) or below:
        reason = "" if _clear(adult, voters, z) else \
            f"KIDS {kids / voters:.0%}, clearly under the kid-like values' {kid_like[0] / kid_like[1]:.0%}"
        return Vote("ADULT", products, voters, adult, "KIDS" if kids else None, kids, reason)
    return Vote(None, products, voters, 0, "KIDS", kids, _no_majority(counts, voters))


def percent(share: float) -> str:
    """``12%``; ``<1%`` for a share that rounds to nothing but is not nothing."""
    return "<1%" if 0 < share < 0.005 else f"{share:.0%}"


def _no_majority(counts: Mapping[str, int], voters: int) -> str:
    return f"no clear majority of {voters}: {_shares(counts, voters)}"


def _shares(counts: Mapping[str, int], voters: int, top: int = 3) -> str:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return ", ".join(f"{label} {percent(n / voters)}" for label, n in ordered)
