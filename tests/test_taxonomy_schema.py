"""The 43-node taxonomy file and its loader (schemas/taxonomy.py)."""

from __future__ import annotations

import pytest
import yaml

from schemas.taxonomy import Relation, Taxonomy, TaxonomyError, load_taxonomy, taxonomy_file


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return load_taxonomy()


def test_shipped_taxonomy_has_43_nodes_and_four_roots(tax):
    assert len(tax) == 43
    assert tax.roots == ("CLOTHING", "SHOES", "BAGS", "ACCESSORIES")
    assert tax.genders == ("MALE", "FEMALE", "UNISEX")
    assert tax.age_groups == ("ADULT", "KIDS")


def test_path_ancestors_depth_rollup(tax):
    assert tax.path("SKINNY_JEANS") == ("CLOTHING", "JEANS", "SKINNY_JEANS")
    assert tax.path_string("SKINNY_JEANS") == "CLOTHING > JEANS > SKINNY_JEANS"
    assert tax.ancestors("SKINNY_JEANS") == ("JEANS", "CLOTHING")
    assert tax.depth("CLOTHING") == 1 and tax.depth("JEANS") == 2 and tax.depth("SKINNY_JEANS") == 3
    assert tax.rollup("SKINNY_JEANS", 1) == "CLOTHING"
    assert tax.rollup("SKINNY_JEANS", 2) == "JEANS"
    assert tax.rollup("JEANS", 2) == "JEANS"
    assert tax.rollup("SHOES", 2) is None
    assert tax.children("JEANS") == ("SKINNY_JEANS", "STRAIGHT_JEANS")
    with pytest.raises(KeyError):
        tax.path("NOT_A_NODE")


def test_every_node_is_a_label_with_a_consistent_path(tax):
    for name in tax.names:
        path = tax.path(name)
        assert path[-1] == name and tax.parent(path[0]) is None
        assert all(tax.parent(child) == parent for parent, child in zip(path, path[1:]))


def test_relations(tax):
    assert tax.relation("JEANS", "JEANS") is Relation.SAME
    assert tax.relation("SKINNY_JEANS", "JEANS") is Relation.PARENT
    assert tax.relation("JEANS", "SKINNY_JEANS") is Relation.CHILD
    assert tax.relation("SKINNY_JEANS", "CLOTHING") is Relation.ANCESTOR
    assert tax.relation("CLOTHING", "SKINNY_JEANS") is Relation.DESCENDANT
    assert tax.relation("SKINNY_JEANS", "SKINNY") is Relation.UNRELATED


def _doc():
    with open(taxonomy_file(), encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["nodes"].append({"JEANS": "CLOTHING"}), "listed twice"),
    (lambda d: d["nodes"].append({"CARGO": "NOPE"}), "unknown parent"),
    (lambda d: d["nodes"].pop(), "expected 43"),
    (lambda d: d["nodes"].append({"lower_case": "CLOTHING"}), "UPPER_SNAKE"),
    (lambda d: d["nodes"].append({"A": "B", "C": "D"}), "single"),
])
def test_loader_rejects_invalid_hierarchies(mutate, message):
    doc = _doc()
    mutate(doc)
    with pytest.raises(TaxonomyError, match=message):
        Taxonomy.from_dict(doc)


def test_loader_rejects_cycles():
    doc = {"nodes": [{"A": "B"}, {"B": "A"}], "genders": ["MALE"], "age_groups": ["ADULT"]}
    with pytest.raises(TaxonomyError, match="cycle"):
        Taxonomy.from_dict(doc, expected_count=None)


def test_render_tree_lists_every_node_indented(tax):
    lines = tax.render_tree().splitlines()
    assert len(lines) == 43
    assert "    SKINNY_JEANS" in lines and "CLOTHING" in lines
