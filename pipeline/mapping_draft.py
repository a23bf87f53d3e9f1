"""Onboarding a retailer: a mapping file drafted from its own images.

:func:`draft_mapping` turns the evidence of :mod:`pipeline.mapping_evidence` into a mapping
file that ``--source NAME=PATH:MAPPING.yaml`` reads as it is: an ``exact`` rule for every
category value whose images vote clearly for a node (:mod:`pipeline.mapping_votes`), gender and
age words the same way, each rule under a comment with its evidence (products, vote share,
runner-up, what the titles name). Values with too little evidence are listed, unmapped, under
"needs a person", as are values held back (:func:`held_back`). The input mapping's other parts
(``source``, ``description``, ``colour``, the category ``prefix`` rules, keywords and
out-of-scope list, the age default, and its exact rules for values without a clear vote) are
kept.

The audit of a mapping in force is :mod:`pipeline.mapping_audit`.
"""

from __future__ import annotations

import datetime as dt

import yaml

from pipeline.mapping_evidence import FIELDS, ValueEvidence
from pipeline.mapping_votes import percent
from schemas.mapping import normalize_key
from schemas.taxonomy import Relation, Taxonomy

KEPT_CATEGORY_KEYS = ("keywords", "out_of_scope", "use_default_keywords")


def evidence_line(e: ValueEvidence) -> str:
    """``655 products: SHOES 92% (SPORTS_SHOES 5%); titles: 610 agree, 12 name another node (HEELS 8)``."""
    v = e.vote
    parts = [f"{e.products:,} product{'s' if e.products != 1 else ''}"]
    if v.node:
        said = f"{v.node} ({v.reason})" if v.reason.startswith("split") else \
            f"{v.node} {v.share:.0%}" + (f" ({v.reason})" if v.reason else "")
        parts.append(said + (f", runner-up {v.runner_up} {percent(v.runner_up_share)}" if v.runner_up else "")
                     + (f"; mean model score {e.mean_score:.2f}" if e.mean_score is not None else ""))
    else:
        parts.append(v.reason)
    other = sorted(e.title_other.items(), key=lambda kv: (-kv[1], kv[0]))
    named = ", ".join(f"{node} {n:,}" for node, n in other[:2])
    if v.node and (e.title_agree or other):
        parts.append(f"titles: {e.title_agree:,} agree" + (f", {sum(n for _, n in other):,} name another ({named})"
                                                            if other else ""))
    elif other:
        parts.append(f"titles name {named}")
    return "; ".join(parts)


def _scalar(text: str) -> str:
    """``text`` as a double-quoted YAML scalar on one line (control characters escaped)."""
    return yaml.safe_dump(str(text), default_style='"', allow_unicode=True, width=1 << 30).splitlines()[0]


def _block(doc: dict, indent: int = 0) -> list[str]:
    dumped = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)
    return [" " * indent + line for line in dumped.splitlines()]


def _under(key: str, rules) -> bool:
    return any(key == rule or key.startswith(rule + " > ") for rule in rules)


def held_back(evidences: list[ValueEvidence], taxonomy: Taxonomy, *, out_of_scope=(),
              product_values: list[tuple[str, ...]] = ()) -> dict[str, str]:
    """Category values with a clear vote that are still left to a person, and why: values the
    base mapping keeps out of scope, and values whose rule would override, on some product,
    the rule of another of its values with a node on another branch (a product carrying
    "Summer" and "Dresses": "summer" voted T_SHIRTS by its other products, deeper than DRESSES,
    would win; ``pipeline.taxonomy.map_category`` takes the deepest exact rule)."""
    held = {e.key: "the base mapping keeps it out of scope" for e in evidences
            if e.field == "category" and e.vote.node and _under(e.key, out_of_scope)}
    while True:
        drafted = {e.key: e.vote.node for e in evidences if e.field == "category" and e.vote.node
                   and e.key not in held}
        overrides: dict[str, dict[str, int]] = {}
        for keys in product_values:
            mapped = [(drafted[k], k) for k in dict.fromkeys(keys) if k in drafted]
            if not mapped:
                continue
            node, winner = max(mapped, key=lambda m: taxonomy.depth(m[0]))  # the first of the deepest
            # An exact rule also wins over a value kept out of scope.
            beaten = [k for other, k in mapped if taxonomy.relation(node, other) == Relation.UNRELATED]
            beaten += [k for k in dict.fromkeys(keys) if k not in drafted and _under(k, out_of_scope)]
            for key in beaten:
                counts = overrides.setdefault(winner, {})
                counts[key] = counts.get(key, 0) + 1
        if not overrides:
            return held
        for winner, victims in overrides.items():
            key, n = max(victims.items(), key=lambda kv: kv[1])
            held[winner] = (f"its rule ({drafted[winner]}) would override that of another value on "
                            f"{sum(victims.values()):,} products ({key!r}: {drafted.get(key, 'out of scope')}, "
                            f"{n:,})")


def draft_mapping(evidences: list[ValueEvidence], *, retailer: str, base: dict | None = None, origin: str = "",
                  held: dict[str, str] | None = None) -> str:
    """The drafted mapping file's text (see the module docstring); ``held``: category values
    with a clear vote left to a person (:func:`held_back`)."""
    base, held = dict(base or {}), dict(held or {})
    by_field = {f: [e for e in evidences if e.field == f] for f in FIELDS}
    lines = [f"# Mapping drafted by `fashion-enrich mapping draft` on {dt.date.today().isoformat()}"
             + (f" from {origin}" if origin else "") + ".",
             "# Each rule maps a retailer value to what the images of its products voted for (each product's",
             "# model label; the deepest node with a clear majority); the comment above it is the evidence.",
             "# Values with too little evidence are listed unmapped under 'needs a person'. Read, correct, then",
             f"# use it: --source {retailer}=DUMP:THIS_FILE.yaml",
             *_block({"retailer": retailer})]
    for key in ("description", "source"):
        if base.get(key) is not None:
            lines += _block({key: base[key]})
    category = dict(base.get("category") or {})
    drafted = [e for e in by_field["category"] if e.key not in held]
    decided = {e.key for e in drafted if e.vote.node}
    hand = {k: v for k, v in (category.get("exact") or {}).items() if normalize_key(k) not in decided}
    lines += ["category:", "  exact:"]
    rules = _rules(drafted, indent=4)
    if hand:
        rules += ["    # kept from the base mapping: values without a clear vote here"]
        rules += [f"    {_scalar(k)}: {v}" for k, v in hand.items()]
    lines += rules or ["    {}"]
    kept = {k: category[k] for k in ("prefix", *KEPT_CATEGORY_KEYS) if k in category}
    if kept:
        lines += _block(kept, indent=2)
    lines += ["gender:", "  values:"]
    lines += _rules(by_field["gender"], indent=4) or ["    {}"]
    age = dict(base.get("age_group") or {})
    lines += ["age_group:", "  values:"]
    lines += _rules(by_field["age_group"], indent=4) or ["    {}"]
    if age.get("default"):
        lines += _block({"default": age["default"]}, indent=2)
    if base.get("colour") is not None:
        lines += _block({"colour": base["colour"]})
    undecided = [e for e in evidences if e.vote.node is None or (e.field == "category" and e.key in held)]
    if undecided:
        lines += ["", "# ---- Needs a person: not mapped (too few products, no clear majority, or held back) ----"]
        for field_name in FIELDS:
            for e in (e for e in undecided if e.field == field_name):
                why = f" HELD BACK: {held[e.key]}" if field_name == "category" and e.key in held else ""
                lines.append(f"# {field_name}: {_scalar(e.spelling)}: {evidence_line(e)}{why}")
    return "\n".join(lines) + "\n"


def _rules(evidences: list[ValueEvidence], indent: int) -> list[str]:
    pad = " " * indent
    out = []
    for e in evidences:
        if e.vote.node:
            out += [f"{pad}# {evidence_line(e)}", f"{pad}{_scalar(e.spelling)}: {e.vote.node}"]
    return out


def said(e: ValueEvidence) -> str:
    v = e.vote
    if v.node and v.reason.startswith("split"):
        return f"{v.node} (split)"
    return f"{v.node} {v.share:.0%}" if v.node else "-"


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_draft(evidences: list[ValueEvidence], *, top: int = 40) -> str:
    """The terminal table of a draft: per field, the values with the most products first."""
    lines = []
    for field_name in FIELDS:
        rows = [e for e in evidences if e.field == field_name]
        mapped = sum(1 for e in rows if e.vote.node)
        lines.append(f"{field_name}: {len(rows)} values, {mapped} mapped "
                     f"({sum(e.products for e in rows if e.vote.node):,} of {sum(e.products for e in rows):,} "
                     "products), the others need a person")
        lines.append(f"  {'products':>8}  {'value':<44} {'images say':<26} evidence")
        for e in rows[:top]:
            lines.append(f"  {e.products:>8,}  {cut(e.spelling, 44):<44} {cut(said(e), 26):<26} "
                         f"{cut(evidence_line(e).split('; ', 1)[-1], 70)}")
        if len(rows) > top:
            lines.append(f"  ... {len(rows) - top} more values in the drafted file")
    return "\n".join(lines)
