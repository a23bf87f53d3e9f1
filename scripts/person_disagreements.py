"""Contact sheets of the images where a multi-task export's person head and the weak person
labels disagree, for a hand check (issue 17: who was right, the model or the weak label?).

    python scripts/person_disagreements.py EXPORT_DIR PREPARED_DIR OUT_DIR [--count 100] [--seed 0]

Reads the export's out-of-fold scores (``cv_report/out_of_fold.npz``: every image scored by the
fold model that never trained on it), picks ``--count`` disagreements at random, and writes
``OUT_DIR/sheet-<k>.png`` (25 numbered tiles each, the prepared pixels the model saw) and
``OUT_DIR/disagreements.csv`` (tile, product, weak label, model P(person), and an empty
``verdict`` column to fill with MODEL or WEAK, or UNCLEAR).
"""

from __future__ import annotations

import argparse
import csv
import os

import numpy as np
from PIL import Image, ImageDraw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export")
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from models.data import load_prepared

    oof = np.load(os.path.join(args.export, "cv_report", "out_of_fold.npz"))
    weak, p_person = oof["person_label"], oof["person_scores"][:, -1]
    rows = np.flatnonzero((weak >= 0) & ((p_person >= 0.5).astype(int) != weak))
    print(f"{len(rows)} disagreements among {(weak >= 0).sum()} weakly labelled images")
    chosen = np.random.default_rng(args.seed).choice(rows, size=min(args.count, len(rows)), replace=False)
    data = load_prepared(args.data)
    os.makedirs(args.out, exist_ok=True)
    tile = data.image_size
    with open(os.path.join(args.out, "disagreements.csv"), "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["tile", "product", "weak_label", "model_p_person", "verdict"])
        for sheet in range(0, len(chosen), 25):
            canvas = Image.new("RGB", (5 * tile, 5 * (tile + 16)), "white")
            draw = ImageDraw.Draw(canvas)
            for k, row in enumerate(chosen[sheet:sheet + 25]):
                number = sheet + k + 1
                x, y = (k % 5) * tile, (k // 5) * (tile + 16)
                canvas.paste(Image.fromarray(data.images[oof["example"][row]]), (x, y + 16))
                label = "PERSON" if weak[row] else "PRODUCT"
                draw.text((x + 2, y + 2), f"{number} weak {label[:4]} p={p_person[row]:.2f}", fill="black")
                writer.writerow([number, oof["product"][row], label, f"{p_person[row]:.3f}", ""])
            canvas.save(os.path.join(args.out, f"sheet-{sheet // 25 + 1}.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
