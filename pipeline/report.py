"""``fashion-enrich report OUTPUT --html report.html``: one self-contained HTML page per run.

Plots (``pipeline/plots.py``, embedded as PNG data URIs): model categories per retailer, the
retailer-vs-model confusion matrix over the taxonomy, per-class confidence, dead-letter
reasons; then the review queue, tier by tier: its first rows with the retailer's labels against
the model's, the estimated probability that each is wrong, and a thumbnail of the product's
primary image when that image is a readable file (local or gs://; web images are not fetched
again); then the retailer vocabulary: per retailer, the values whose mapping rule the images
dispute and the values with the most products, with thumbnails (:mod:`pipeline.mapping_report`).
Nothing is loaded from the network by the page itself.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter

import numpy as np
import pyarrow.compute as pc

from pipeline import plots
from pipeline.inspect_output import (
    QUEUE_COLUMNS,
    SUMMARY_PRODUCT_COLUMNS,
    disputed,
    queue_order,
    read_manifest,
    read_table,
    summarize,
)
from pipeline.mapping_report import vocabulary_section
from pipeline.summary import models_line

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}img.plot{max-width:100%;border:1px solid #eee;margin:8px 0}
.thumb{width:80px;height:80px;object-fit:contain;background:#fafafa}.muted{color:#888}"""


def _thumbnail(uri: str | None, size: int = 96) -> str | None:
    """A JPEG data URI of the image at ``uri`` (a file or an object-store path), else None."""
    if not uri or uri.startswith(("http://", "https://")):
        return None
    try:
        from apache_beam.io.filesystems import FileSystems
        from PIL import Image

        with FileSystems.open(uri, compression_type="uncompressed") as fh:
            image = Image.open(io.BytesIO(fh.read()))
            image.draft("RGB", (size, size))
            image = image.convert("RGB")
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    except Exception:  # noqa: BLE001 - a missing or unreadable image only loses its thumbnail
        return None


def _thumbnail_cell(uri: str | None) -> str:
    """A table cell with the image's thumbnail, or "n/a" where it cannot be read here."""
    thumb = _thumbnail(uri)
    return f'<img class="thumb" alt="product image" src="{thumb}">' if thumb else "<span class=muted>n/a</span>"


def _img(png: bytes, alt: str) -> str:
    return f'<img class="plot" alt="{html.escape(alt)}" src="{plots.data_uri(png)}">'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def build_report(output: str, run_date: str | None = None, *, limit: int = 20) -> str:
    manifest = read_manifest(output, run_date)
    run_date = manifest["run_date"]
    # The products table is read once, with every column the sections below use.
    products = read_table(output, "products", run_date, [*SUMMARY_PRODUCT_COLUMNS, "retailer_category"])
    s = summarize(output, run_date, manifest=manifest, products=products)
    parts = [f"<h1>fashion-enrich run {html.escape(s['run_id'])}</h1>",
             f"<p>run_date {html.escape(run_date)} &middot; output {html.escape(output)} &middot; reconciled: "
             f"{'yes' if s['reconciled'] else '<b>NO</b>'}"
             + (f" &middot; {s['seconds']:.0f} s, {s['images_per_second']:.1f} images/s" if s["seconds"] else "")
             + "</p>",
             "<p>models: " + html.escape(models_line(s["models"]) or "none") + "</p>"]
    rows = []
    for retailer, records in s["records_in"].items():
        d = s["disagreement"].get(retailer, {})
        share = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
        rows.append([html.escape(retailer), str(records), str(s["rows"]["images"].get(retailer, 0)),
                     str(s["rows"]["products"].get(retailer, 0)), str(s["rows"]["dead_letter"].get(retailer, 0)),
                     share(d.get("category")), share(d.get("gender")), share(d.get("age_group")),
                     share(s["low_confidence_share"].get(retailer))])
    parts += ["<h2>Counts</h2>", _table(["retailer", "records in", "images", "products", "dead letters",
                                         "category disagree", "gender disagree", "age group disagree",
                                         "low confidence"], rows)]

    if s["category_distribution"]:
        parts += ["<h2>Model categories per retailer</h2>",
                  _img(plots.stacked_shares(s["category_distribution"], "model category, share of products"),
                       "category distribution per retailer")]
    pairs = [(r, m) for r, m in zip(products["retailer_category"].to_pylist(), products["category"].to_pylist())
             if r is not None and m is not None]
    if pairs:
        retailer_labels = [k for k, _ in Counter(r for r, _ in pairs).most_common(30)]
        predicted = [k for k, _ in Counter(m for _, m in pairs).most_common(30)]
        # Same order on both axes where the labels are shared, so agreement lies on the diagonal.
        model_labels = [k for k in retailer_labels if k in predicted] + [k for k in predicted
                                                                          if k not in retailer_labels]
        matrix = np.zeros((len(retailer_labels), len(model_labels)), dtype=int)
        for r, m in pairs:
            if r in retailer_labels and m in model_labels:
                matrix[retailer_labels.index(r), model_labels.index(m)] += 1
        parts += ["<h2>Retailer category vs model category</h2>",
                  "<p class=muted>rows: the retailer's own category mapped to the taxonomy; columns: the model's "
                  "product category (the 30 most frequent of each); a cell is the share of that row's products.</p>",
                  _img(plots.confusion(matrix, retailer_labels, model_labels, "retailer vs model (products)",
                                       xlabel="model", ylabel="retailer"), "retailer vs model confusion matrix")]
    scored = [(c, v) for c, v in zip(products["category"].to_pylist(), products["category_score"].to_pylist())
              if c is not None and v is not None]
    if scored:
        by_class: dict[str, list[float]] = {}
        for c, v in scored:
            by_class.setdefault(c, []).append(v)
        ordered = dict(sorted(((c, np.array(v)) for c, v in by_class.items()), key=lambda kv: -len(kv[1]))[:30])
        parts += ["<h2>Confidence per predicted class</h2>",
                  _img(plots.distributions(ordered, "product category score (cumulative max)", "score"),
                       "per-class confidence")]
    reasons = Counter()
    for r in s["dead_letter_reasons"]:
        reasons[f"{r['stage']}/{r['reason']}"] += r["count"]
    if reasons:
        parts += ["<h2>Dead-letter reasons</h2>",
                  _img(plots.bars(dict(reasons.most_common()), "dead letters by reason", "records", horizontal=True),
                       "dead-letter reasons")]
    review = queue_order(read_table(output, "review", run_date, QUEUE_COLUMNS))
    location = f"{output.rstrip('/')}/review/run_date={run_date}/"
    parts += ["<h2 id=review>Review queue</h2>",
              f"<p>{review.num_rows} products need a look, by tier (most urgent first) and, within a tier, by "
              "priority: for a disputed label, the estimated probability that the retailer's label is wrong. The "
              f"full queue is the review table: <a href=\"{html.escape(location)}\">{html.escape(location)}</a></p>"]
    for tier in dict.fromkeys(review["review_tier_name"].to_pylist()):
        rows = review.filter(pc.equal(review["review_tier_name"], tier))
        parts.append(f"<h3>{html.escape(tier)}: {rows.num_rows}</h3>")
        parts.append(_table(
            ["image", "retailer", "product", "title", "priority", "retailer says -> model says, title (P wrong)",
             "reasons"],
            [[_thumbnail_cell(r["primary_image_uri"]), html.escape(r["retailer"]), html.escape(r["product_id"]),
              html.escape(r["title"] or ""), f"{r['review_priority']:.3f}",
              "<br>".join(html.escape(d) for d in disputed(r)), html.escape(", ".join(r["review_reasons"]))]
             for r in rows.slice(0, limit).to_pylist()]))
    parts += vocabulary_section(output, manifest, thumbnail_cell=_thumbnail_cell, table=_table, limit=limit)
    body = "\n".join(parts)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>fashion-enrich {html.escape(s['run_id'])}"
            f"</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")
