"""An incremental run over a damaged previous output (pipeline/reuse.py, pipeline/kept_groups.py):
real runs on sample photos, real Parquet files truncated, replaced or removed.

Reading the previous run never fails the night: a file that cannot be read is named in one
line and in the manifest (``previous.unreadable``), its images are scored again, and the run
reconciles and exits 0; a sharded run whose previous product files cannot be read computes
the near-duplicate groups instead of keeping them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.job import run_job
from pipeline.reuse import ReadPrevious
from runners.cli import main
from tests.test_carry import _sharded_counters
from tests.test_sharded import COMMON, assert_same_rows, photo_dump, shop_dump, tables

DAY = [("P0", "images/0.jpg"), ("P1", "images/1.jpg"), ("P2", "images/2.jpg"), ("P3", "images/0.jpg")]


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def first_run(tmp_path: Path, samples: Path) -> tuple[list[str], Path]:
    source = shop_dump(photo_dump(tmp_path, samples, 3), DAY)
    args = [*COMMON, "--models", "none", "--source", source]
    out = tmp_path / "out"
    assert run_job([*args, "--run-date", "2026-09-01", "--output", str(out), "--records-per-shard", "0"]
                   ).manifest["reconciled"]
    return args, out


def image_file(out: Path) -> Path:
    (path,) = (out / "images" / "run_date=2026-09-01" / "retailer=shop").glob("*.parquet")
    return path


def test_a_truncated_previous_images_file_costs_its_reuse_not_the_night(tmp_path, samples, capsys):
    args, out = first_run(tmp_path, samples)
    damaged = image_file(out)
    truncate(damaged)
    assert main(["run", *args, "--run-date", "2026-09-02", "--output", str(out), "--previous", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"previous output damaged: {damaged} could not be read (ArrowInvalid: Parquet magic bytes" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["reconciled"]
    (bad,) = manifest["previous"]["unreadable"]
    assert (bad["retailer"], bad["path"]) == ("shop", str(damaged)) and "magic bytes" in bad["reason"]
    counts = manifest["counts"]
    assert (counts["images_new"]["shop"], counts["images_reused"]["shop"]) == (4, 0)  # all scored again
    # and the next night reuses today's rows as usual
    again = run_job([*args, "--run-date", "2026-09-03", "--output", str(out), "--previous", str(out),
                     "--records-per-shard", "0"]).manifest
    assert again["previous"]["unreadable"] == [] and again["counts"]["images_reused"]["shop"] == 4


def test_files_gone_or_of_another_table_are_unreadable_and_the_rest_is_read(tmp_path, samples):
    _, out = first_run(tmp_path, samples)
    good = image_file(out)
    products = next((out / "products").rglob("*.parquet"))
    foreign = good.parent / "part-77777-products.parquet"
    shutil.copy(products, foreign)  # a products file where images are read
    gone = str(good.parent / "part-88888-gone.parquet")  # listed, then removed before it was read
    renamed = good.parent / "part-99999-typed.parquet"  # an images file whose columns changed type
    table = pq.read_table(good)
    pq.write_table(table.set_column(table.schema.get_field_index("image_position"), "image_position",
                                    pa.array([f"x{i}" for i in range(table.num_rows)])), renamed)
    with TestPipeline() as p:
        read = p | ReadPrevious(str(out), ("shop",), [str(good), str(foreign), gone, str(renamed)])
        assert_that(read["rows"] | beam.MapTuple(lambda run_date, r: (run_date, r.product_id)),
                    equal_to([("2026-09-01", product) for product, _ in DAY]), label="rows")
        assert_that(read["unreadable"] | beam.MapTuple(lambda retailer, path, reason: (retailer, path)),
                    equal_to([("shop", str(foreign)), ("shop", gone), ("shop", str(renamed))]), label="unreadable")


def test_a_sharded_run_over_a_damaged_output_computes_the_groups_and_reconciles(tmp_path, samples):
    args, out = first_run(tmp_path, samples)
    whole = tmp_path / "whole"
    shutil.copytree(out, whole)
    for folder in (out, whole):
        for path in (folder / "products").rglob("*.parquet"):
            truncate(path)  # the kept groups' source
        truncate(image_file(folder))  # and the previous rows
    counters = _sharded_counters([*args, "--run-date", "2026-09-02", "--output", str(out), "--previous", str(out),
                                  "--records-per-shard", "1"])
    assert counters["kept_group_products"] == 0 and counters["previous_files_unreadable"] == 1
    sharded = json.loads((out / "manifest.json").read_text())
    expected = run_job([*args, "--run-date", "2026-09-02", "--output", str(whole), "--previous", str(whole),
                        "--records-per-shard", "0"]).manifest
    assert sharded["reconciled"] and sharded["counts"] == expected["counts"]
    assert [u["retailer"] for u in sharded["previous"]["unreadable"]] == ["shop"]
    for folder in (out, whole):  # the damaged day stays as it was: compare the new one
        for table in ("images", "products", "dead_letter", "review"):
            shutil.rmtree(folder / table / "run_date=2026-09-01", ignore_errors=True)
    a, b = tables(whole), tables(out)
    for table in a:
        assert_same_rows(a[table], b[table])
    groups = b["products"].set_index("product_id")["duplicate_group"]
    assert groups["P0"] == groups["P3"] == "shop/P0"  # computed afresh: the same photo


def _tmpfs(folder: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` on ``folder`` where this machine lets us (root, no sandbox)."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def test_a_full_disk_fails_the_night_in_one_line_and_leaves_the_previous_output_whole(tmp_path, samples,
                                                                                      capsys, monkeypatch):
    """On a real 3 MiB tmpfs where the machine allows it (else with every Parquet write failing
    with ENOSPC): the night fails with exit 4 and one line, and yesterday's files and manifest
    are untouched."""
    import errno
    import subprocess

    from runners.nightly import EXIT_FAILED

    disk = tmp_path / "disk"
    mounted = _tmpfs(disk, "3m")
    try:
        out = disk / "out"
        night = ["nightly", "--zalando", str(samples / "zalando.jsonl"), "--asos", str(samples / "asos.jsonl"),
                 "--output", str(out), "--models", "none", "--direct_running_mode", "in_memory",
                 "--progress-interval", "0"]
        assert main([*night, "--run-date", "2026-09-01"]) == 0
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "_staging" not in p.parts}
        capsys.readouterr()
        if mounted:  # leave a few KiB: the next night's Parquet files do not fit
            free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
            (disk / "ballast").write_bytes(b"\0" * max(free - 16 * 1024, 0))
        else:
            import pyarrow.parquet as pq

            def full(*args, **kwargs):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            monkeypatch.setattr(pq, "ParquetWriter", full)
        assert main([*night, "--run-date", "2026-09-02"]) == EXIT_FAILED
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("fashion-enrich nightly: FAILED: ") and "No space left" in err[0]
        after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "_staging" not in p.parts}
        assert after == before  # the previous output, manifest included, as it was
        assert json.loads((out / "manifest.json").read_text())["run_date"] == "2026-09-01"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)
