"""Regenerate the sample catalogs shipped in ``pipeline/samples/`` from ../shared/data/clothing.

The images are real photos from the Clothing dataset (Alexey Grigorev, free for any use);
the catalog records around them are synthetic, written in each retailer's dump format.
Run from the repository root:  python scripts/make_samples.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "pipeline" / "samples"
PER_RETAILER = 26
LABELS = {  # clothing label -> (zalando categoryKeys, asos productType, farfetch product_type tail)
    "T-Shirt": (["clothing", "clothing-tops", "clothing-tops-t-shirts"], "T-Shirts & Vests",
                "T-Shirts & Jersey Shirts"),
    "Longsleeve": (["clothing", "clothing-tops", "clothing-tops-long-sleeve-tops"], "Tops", "Tops"),
    "Pants": (["clothing", "clothing-trousers"], "Trousers & Chinos", "Trousers"),
    "Shoes": (["shoes"], "Shoes, Boots & Trainers", None),
    "Shirt": (["clothing", "clothing-shirts"], "Shirts", "Shirts"),
    "Dress": (["clothing", "clothing-dresses"], "Dresses", "Dresses"),
    "Outwear": (["clothing", "clothing-coats-jackets"], "Coats & Jackets", "Outerwear"),
    "Shorts": (["clothing", "clothing-shorts"], "Shorts", "Shorts"),
    "Hat": (["accessories", "accessories-hats"], "Caps & Hats", None),
    "Skirt": (["clothing", "clothing-skirts"], "Skirts", "Skirts"),
    "Polo": (["clothing", "clothing-tops", "clothing-tops-polo-shirts"], "Polo Shirts", "Polo Shirts"),
    "Blazer": (["clothing", "clothing-blazers"], "Blazers", "Blazers"),
    "Hoodie": (["clothing", "clothing-sweatshirts-hoodies"], "Hoodies & Sweatshirts", "Sweatshirts & Hoodies"),
    "Blouse": (["clothing", "clothing-blouses-tunics"], "Blouses", "Blouses"),
}
FEMALE_ONLY = {"Dress", "Skirt", "Blouse"}
BRANDS = ["Northwind", "Atelier Nove", "Kestrel", "Lumen & Co", "Harbour Basics", "Fjordline"]


def pick_products(rows: list[dict], rng: random.Random, count: int, used: set[str]) -> list[dict]:
    """Products of 1-3 photos: same contributor, same label, not used by another retailer."""
    by_group: dict[tuple, list[str]] = {}
    for row in rows:
        if row["label"] in LABELS and row["image"] not in used:
            by_group.setdefault((row["sender_id"], row["label"], row["kids"]), []).append(row["image"])
    groups = sorted(by_group.items())
    rng.shuffle(groups)
    products, labels_seen = [], {}
    for (_sender, label, kids), images in groups:
        if labels_seen.get(label, 0) >= 3:
            continue
        take = images[: rng.choice([1, 1, 2, 3])]
        used.update(take)
        labels_seen[label] = labels_seen.get(label, 0) + 1
        gender = "female" if label in FEMALE_ONLY else rng.choice(["male", "female", "unisex"])
        products.append({"label": label, "kids": kids == "True", "images": take, "gender": gender,
                         "brand": rng.choice(BRANDS), "title": f"{rng.choice(BRANDS)} {label.lower()}"})
        if len(products) == count:
            break
    return products


def zalando(products, rng) -> list[str]:
    lines = []
    for i, p in enumerate(products):
        keys, _, _ = LABELS[p["label"]]
        genders = {"male": ["MALE"], "female": ["FEMALE"], "unisex": ["MALE", "FEMALE"]}[p["gender"]]
        article = {
            "id": f"ZA{100000 + i}", "name": p["title"], "brand": {"key": p["brand"].lower().replace(" ", "-"),
                                                                     "name": p["brand"]},
            "categoryKeys": keys, "genders": genders, "ageGroups": ["CHILD"] if p["kids"] else ["ADULT"],
            "media": {"images": [{"orderNumber": n, "type": "NON_MODEL", "mediumUrl": f"images/{img}.jpg",
                                  "largeUrl": f"images/{img}.jpg"} for n, img in enumerate(p["images"], 1)]},
        }
        lines.append(json.dumps(article))
    # Deliberate imperfections, so the sample run shows the dead-letter table and the manifest.
    lines.append(json.dumps({"id": "ZA-NOIMG", "name": "Article without media", "categoryKeys": ["clothing"],
                             "genders": ["FEMALE"], "ageGroups": ["ADULT"], "media": {"images": []}}))
    lines.append('{"id": "ZA-BROKEN", "name": "truncated line"')
    return lines


def asos(products, rng) -> list[str]:
    lines = []
    for i, p in enumerate(products):
        _, product_type, _ = LABELS[p["label"]]
        doc = {
            "id": 200000 + i, "productCode": f"{1000000 + i}", "name": p["title"], "brandName": p["brand"],
            "gender": {"male": "Men", "female": "Women", "unisex": "Unisex"}[p["gender"]],
            "productType": {"id": 1000 + list(LABELS).index(p["label"]), "name": product_type},
            "images": [{"url": f"images/{img}.jpg", "isPrimary": n == 0, "imageType": "Product"}
                       for n, img in enumerate(p["images"])],
        }
        lines.append(json.dumps(doc))
    lines.append(json.dumps({"id": 299998, "name": "Glow serum", "brandName": "Kestrel", "gender": "Women",
                             "productType": {"id": 9, "name": "Face + Body"},
                             "images": [{"url": f"images/{products[0]['images'][0]}.jpg", "isPrimary": True}]}))
    lines.append(json.dumps({"id": 299999, "name": "Mystery item", "brandName": "Kestrel", "gender": "Men",
                             "productType": {"id": 10, "name": "Multipacks"},
                             "images": [{"url": "ftp://images.example.com/x.jpg"}]}))
    return lines


FEED_COLUMNS = ["id", "item_group_id", "title", "brand", "image_link", "additional_image_link",
                "google_product_category", "product_type", "gender", "age_group"]


def farfetch_items(products, rng) -> list[dict]:
    items = []
    for i, p in enumerate(products):
        tail = LABELS[p["label"]][2]
        department = {"Shoes": "Shoes", "Hat": "Accessories > Hats"}.get(p["label"], f"Clothing > {tail}")
        links = [f"images/{img}.jpg" for img in p["images"]]
        for size in (["S", "M"] if i % 4 == 0 else ["M"]):  # some items come in two size variants
            items.append({
                "id": f"FF{300000 + i}-{size}", "item_group_id": f"FF{300000 + i}", "title": p["title"],
                "brand": p["brand"], "image_link": links[0], "additional_image_link": ",".join(links[1:]),
                "google_product_category": "Apparel & Accessories", "gender": p["gender"],
                "product_type": f"{'Men' if p['gender'] == 'male' else 'Women'} > {department}",
                "age_group": "kids" if p["kids"] else "adult"})
    return items


def write_tsv(path: Path, items: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, FEED_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(items)
        fh.write("FF-SHORT\tonly two columns\n")  # deliberate: a row with too few columns


def write_rss(path: Path, items: list[dict]) -> None:
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0">', "<channel>",
           "<title>Farfetch sample feed</title>"]
    for item in items:
        out.append("<item>")
        for key in FEED_COLUMNS:
            for value in (item[key].split(",") if key == "additional_image_link" else [item[key]]):
                if value:
                    out.append(f"  <g:{key}>{escape(value)}</g:{key}>")
        out.append("</item>")
    out += ["</channel>", "</rss>"]
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    clothing = Path(args.data) / "clothing"
    rows = list(csv.DictReader(open(clothing / "images.csv", encoding="utf-8")))
    rng = random.Random(20261127)
    used: set[str] = set()
    per = {name: pick_products(rows, rng, PER_RETAILER, used) for name in ("zalando", "asos", "farfetch")}
    if OUT.exists():
        shutil.rmtree(OUT / "images", ignore_errors=True)
    (OUT / "images").mkdir(parents=True, exist_ok=True)
    (OUT / "zalando.jsonl").write_text("\n".join(zalando(per["zalando"], rng)) + "\n", encoding="utf-8")
    (OUT / "asos.jsonl").write_text("\n".join(asos(per["asos"], rng)) + "\n", encoding="utf-8")
    items = farfetch_items(per["farfetch"], rng)
    half = len(items) // 2
    write_tsv(OUT / "farfetch.tsv", items[:half])
    write_rss(OUT / "farfetch.xml", items[half:])
    provenance = []
    for retailer, products in per.items():
        for p in products:
            for img in p["images"]:
                shutil.copy(clothing / "images" / f"{img}.jpg", OUT / "images" / f"{img}.jpg")
                provenance.append(f"| {img}.jpg | {p['label']} | {retailer} |")
    readme = OUT / "README.md"
    readme.write_text(README.format(count=len(provenance), rows="\n".join(sorted(provenance))), encoding="utf-8")
    print(f"wrote {len(provenance)} images and 4 dumps to {OUT}")


README = """# Sample catalogs (the embedded default of `fashion-enrich run`)

Generated by `scripts/make_samples.py`. The **images** are {count} real photos from the
Clothing dataset by Alexey Grigorev (https://github.com/alexeygrigorev/clothing-dataset,
"can be freely used for any purpose, including commercial"), as downscaled in
`../shared/data/clothing` (256 px short side). The **catalog records** are synthetic: they
follow each retailer's dump format, the category value matches the photo's label, while
brands, titles and gender are invented (the dataset has no gender). A product's photos come
from one contributor and share a label; they are not guaranteed to show the same garment.

A few records are wrong on purpose, so that the sample run shows the dead-letter table and
the manifest at work: a Zalando article without images and a truncated JSON line, an ASOS
product with an out-of-scope category and one with an ftp:// image, a Farfetch TSV row with
too few columns; Farfetch size variants share images (counted as duplicates).

| image | clothing label | used by |
|---|---|---|
{rows}
"""

if __name__ == "__main__":
    main()
