"""Auditing a retailer's mapping in force against what its images say.

``audit_mapping`` holds the evidence of :mod:`pipeline.mapping_evidence` against the mapping
in force (each value with the rule the mapping gives it alone): each value whose images vote
for another branch (``CONTRADICTED``), only for the rule's parent (``TOO_SPECIFIC``) or for one
of its children (``MORE_SPECIFIC``), values nothing maps (``UNMAPPED``), and paths whose deeper
levels name a node on another branch than the prefix rule that mapped them
(``LEVELS_CONTRADICT``: ``Accessories > Watches > Tshirts``), each with its products and
example product ids, the most products first. A rule finer than the category model's classes
is judged at the nearest ancestor the model can say.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.mapping_draft import cut, said
from pipeline.mapping_evidence import FIELDS, ValueEvidence
from pipeline.mapping_votes import clearly_minority, votes_for
from pipeline.taxonomy import keyword_match
from schemas.mapping import RetailerMapping, default_keywords
from schemas.taxonomy import Relation, Taxonomy


@dataclass(frozen=True)
class Finding:
    """One value whose mapping in force the images (or its own path) dispute."""

    kind: str  # CONTRADICTED | LEVELS_CONTRADICT | TOO_SPECIFIC | MORE_SPECIFIC | UNMAPPED
    field: str
    value: str  # the retailer's spelling
    products: int
    in_force: str | None
    rule: str  # the rule that mapped it, readable
    images: str  # what the images say, readable
    detail: str
    examples: tuple[str, ...]  # product ids showing it

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _segment_names(mapping: RetailerMapping | None, taxonomy: Taxonomy) -> dict[str, str]:
    """A path segment -> the node the mapping's rules give paths ending with it, where they agree."""
    named: dict[str, set[str]] = {}
    for key, node in ({**mapping.prefix, **mapping.exact} if mapping else {}).items():
        named.setdefault(key.split(" > ")[-1], set()).add(node)
    return {segment: nodes.pop() for segment, nodes in named.items() if len(nodes) == 1 and segment != "*"}


def _rule_text(e: ValueEvidence) -> str:
    if e.rule in ("EXACT", "PREFIX", "KEYWORD"):
        return f"{e.rule.lower()} {e.rule_key!r}"
    return (e.rule or "none").lower()


def _visible(node: str, taxonomy: Taxonomy, classes) -> str:
    """``node``, or its nearest ancestor whose subtree holds a class of the model (the model can
    say SHOES but no BLAZERS: a BLAZERS rule is judged as OUTERWEAR)."""
    if not classes or node not in taxonomy:
        return node
    for candidate in (node, *taxonomy.ancestors(node)):  # the parent first
        if any(c == candidate or (c in taxonomy and candidate in taxonomy.ancestors(c)) for c in classes):
            return candidate
    return node


def audit_mapping(evidences: list[ValueEvidence], taxonomy: Taxonomy, mapping: RetailerMapping | None = None,
                  model_classes=None) -> list[Finding]:
    """The values whose mapping in force (``evidence(..., mapping=)``) their images or their own path
    dispute (module docstring); ``mapping`` names path segments by its rules; a rule's node finer
    than the category model's classes (``model_classes``) is judged at the level the model sees."""
    findings = []
    names = _segment_names(mapping, taxonomy)
    keywords = mapping.keywords if mapping else default_keywords()
    for e in evidences:
        node, forced = e.vote.node, e.in_force
        kind = detail = None
        if e.field == "category" and forced and node and e.rule == "PREFIX" and e.rule_key:
            covered = len(e.rule_key.split(" > "))
            for segment in e.key.split(" > ")[covered:]:
                named = names.get(segment) or (keyword_match(keywords, taxonomy, segment) or (None,))[0]
                # The images side with the deeper level: their node is on its branch, not on the rule's.
                if named and named in taxonomy and taxonomy.relation(forced, named) == Relation.UNRELATED \
                        and taxonomy.relation(named, node) != Relation.UNRELATED \
                        and taxonomy.relation(forced, node) == Relation.UNRELATED:
                    kind = "LEVELS_CONTRADICT"
                    detail = (f"level {segment!r} names {named}, but the rule {e.rule_key!r} for its first "
                              f"level{'s' if covered > 1 else ''} gives {forced}")
                    break
        if kind is None and node is not None:
            if forced is None:
                if e.rule not in ("OUT_OF_SCOPE",):
                    kind, detail = "UNMAPPED", f"no rule maps it; the images say {node}"
            else:
                seen = _visible(forced, taxonomy, model_classes) if e.field == "category" else forced
                if seen != node:
                    kind, detail = _compare(e.field, taxonomy, seen, node)
                    if seen != forced:
                        detail += f" (the model has no class under {forced}: judged as {seen})"
                    # Against the rule in force, only clear evidence: fewer than half its products are
                    # what it says (or a kind of it), beyond doubt; a clear child majority may refine it.
                    support = votes_for(e.counts, seen, taxonomy if e.field == "category" else None)
                    if kind != "MORE_SPECIFIC" and not clearly_minority(support, e.vote.voters):
                        kind = None
                    # A node under what the model can see, but not under the rule's own node, refines nothing.
                    if kind == "MORE_SPECIFIC" and seen != forced and forced not in taxonomy.ancestors(node):
                        kind = None
        if kind is None:
            continue
        wanted = {label for label in e.counts if label == node or (e.field == "category" and label in taxonomy
                                                                  and node in taxonomy.ancestors(label))}
        examples = tuple(x.product_id for x in (e.examples_of(wanted=wanted) or e.examples_of()))
        findings.append(Finding(kind, e.field, e.spelling, e.products, forced, _rule_text(e), said(e), detail,
                                examples))
    return sorted(findings, key=lambda f: (-f.products, FIELDS.index(f.field), f.value))


def _compare(field_name: str, taxonomy: Taxonomy, forced: str, node: str) -> tuple[str, str]:
    if field_name == "category" and forced in taxonomy and node in taxonomy:
        relation = taxonomy.relation(forced, node)
        if relation in (Relation.PARENT, Relation.ANCESTOR):
            return "TOO_SPECIFIC", f"the images agree only on {node}, above {forced}"
        if relation in (Relation.CHILD, Relation.DESCENDANT):
            return "MORE_SPECIFIC", f"the images say {node}, a kind of {forced}"
        return "CONTRADICTED", f"the images say {node}, on another branch than {forced}"
    if field_name == "gender" and node == "UNISEX":
        return "TOO_SPECIFIC", f"the products are of both genders; the mapping says {forced}"
    if field_name == "gender" and forced == "UNISEX":
        return "MORE_SPECIFIC", f"the images say {node}; the mapping says UNISEX"
    return "CONTRADICTED", f"the images say {node}; the mapping says {forced}"


def format_audit(findings: list[Finding], *, top: int = 40) -> str:
    if not findings:
        return "no finding: every value's images agree with the mapping in force"
    plural = "s" if len(findings) != 1 else ""
    lines = [f"{len(findings)} finding{plural} ({sum(f.products for f in findings):,} products), the most products "
             "first",
             f"  {'products':>8}  {'finding':<17} {'field':<9} {'value':<40} {'in force (rule)':<34} images say"]
    for f in findings[:top]:
        in_force = f"{f.in_force or '-'} ({f.rule})"
        lines.append(f"  {f.products:>8,}  {f.kind:<17} {f.field:<9} {cut(f.value, 40):<40} "
                     f"{cut(in_force, 34):<34} {f.images}")
        lines.append(f"  {'':>8}  {f.detail}; e.g. {', '.join(f.examples[:3]) or '-'}")
    if len(findings) > top:
        lines.append(f"  ... {len(findings) - top} more (--json lists all)")
    return "\n".join(lines)
