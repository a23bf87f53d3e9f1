"""Inputs, image cache, models and outputs on an object store (``fakegs://``, GCS semantics):
the whole run goes through Beam FileSystems, with no local-only path on the way."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from tests.objectstore import PREFIX, ROOT_ENV, FakeObjectStore  # noqa: F401 - registers the scheme


@pytest.fixture
def store(tmp_path, monkeypatch, samples):
    root = tmp_path / "store"
    (root / "bucket" / "dumps").mkdir(parents=True)
    for name in ("zalando.jsonl", "asos.jsonl"):
        shutil.copy(samples / name, root / "bucket" / "dumps" / name)
    shutil.copytree(samples / "images", root / "bucket" / "dumps" / "images")
    monkeypatch.setenv(ROOT_ENV, str(root))
    # The fake store is an object store like gs:// for URIs found in dumps.
    monkeypatch.setattr("pipeline.sources.image_uris.ALLOWED_SCHEMES", ("http", "https", "gs", "fakegs"))
    monkeypatch.setattr("pipeline.images.fetch.OBJECT_STORES", ("gs", "fakegs"))
    return root


def test_a_run_entirely_on_an_object_store(store):
    from pipeline.job import run_job
    from pipeline.model_profiles import shipped_model_dir

    shutil.copytree(shipped_model_dir("compact/category"), store / "bucket" / "models" / "category")
    args = ["--zalando", f"{PREFIX}bucket/dumps/zalando.jsonl", "--asos", f"{PREFIX}bucket/dumps/asos.jsonl",
            "--output", f"{PREFIX}bucket/enriched", "--image-cache", f"{PREFIX}bucket/cache",
            "--category-model", f"{PREFIX}bucket/models/category", "--models", "none",
            "--run-date", "2026-11-21", "--progress-interval", "0"]
    result = run_job(args)
    manifest = result.manifest
    assert manifest["reconciled"] and manifest["counts"]["images"] == {"zalando": 33, "asos": 37}
    out = store / "bucket" / "enriched"
    assert json.loads((out / "manifest.json").read_text())["run_id"] == manifest["run_id"]
    images = pd.read_parquet(out / "images")
    assert len(images) == 70 and images["image_uri"].str.startswith(f"{PREFIX}bucket/dumps/images/").all()
    assert images["predicted_category"].notna().all()  # the model was read from the store
    assert not (out / "_staging").exists() or not any((out / "_staging").rglob("*.parquet"))
    # Rerunning the date replaces its partitions (prefix deletes) instead of adding rows.
    again = run_job(args).manifest
    assert again["reconciled"] and len(pd.read_parquet(out / "images")) == 70


def test_the_image_cache_on_an_object_store_serves_the_second_run(store):
    """Web images cached under fakegs://: the second run revalidates and gets 304s."""
    from pipeline.job import run_job
    from tests.imageserver import ImageServer

    with ImageServer() as server:
        lines = [json.dumps({"sku": f"S{i}", "url": server.url("/etag.jpg"), "kind": "dresses"}) for i in range(3)]
        (store / "bucket" / "dumps" / "shop.jsonl").write_text("\n".join(lines) + "\n")
        (store / "bucket" / "dumps" / "shop.yaml").write_text(
            "retailer: shop\nsource: {format: jsonl, product_id: sku, image_uri: url, category: [kind]}\n"
            "category: {exact: {dresses: DRESSES}}\n")
        args = ["--source", f"shop={PREFIX}bucket/dumps/shop.jsonl:{PREFIX}bucket/dumps/shop.yaml",
                "--output", f"{PREFIX}bucket/out", "--image-cache", f"{PREFIX}bucket/cache",
                "--allow-private-addresses", "--models", "none", "--progress-interval", "0"]
        first = run_job(args).manifest
        bodies_first = server.bodies_sent["/etag.jpg"]
        second = run_job(args).manifest
        bodies_second = server.bodies_sent["/etag.jpg"] - bodies_first
    # The three records share one URL: in the first run a record fetched after another one
    # cached it may already hit (timing), and every miss downloaded the body (a retry after a
    # timeout on a loaded machine may download it again: at least once, not exactly once).
    assert first["counts"]["images"] == {"shop": 3} and first["reconciled"]
    hits_first = first["counts"]["cache_hits"].get("shop", 0)
    assert hits_first < 3 and bodies_first >= 3 - hits_first
    assert second["counts"]["cache_hits"] == {"shop": 3} and bodies_second == 0  # all 304s
    assert any((store / "bucket" / "cache").rglob("*"))  # the cache objects live in the store
