"""Incremental runs (pipeline/reuse.py, pipeline/stored.py, pipeline/images/validators.py): real
Beam runs on real Parquet, images on the loopback HTTP server and in local files.

An unchanged image is reused from the previous run's row (a 304 or the same size + mtime, no
body, no decode, no inference); a changed one, a new one, or any image under another model is
fetched and scored; products gone from the dump are counted as vanished; the manifest reconciles.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.build import build_pipeline
from pipeline.images.config import FetchConfig
from pipeline.images.fetch import Fetcher
from pipeline.images.validators import conditional_headers, file_validator, http_validator
from pipeline.options import ConfigError, RunConfig
from pipeline.records import ImageRecord
from pipeline.reuse import read_stored
from pipeline.sinks import manifest_paths
from pipeline.stored import RECORD_FIELDS, ReuseStatus, record_from_row, reuse_stored
from schemas.tables import IMAGES
from tests.imageserver import ImageServer, jpeg

NO_MODELS = ["--models", "none"]
MAPPING = ("retailer: shop\nsource: {format: jsonl, product_id: sku, image_uri: url, category: [kind]}\n"
           "category: {exact: {dresses: DRESSES}}\n")


def run(args: list[str]) -> tuple[dict, Counter]:
    """One real run: (its manifest, Beam counters summed by name over all steps)."""
    options = PipelineOptions([*args, "--progress-interval", "0"])
    config = RunConfig.from_options(options)
    p = beam.Pipeline(options=options)
    build_pipeline(p, config)
    result = p.run()
    result.wait_until_finish()
    counters: Counter = Counter()
    for found in result.metrics().query()["counters"]:
        counters[found.key.metric.name] += found.committed or 0
    manifest = json.loads(Path(manifest_paths(config.output, config.run_date, config.run_id)[1]).read_text())
    return manifest, counters


def images_of(out: Path, run_date: str) -> pd.DataFrame:
    frame = pd.read_parquet(out / "images", filters=[("run_date", "=", run_date)])
    return frame.set_index("product_id").sort_index()


def write_dump(folder: Path, urls: dict[str, str]) -> str:
    (folder / "shop.jsonl").write_text("".join(json.dumps({"sku": sku, "url": url, "kind": "dresses"}) + "\n"
                                               for sku, url in urls.items()))
    (folder / "shop.yaml").write_text(MAPPING)
    return f"shop={folder / 'shop.jsonl'}:{folder / 'shop.yaml'}"


def statuses(manifest: dict) -> dict[str, int]:
    return {kind: manifest["counts"][f"images_{kind}"]["shop"] for kind in ("reused", "rescored", "new")}


# -- validators, fetcher, stored rows -------------------------------------------------------
def test_validators_round_trip_to_conditional_headers():
    assert http_validator('"v1"', "Tue, 01 Dec 2026 10:00:00 GMT") == 'etag:"v1"'
    assert conditional_headers('etag:"v1"') == {"If-None-Match": '"v1"'}
    lm = http_validator(None, "Tue, 01 Dec 2026 10:00:00 GMT")
    assert conditional_headers(lm) == {"If-Modified-Since": "Tue, 01 Dec 2026 10:00:00 GMT"}
    assert http_validator(None, None) is None and conditional_headers(None) == {}
    assert conditional_headers(file_validator(10, 5)) == {}  # a file validator is never sent to a server
    assert file_validator(10, 0) is None  # no modification time: nothing to compare


def test_conditional_fetch_over_http_and_of_local_files(tmp_path):
    with ImageServer() as server:
        server.versioned["/e.jpg"] = ('"a"', None, jpeg(color=(1, 1, 1)))
        server.versioned["/lm.jpg"] = (None, "Tue, 01 Dec 2026 10:00:00 GMT", jpeg(color=(2, 2, 2)))
        fetcher = Fetcher(FetchConfig(allow_private_addresses=True, allowed_roots=(str(tmp_path),)))
        try:
            for path in ("/e.jpg", "/lm.jpg"):
                first = fetcher.fetch(server.url(path))
                assert first.status == 200 and first.data and first.validator and not first.not_modified
                again = fetcher.fetch(server.url(path), first.validator)
                assert again.not_modified and again.status == 304 and again.data == b""
                assert again.validator == first.validator
                assert server.bodies_sent[path] == 1  # the 304 carried no body
            server.versioned["/e.jpg"] = ('"b"', None, jpeg(color=(9, 9, 9)))
            changed = fetcher.fetch(server.url("/e.jpg"), 'etag:"a"')
            assert not changed.not_modified and changed.data and changed.validator == 'etag:"b"'
            assert server.hits["/e.jpg"] == 3  # one request: its 200 body is the new fetch
            image = tmp_path / "x.jpg"
            image.write_bytes(jpeg())
            local = fetcher.fetch(str(image))
            assert local.validator.startswith("file:size=") and local.status is None
            assert fetcher.fetch(str(image), local.validator).not_modified
            os.utime(image, ns=(1, 10**18))
            touched = fetcher.fetch(str(image), local.validator)
            assert not touched.not_modified and touched.data == image.read_bytes()
            checked = fetcher.fetch(str(image), local.validator, body=False)  # a check only: not read
            assert not checked.not_modified and checked.data == b"" and checked.validator == touched.validator
            assert fetcher.fetch(str(image), touched.validator, body=False).not_modified
        finally:
            fetcher.close()


def test_conditional_fetch_from_an_object_store(tmp_path, monkeypatch):
    from tests.objectstore import PREFIX, ROOT_ENV

    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    monkeypatch.setattr("pipeline.images.fetch.OBJECT_STORES", ("gs", "fakegs"))
    (tmp_path / "bucket").mkdir()
    (tmp_path / "bucket" / "a.jpg").write_bytes(jpeg())
    fetcher = Fetcher(FetchConfig())
    first = fetcher.fetch(f"{PREFIX}bucket/a.jpg")
    assert first.validator and first.data
    assert fetcher.fetch(f"{PREFIX}bucket/a.jpg", first.validator).not_modified
    (tmp_path / "bucket" / "a.jpg").write_bytes(jpeg(color=(5, 5, 5)))
    os.utime(tmp_path / "bucket" / "a.jpg", ns=(1, 10**18))
    assert fetcher.fetch(f"{PREFIX}bucket/a.jpg", first.validator).data


def test_stored_rows_come_back_with_every_column_and_todays_record_fields():
    stored = ImageRecord(retailer="shop", product_id="p", image_position=1, image_uri="u", source_file="old.jsonl",
                         source_line=3, title="old title", category="DRESSES", image_width=10, image_phash="ab" * 18,
                         category_scores=(0.1, 0.9), category_model="c1", image_validator='etag:"a"',
                         enriched_with="k", dominant_colour="red", reuse_status="NEW")
    back = record_from_row(IMAGES.to_row(stored), "shop")
    assert back == stored  # every column of the table, lists back to tuples
    assert record_from_row({**IMAGES.to_row(stored), "a_column_of_the_future": 1}, "shop") == stored
    today = ImageRecord(retailer="shop", product_id="p", image_position=2, image_uri="u", source_file="new.jsonl",
                        source_line=7, title="new title", category="SKIRTS")
    reused = reuse_stored(today, back, http_status=304, fetch_ms=1.0)
    assert (reused.title, reused.category, reused.source_file, reused.image_position) == (
        "new title", "SKIRTS", "new.jsonl", 2)
    assert (reused.category_scores, reused.image_phash, reused.dominant_colour, reused.image_validator) == (
        (0.1, 0.9), "ab" * 18, "red", 'etag:"a"')
    assert (reused.http_status, reused.reuse_status) == (304, ReuseStatus.REUSED.value)


def test_stored_files_are_read_by_column_as_row_by_row(tmp_path):
    """read_stored (by column, in batches) gives exactly what record_from_row gives for each row,
    with lists back to tuples, nulls kept and the retailer and run date from the path."""
    records = [ImageRecord(retailer="shop", product_id=f"p{i}", image_position=i, image_uri=f"u{i}",
                           source_file="d.jsonl", source_line=i, title=None if i % 2 else "t",
                           category_scores=(0.25, 0.75) if i % 3 else None, raw_category=("A", f"B{i}"),
                           image_validator=f"size:{i}", enriched_with="k") for i in range(7)]
    rows = [IMAGES.to_row(r) for r in records]
    path = tmp_path / "images" / "run_date=2026-01-02" / "retailer=shop" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=IMAGES.schema), path)
    read = list(read_stored(str(path), batch_rows=3))  # three batches: 3 + 3 + 1
    assert read == [("2026-01-02", record_from_row(row, "shop")) for row in pq.read_table(path).to_pylist()]
    assert [r.product_id for _, r in read] == [r.product_id for r in records]
    assert read[1][1].raw_category == ("A", "B1") and read[1][1].title is None
    assert read[1][1].category_scores == (0.25, 0.75) and read[2][1].image_validator == "size:2"


def test_no_image_derived_column_is_taken_as_a_record_field():
    """RECORD_FIELDS (fields before image_width) are refreshed from the dump: no score, model id,
    hash or fetch column may sit among them, or a reused row would lose it."""
    dump_image_fields = {"image_position", "image_uri", "image_role", "image_role_raw"}  # what the retailer says
    derived = [f for f in RECORD_FIELDS if f.startswith(("image_", "predicted_", "dominant_", "fetch_"))
               and f not in dump_image_fields or f.endswith(("_scores", "_score", "_model"))
               or f in ("http_status", "cache_hit", "enriched_with", "reuse_status")]
    assert derived == [] and {"retailer", "product_id", "image_uri", "category", "gender"} <= set(RECORD_FIELDS)


def test_previous_must_be_an_existing_folder(tmp_path):
    with pytest.raises(ConfigError, match="--previous"):
        RunConfig.from_options(PipelineOptions(["--previous", str(tmp_path / "nowhere")]))


# -- whole runs ----------------------------------------------------------------------------------
def test_reruns_against_the_loopback_server_reuse_with_304s(tmp_path):
    out = tmp_path / "out"
    with ImageServer() as server:
        for n in range(4):
            server.versioned[f"/v{n}.jpg"] = ('"a"', None, jpeg(size=(120, 160 + n), color=(40 * n, 90, 200)))
        server.versioned["/lm.jpg"] = (None, "Tue, 01 Dec 2026 10:00:00 GMT", jpeg(color=(250, 250, 0)))
        server.versioned["/v5.jpg"] = ('"a"', None, jpeg(color=(0, 250, 250)))
        urls = {f"P{n}": server.url(f"/v{n}.jpg") for n in range(4)} | {"P4": server.url("/lm.jpg")}
        source = write_dump(tmp_path, urls)
        common = ["--source", source, "--output", str(out), "--allow-private-addresses", *NO_MODELS]
        first, _ = run([*common, "--run-date", "2026-05-01"])
        assert first["reconciled"] and statuses(first) == {"reused": 0, "rescored": 0, "new": 5}
        assert first["previous"] is None

        bodies = Counter(server.bodies_sent)
        second, counters = run([*common, "--run-date", "2026-05-02", "--previous", str(out)])
        assert second["reconciled"] and statuses(second) == {"reused": 5, "rescored": 0, "new": 0}
        assert server.bodies_sent == bodies  # every image answered 304: no body downloaded
        assert counters["reused"] == 5 and counters["decoded"] == 0
        assert second["previous"]["partitions"] == {"shop": {"2026-05-01": 5}}
        before, after = images_of(out, "2026-05-01"), images_of(out, "2026-05-02")
        assert (after.reuse_status == "REUSED").all() and (after.http_status == 304).all()
        for column in ("image_sha256", "image_phash", "image_width", "dominant_colour", "image_validator"):
            assert after[column].tolist() == before[column].tolist(), column
        assert before.loc["P4", "image_validator"] == "last-modified:Tue, 01 Dec 2026 10:00:00 GMT"

        # P1's image changes (new ETag), P3 leaves the dump, P5 arrives; the same date is run again.
        server.versioned["/v1.jpg"] = ('"b"', None, jpeg(color=(0, 0, 0)))
        hits = Counter(server.hits)
        write_dump(tmp_path, {**{k: v for k, v in urls.items() if k != "P3"}, "P5": server.url("/v5.jpg")})
        third, counters = run([*common, "--run-date", "2026-05-02", "--previous", str(out)])
    assert third["reconciled"] and statuses(third) == {"reused": 3, "rescored": 1, "new": 1}
    assert third["counts"]["vanished_products"] == {"shop": 1}
    assert third["previous"]["partitions"] == {"shop": {"2026-05-02": 5}}  # its own date, read before replaced
    assert server.hits["/v1.jpg"] - hits["/v1.jpg"] == 1  # the conditional request's 200 was the download
    assert counters["decoded"] == 2  # P1 and P5 only
    rows = images_of(out, "2026-05-02")
    assert sorted(rows.index) == ["P0", "P1", "P2", "P4", "P5"]  # the partition was replaced, P3 not carried
    assert rows.reuse_status.to_dict() == {"P0": "REUSED", "P1": "RESCORED", "P2": "REUSED", "P4": "REUSED",
                                           "P5": "NEW"}
    assert rows.loc["P1", "image_validator"] == 'etag:"b"'
    assert rows.loc["P1", "image_sha256"] != images_of(out, "2026-05-01").loc["P1", "image_sha256"]
    products = pd.read_parquet(out / "products", filters=[("run_date", "=", "2026-05-02")])
    assert sorted(products.product_id) == ["P0", "P1", "P2", "P4", "P5"]
    rec = third["reconciliation"]["shop"]
    assert rec["records_in"] == rec["images"] + rec["dead_letter"] + rec["duplicates"] == 5


@pytest.fixture
def local_catalog(tmp_path, samples) -> tuple[Path, str]:
    """Three sample photos as local files, one product each."""
    folder = tmp_path / "dump"
    (folder / "images").mkdir(parents=True)
    for n, photo in enumerate(sorted((samples / "images").glob("*.jpg"))[:3]):
        shutil.copy(photo, folder / "images" / f"{n}.jpg")
    return folder, write_dump(folder, {f"L{n}": f"images/{n}.jpg" for n in range(3)})


def test_local_files_are_reused_on_unchanged_size_and_mtime(local_catalog, tmp_path):
    folder, source = local_catalog
    out = tmp_path / "out"
    common = ["--source", source, "--output", str(out), *NO_MODELS, "--previous", str(out)]
    out.mkdir()
    assert statuses(run([*common, "--run-date", "2026-06-01"])[0]) == {"reused": 0, "rescored": 0, "new": 3}
    second, counters = run([*common, "--run-date", "2026-06-02"])
    assert second["reconciled"] and statuses(second) == {"reused": 3, "rescored": 0, "new": 0}
    assert counters["decoded"] == 0

    image = folder / "images" / "1.jpg"
    image.write_bytes(jpeg(size=(200, 300), color=(10, 200, 10)))
    os.utime(image, ns=(1, 10**18))
    third, counters = run([*common, "--run-date", "2026-06-02"])
    assert third["reconciled"] and statuses(third) == {"reused": 2, "rescored": 1, "new": 0}
    assert counters["decoded"] == 1
    rows = images_of(out, "2026-06-02")
    assert rows.loc["L1", "reuse_status"] == "RESCORED" and rows.loc["L1", "image_height"] == 300

    # An output written before incremental runs (no validator columns) reuses nothing.
    for path in (out / "images" / "run_date=2026-06-02").rglob("*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["image_validator", "enriched_with", "reuse_status"]), path)
    older, _ = run([*common, "--run-date", "2026-06-03"])
    assert older["reconciled"] and statuses(older) == {"reused": 0, "rescored": 3, "new": 0}


def test_a_local_file_gone_since_the_previous_run_is_a_dead_letter(local_catalog, tmp_path):
    """A reused file's validator is checked on the bundle's thread: a file removed since the
    previous run still ends in the dead-letter table (NOT_FOUND), the others are reused."""
    folder, source = local_catalog
    out = tmp_path / "out"
    common = ["--source", source, "--output", str(out), *NO_MODELS, "--previous", str(out), "--decode-threads", "2"]
    out.mkdir()
    run([*common, "--run-date", "2026-06-01"])
    (folder / "images" / "2.jpg").unlink()
    again, _ = run([*common, "--run-date", "2026-06-02"])
    assert again["reconciled"] and statuses(again) == {"reused": 2, "rescored": 0, "new": 0}
    dead = pd.read_parquet(out / "dead_letter", filters=[("run_date", "=", "2026-06-02")])
    assert list(zip(dead.product_id, dead.reason)) == [("L2", "NOT_FOUND")]


def test_a_model_change_rescores_everything_and_scores_are_reused_with_the_same_model(local_catalog, tmp_path):
    from pipeline.model_profiles import shipped_model_dir

    _, source = local_catalog
    out = tmp_path / "out"
    renamed = tmp_path / "category-renamed"
    shutil.copytree(shipped_model_dir("compact/category"), renamed)
    card = json.loads((renamed / "model_card.json").read_text())
    card["model_id"] += "-renamed"
    (renamed / "model_card.json").write_text(json.dumps(card))
    common = ["--source", source, "--output", str(out), "--models", "compact", "--person-model", "none",
              "--gender-model", "none"]
    first, counters = run([*common, "--run-date", "2026-07-01"])
    assert first["reconciled"] and counters["num_inferences"] == 3

    changed, counters = run([*common, "--run-date", "2026-07-02", "--previous", str(out),
                             "--category-model", str(renamed)])
    assert changed["reconciled"] and statuses(changed) == {"reused": 0, "rescored": 3, "new": 0}
    assert counters["num_inferences"] == 3 and counters["decoded"] == 3

    same, counters = run([*common, "--run-date", "2026-07-03", "--previous", str(out),
                          "--category-model", str(renamed)])
    assert same["reconciled"] and statuses(same) == {"reused": 3, "rescored": 0, "new": 0}
    assert counters["num_inferences"] == 0 and counters["decoded"] == 0
    before, after = images_of(out, "2026-07-02"), images_of(out, "2026-07-03")
    assert after.category_model.tolist() == [card["model_id"]] * 3
    assert [list(s) for s in after.category_scores] == [list(s) for s in before.category_scores]
    products = [pd.read_parquet(out / "products", filters=[("run_date", "=", d)]).set_index("product_id")
                .sort_index() for d in ("2026-07-02", "2026-07-03")]
    assert products[1].category.tolist() == products[0].category.tolist()  # re-aggregated from stored rows
    assert products[1].category_score.tolist() == products[0].category_score.tolist()


def test_nightly_reuses_its_output_by_default_and_full_reuses_nothing(local_catalog, tmp_path, capsys):
    from runners.cli import main
    from runners.nightly import EXIT_OK, reuse_args

    _, source = local_catalog
    out = tmp_path / "out"
    assert reuse_args(["--output", str(out)], full=False) == ["--output", str(out)]  # first night: no output yet
    common = ["--source", source, "--output", str(out), *NO_MODELS, "--direct_running_mode", "in_memory",
              "--progress-interval", "0", "--run-date", "2026-08-01"]
    assert main(["nightly", *common]) == EXIT_OK
    assert main(["nightly", *common]) == EXIT_OK  # the same date again: its own partition is the previous run
    summary = capsys.readouterr().out
    assert "reuse: 3 reused, 0 rescored, 0 new; 0 products vanished (previous run: 2026-08-01" in summary
    assert main(["nightly", *common, "--full"]) == EXIT_OK
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["previous"] is None and statuses(manifest) == {"reused": 0, "rescored": 0, "new": 3}
    assert "reuse:" not in capsys.readouterr().out
    assert main(["nightly", *common, "--no-reuse", "--previous", str(out)]) == 2
    assert "--full and --previous exclude each other" in capsys.readouterr().err
    assert len(images_of(out, "2026-08-01")) == 3  # every rerun replaced the date's partition
