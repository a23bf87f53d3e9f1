"""How fast ``inspect`` and ``report`` read a large output (prints figures; not a test).

Synthesises an output in the real layout and schemas (schemas/tables.py): N image rows, N/3
products, N/100 dead letters over 4 retailers, with random categories and scores, then times
``summarize`` (what ``fashion-enrich inspect`` prints) and ``build_report``.

    python benchmarks/bench_inspect.py --images 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.tables import DEAD_LETTER, IMAGES, PRODUCTS
from schemas.taxonomy import load_taxonomy

RUN_DATE = "2026-11-27"
RETAILERS = ("zalando", "asos", "farfetch", "myntra")


def _column(schema: pa.Schema, name: str, values) -> pa.Array:
    return pa.array(values, type=schema.field(name).type)


def _default(field: pa.Field, n: int) -> pa.Array:
    """Nulls, or an empty value where the schema forbids nulls."""
    if field.nullable:
        return pa.nulls(n, field.type)
    if pa.types.is_list(field.type):
        return pa.array([[]] * n, type=field.type)
    if pa.types.is_string(field.type):
        return pa.array([""] * n, type=field.type)
    if pa.types.is_boolean(field.type):
        return pa.array(np.zeros(n, dtype=bool))
    return pa.array(np.zeros(n), type=field.type)


def _table(spec, n: int, columns: dict) -> pa.Table:
    schema = spec.schema
    arrays = [columns[f.name] if f.name in columns else _default(f, n) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def synthesize(root: Path, n_images: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    leaves = [name for name in load_taxonomy().names if load_taxonomy().depth(name) >= 2][:27]
    per = n_images // len(RETAILERS)
    for retailer in RETAILERS:
        products = per // 3
        ids = np.array([f"{retailer[:2]}{i}" for i in range(products)])
        model = rng.integers(0, len(leaves), products)
        truth = np.where(rng.random(products) < 0.7, model, rng.integers(0, len(leaves), products))
        agreement = np.where(model == truth, "AGREE", "DISAGREE")
        cats = np.array(leaves)
        ptable = _table(PRODUCTS, products, {
            "product_id": _column(PRODUCTS.schema, "product_id", ids),
            "title": _column(PRODUCTS.schema, "title", np.char.add("product ", ids)),
            "image_count": pa.array(np.full(products, 3)), "person_image_count": pa.array(rng.integers(0, 3, products)),
            "category": _column(PRODUCTS.schema, "category", cats[model]),
            "category_score": pa.array(rng.random(products)),
            "category_low_confidence": pa.array(rng.random(products) < 0.05),
            "gender": _column(PRODUCTS.schema, "gender", rng.choice(["MALE", "FEMALE", "UNISEX"], products)),
            "retailer_category": _column(PRODUCTS.schema, "retailer_category", cats[truth]),
            "category_agreement": _column(PRODUCTS.schema, "category_agreement", agreement),
            "gender_agreement": _column(PRODUCTS.schema, "gender_agreement",
                                        rng.choice(["AGREE", "DISAGREE", "RETAILER_MISSING"], products)),
        })
        n = products * 3
        rule = np.where(rng.random(n) < 0.02, "UNMAPPED", "EXACT")
        itable = _table(IMAGES, n, {
            "product_id": _column(IMAGES.schema, "product_id", np.repeat(ids, 3)),
            "image_position": pa.array(np.tile([1, 2, 3], products)),
            "image_uri": _column(IMAGES.schema, "image_uri", [f"https://img.example.com/{retailer}/{i}.jpg"
                                                              for i in range(n)]),
            "category_rule": _column(IMAGES.schema, "category_rule", rule),
            "raw_category": pa.array([[f"raw-{v}"] for v in rng.integers(0, 50, n)],
                                     type=IMAGES.schema.field("raw_category").type),
        })
        d = max(1, n // 100)
        dtable = _table(DEAD_LETTER, d, {
            "stage": _column(DEAD_LETTER.schema, "stage", rng.choice(["read", "fetch", "decode"], d)),
            "reason": _column(DEAD_LETTER.schema, "reason", rng.choice(["HTTP_4XX", "TIMEOUT", "CORRUPT_IMAGE"], d)),
            "message": _column(DEAD_LETTER.schema, "message", ["synthetic"] * d),
            "source_file": _column(DEAD_LETTER.schema, "source_file", [f"{retailer}.jsonl"] * d),
            "source_line": pa.array(np.arange(d)),
        })
        for spec, table in ((IMAGES, itable), (PRODUCTS, ptable), (DEAD_LETTER, dtable)):
            folder = root / spec.name / f"run_date={RUN_DATE}" / f"retailer={retailer}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, folder / "part-00000.parquet", compression="snappy")
    written = per // 3 * 3
    counts = {"records_in": {r: written for r in RETAILERS}, "images": {r: written for r in RETAILERS}}
    (root / "manifest.json").write_text(json.dumps({
        "run_id": f"{RUN_DATE}T000000-bench", "run_date": RUN_DATE, "started_at": f"{RUN_DATE}T00:00:00+00:00",
        "finished_at": f"{RUN_DATE}T01:00:00+00:00", "counts": counts, "reconciled": True, "models": {}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1_000_000)
    args = parser.parse_args()
    from pipeline.inspect_output import format_summary, summarize
    from pipeline.report import build_report

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    root = Path(tempfile.mkdtemp(prefix="fashion-enrich-inspect-"))
    start = time.perf_counter()
    synthesize(root, args.images)
    print(f"synthesised {args.images:,} image rows in {time.perf_counter() - start:.1f} s under {root}")
    for name, call in (("inspect (summarize + format)", lambda: format_summary(summarize(str(root)))),
                       ("report (HTML with plots)", lambda: build_report(str(root)))):
        start = time.perf_counter()
        call()
        print(f"{name}: {time.perf_counter() - start:.2f} s")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
