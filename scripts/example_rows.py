"""Print a few rows of a run's products, images and review tables as Markdown (for the README).

    python scripts/example_rows.py ./fashion-enrich-output [--rows 4]
"""

import argparse

import pandas as pd

PRODUCT_COLUMNS = ["retailer", "product_id", "title", "image_count", "retailer_category", "category", "category_score",
                   "category_agreement", "category_error_probability", "retailer_gender", "gender",
                   "gender_agreement", "gender_error_probability", "age_group", "colour", "review_tier_name"]
REVIEW_COLUMNS = ["retailer", "product_id", "review_tier_name", "review_priority", "review_reasons", "title",
                  "retailer_category", "category", "retailer_gender", "gender", "title_gender"]
IMAGE_COLUMNS = ["retailer", "product_id", "image_position", "category", "person_score", "predicted_category",
                 "category_top3", "predicted_gender", "predicted_age_group", "colour"]


def markdown(df: pd.DataFrame) -> str:
    def cell(v):
        if isinstance(v, float) and not pd.isna(v):
            return f"{v:.3f}"
        if hasattr(v, "tolist"):
            v = v.tolist()
        if isinstance(v, list):
            return ", ".join(str(x) for x in v)
        return "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output")
    parser.add_argument("--rows", type=int, default=4)
    args = parser.parse_args()
    products = pd.read_parquet(f"{args.output}/products")
    products["retailer"] = products["retailer"].astype(str)
    sample = products.groupby("category_agreement", group_keys=False).head(1).head(args.rows)
    print(markdown(sample[[c for c in PRODUCT_COLUMNS if c in sample.columns]]))  # a model's columns, if served
    print()
    images = pd.read_parquet(f"{args.output}/images")
    images["retailer"] = images["retailer"].astype(str)
    keys = set(zip(sample["retailer"], sample["product_id"]))
    chosen = images[[k in keys for k in zip(images["retailer"], images["product_id"])]].head(args.rows)
    print(markdown(chosen[[c for c in IMAGE_COLUMNS if c in chosen.columns]]))
    print()
    review = pd.read_parquet(f"{args.output}/review")
    review["retailer"] = review["retailer"].astype(str)
    queue = review.sort_values(["review_tier", "review_priority", "product_id"], ascending=[True, False, True])
    print(markdown(queue[REVIEW_COLUMNS].head(args.rows)))


if __name__ == "__main__":
    main()
