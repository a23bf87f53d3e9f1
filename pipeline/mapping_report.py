"""The HTML report's "Retailer vocabulary" section: per retailer, the audit of the mapping in
force (:func:`pipeline.mapping_draft.audit_mapping`) and the values with the most products, each
with what its images say and thumbnails of its products."""

from __future__ import annotations

import html

from pipeline.mapping_audit import audit_mapping
from pipeline.mapping_draft import evidence_line
from pipeline.mapping_evidence import evidence, read_products
from schemas.mapping import MappingError, load_mapping
from schemas.taxonomy import load_taxonomy

THUMBNAILS = 4


def vocabulary_section(output: str, manifest: dict, *, thumbnail_cell, table, limit: int = 20) -> list[str]:
    """HTML parts of the section (``thumbnail_cell(uri)`` and ``table(header, rows)`` render)."""
    taxonomy = load_taxonomy()
    parts = ["<h2 id=vocabulary>Retailer vocabulary: what the images say</h2>",
             "<p>Each retailer value (category path, gender or age word) against the votes of its products' model "
             "labels: the deepest node with a clear majority. Findings are values whose mapping rule the images "
             "dispute; <code>fashion-enrich mapping audit</code> lists them all and <code>fashion-enrich mapping "
             "draft</code> writes a mapping from them.</p>"]
    for source in manifest.get("sources", []):
        retailer = source["retailer"]
        try:
            frame, _, classes = read_products([output], retailer, manifest["run_date"])
        except Exception:  # noqa: BLE001 - a retailer with no products has no vocabulary to show
            continue
        try:
            mapping = load_mapping(source["mapping"], taxonomy=taxonomy) if source.get("mapping") else None
        except MappingError:
            mapping = None
        found = evidence(frame, taxonomy, mapping=mapping)
        by_value = {(e.field, e.spelling): e for e in found}
        parts.append(f"<h3>{html.escape(retailer)}</h3>")
        if mapping is None:
            parts.append(f"<p class=muted>mapping file {html.escape(str(source.get('mapping')))} not readable here: "
                         "no audit</p>")
        else:
            findings = audit_mapping(found, taxonomy, mapping, classes)
            parts.append(f"<p>{len(findings)} finding{'s' if len(findings) != 1 else ''}"
                         + (f"; the first {limit}" if len(findings) > limit else "") + "</p>")
            if findings:
                parts.append(table(["products", "finding", "field", "value", "in force (rule)", "images say",
                                    "detail", "examples"],
                                   [[f"{f.products:,}", f.kind, f.field, html.escape(f.value),
                                     html.escape(f"{f.in_force or '-'} ({f.rule})"), html.escape(f.images),
                                     html.escape(f.detail), _thumbnails(by_value[(f.field, f.value)], thumbnail_cell,
                                                                        f.examples)]
                                    for f in findings[:limit]]))
        parts.append(f"<p>The {min(limit, len(found))} values with the most products:</p>")
        parts.append(table(["field", "value", "evidence", "examples"],
                           [[e.field, html.escape(e.spelling), html.escape(evidence_line(e)),
                             _thumbnails(e, thumbnail_cell)]
                            for e in sorted(found, key=lambda e: -e.products)[:limit]]))
    return parts


def _thumbnails(e, thumbnail_cell, product_ids=None) -> str:
    wanted = [x for x in e.examples if product_ids is None or x.product_id in product_ids]
    return " ".join(thumbnail_cell(x.image_uri) + f"<br><small>{html.escape(x.product_id)}: "
                    f"{html.escape(x.model or '-')}</small>" for x in wanted[:THUMBNAILS])
