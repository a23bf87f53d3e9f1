"""Catalog-quality figures on ../shared/data/myntra: dominant colour against the catalog's own
``baseColour`` labels, and how many images fall into near-duplicate groups.

    python scripts/evaluate_quality.py [--data ../shared/data] [--size 64] [--out quality.json]

Images go through the pipeline's own decode (``decode_and_preprocess``, at the shipped models'
64 px) and feature functions; person shots (the weak labels) use the skin-discounted colour.
Labels outside the colour vocabulary (Multi, Gold, Copper, Metallic, Skin...) are skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from pathlib import Path

from models.evaluation import leakage_groups
from pipeline.grouping import near_duplicate_pairs
from pipeline.images.config import DecodeConfig
from pipeline.images.decode import decode_and_preprocess
from pipeline.images.features import COLOUR_NAMES, dominant_colours, perceptual_hash
from pipeline.taxonomy import map_colour
from schemas.mapping import builtin_mapping_file, load_mapping

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    folder = Path(args.data) / "myntra"
    with open(folder / "person_weak_labels.csv", encoding="utf-8") as fh:
        person = {row["id"]: row["person_weak"] == "PERSON" for row in csv.DictReader(fh)}
    with open(folder / "styles.csv", encoding="utf-8", errors="replace") as fh:
        labels = {row["id"]: row.get("baseColour") or "" for row in csv.DictReader(fh)}
    mapping = load_mapping(builtin_mapping_file("myntra"))  # baseColour -> the colour vocabulary
    cfg = DecodeConfig(size=args.size)
    hashes: dict[str, str] = {}
    confusion: Counter[tuple[str, str]] = Counter()
    skipped = Counter()
    for path in sorted((folder / "images").glob("*.jpg")):
        image_id = path.stem
        try:
            array = decode_and_preprocess(path.read_bytes(), cfg).array
        except Exception:  # noqa: BLE001 - counted, not fatal
            skipped["undecodable"] += 1
            continue
        hashes[image_id] = perceptual_hash(array)
        truth = map_colour(mapping, (labels.get(image_id, ""),))
        if truth is None:
            skipped[labels.get(image_id) or "no label"] += 1
            continue
        plain, no_skin = dominant_colours(array)
        confusion[(truth, no_skin if person.get(image_id) else plain)] += 1
    total = sum(confusion.values())
    correct = sum(n for (t, p), n in confusion.items() if t == p)
    per_class = {c: round(confusion[(c, c)] / n, 3) for c in COLOUR_NAMES
                 if (n := sum(v for (t, _), v in confusion.items() if t == c))}
    # Near-duplicates: the same LSH bands, threshold and union-find as training's fold grouping.
    ids = list(hashes)
    pairs = len(near_duplicate_pairs([hashes[i] for i in ids]))
    grouped = Counter(leakage_groups(ids, [""] * len(ids), [hashes[i] for i in ids]))
    in_groups = sum(n for n in grouped.values() if n > 1)
    result = {
        "images": len(hashes), "colour_evaluated": total, "colour_accuracy": round(correct / total, 4),
        "colour_per_class_accuracy": per_class,
        "colour_confusion": {f"{t}->{p}": n for (t, p), n in confusion.most_common(25)},
        "colour_skipped_labels": dict(skipped.most_common(12)),
        "near_duplicate_pairs": pairs, "near_duplicate_groups": sum(1 for n in grouped.values() if n > 1),
        "images_in_near_duplicate_groups": in_groups,
        "share_in_near_duplicate_groups": round(in_groups / len(hashes), 4),
        "largest_group": max(grouped.values(), default=0),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
