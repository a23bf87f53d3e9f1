"""The fashion-enrich command line: one-line errors, the taxonomy command, the installed script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pandas as pd
import pytest
from PIL import Image

from pipeline.quiet import VERBOSE_ENV
from runners.cli import main


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_taxonomy_prints_the_tree(capsys):
    assert main(["taxonomy"]) == 0
    out = capsys.readouterr().out
    assert "  JEANS\n    SKINNY_JEANS" in out and "43 nodes" in out
    assert main(["taxonomy", "--paths"]) == 0
    assert "CLOTHING > JEANS > SKINNY_JEANS" in capsys.readouterr().out


def test_missing_input_is_one_line(capsys, tmp_path):
    assert main(["run", "--zalando", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path)]) == 2
    assert "input not found" in error_line(capsys)


def test_unknown_retailer_is_one_line(capsys, tmp_path, samples):
    assert main(["run", "--source", f"kaufhaus={samples / 'asos.jsonl'}", "--output", str(tmp_path)]) == 2
    assert "unknown retailer 'kaufhaus'" in error_line(capsys)


def test_bad_mapping_file_is_one_line(capsys, tmp_path, samples):
    mapping = tmp_path / "shop.yaml"
    mapping.write_text("retailer: shop\nsource: {format: jsonl, product_id: id, image_uri: url}\n"
                       "category: {exact: {dresses: FROCKS}}\n")
    assert main(["run", "--source", f"shop={samples / 'asos.jsonl'}:{mapping}", "--output", str(tmp_path)]) == 2
    assert "bad mapping file" in error_line(capsys)


def test_bad_run_date_and_unknown_command(capsys, tmp_path):
    assert main(["run", "--run-date", "27/11/2026", "--output", str(tmp_path)]) == 2
    assert "YYYY-MM-DD" in error_line(capsys)
    assert main(["enrich-everything"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_generic_source_with_a_user_mapping_file(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    for sku in ("A1", "A2"):
        Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "img" / f"{sku}.jpg")
    dump = tmp_path / "shop.csv"
    dump.write_text("sku;kind;who\nA1;Jurken;dames\nA2;Speelgoed;kinderen\n")
    mapping = tmp_path / "shop.yaml"
    mapping.write_text(
        "retailer: shop\n"
        "source: {format: csv, delimiter: ';', product_id: sku, image_uri: 'img/{sku}.jpg', category: [kind],"
        " gender: [who]}\n"
        "category: {exact: {jurken: DRESSES}}\n"
        "gender: {values: {dames: FEMALE}}\n")
    out = tmp_path / "out"
    assert main(["run", "--source", f"shop={dump}:{mapping}", "--output", str(out), "--run-date", "2026-02-03"]) == 0
    images = pd.read_parquet(out / "images")
    assert sorted(zip(images["product_id"], images["category"].fillna("-"))) == [("A1", "DRESSES"), ("A2", "-")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["unmapped"]["category"] == {"shop": {"speelgoed": 1}}
    assert manifest["unmapped"]["gender"] == {"shop": {"kinderen": 1}}
    assert "shop" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("fashion-enrich") is None, reason="package not installed")
def test_installed_console_script_runs_the_embedded_default_quietly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != VERBOSE_ENV}
    proc = subprocess.run(["fashion-enrich", "run", "--output", str(tmp_path / "out")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "reconciled" in proc.stdout
    # The terminal shows only the project's own lines: no TensorFlow/absl/oneDNN/CUDA start-up lines.
    assert proc.stderr == "", proc.stderr[-2000:]
    images = pd.read_parquet(tmp_path / "out" / "images")
    assert len(images) > 90 and set(images["retailer"].astype(str)) == {"zalando", "asos", "farfetch"}


def test_folder_as_input_and_unwritable_output_are_one_line(capsys, tmp_path, samples):
    assert main(["run", "--zalando", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    assert "is a folder" in error_line(capsys)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", "--asos", str(samples / "asos.jsonl"), "--output", str(blocker / "out")]) == 2
    assert "cannot write to output folder" in error_line(capsys)
