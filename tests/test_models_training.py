"""Smoke trainings on a tiny generated catalog: prepare (Beam + TFT), train, export, reload,
evaluate. A few steps on a few images: shapes, files, identical predictions after reload."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from models.data import PrepareConfig, load_prepared, prepare  # noqa: E402
from pipeline.options import ConfigError, RunConfig  # noqa: E402

COLORS = {"dress": (200, 30, 30), "jeans": (30, 30, 200), "hat": (30, 160, 30)}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """36 products: 16 red 'dresses', 16 blue 'jeans', 4 green 'hats' (below the minimum count),
    2 photos each; every third product is a person shot in the weak labels; every other product
    has a retailer colour ('Navy Blue' for the jeans: mapped onto 'navy')."""
    root = tmp_path_factory.mktemp("catalog")
    (root / "img").mkdir()
    rows, person = ["sku,kind,who,col"], ["id,person_fraction,person_weak"]
    colour = {"dress": "Red", "jeans": "Navy Blue", "hat": "Green"}
    rng = np.random.default_rng(0)
    counts = {"dress": 16, "jeans": 16, "hat": 4}
    n = 0
    for kind, count in counts.items():
        for _ in range(count):
            sku = f"S{n:03d}"
            for view in (1, 2):
                img = Image.new("RGB", (80, 100), (255, 255, 255))
                jitter = tuple(int(c + rng.integers(-20, 20)) for c in COLORS[kind])
                ImageDraw.Draw(img).rectangle((10 + view * 3, 10, 70, 90), fill=jitter)
                img.save(root / "img" / f"{sku}-{view}.jpg")
            rows.append(f"{sku},{kind},{'women' if kind == 'dress' else 'men'},{colour[kind] if n % 2 == 0 else ''}")
            person.append(f"{sku},0.5,{'PERSON' if n % 3 == 0 else 'PRODUCT'}")
            n += 1
    (root / "shop.csv").write_text("\n".join(rows) + "\n")
    (root / "person.csv").write_text("\n".join(person) + "\n")
    (root / "shop.yaml").write_text(
        "retailer: shop\n"
        "source: {format: csv, product_id: sku, image_uri: 'img/{sku}-1.jpg|img/{sku}-2.jpg', image_separator: '|',"
        " category: [kind], gender: [who], colour: [col]}\n"
        "category: {exact: {dress: DRESSES, jeans: JEANS, hat: HATS}}\n"
        "gender: {values: {women: FEMALE, men: MALE}}\n"
        "age_group: {default: ADULT}\n"
        "colour: {values: {red: red, navy blue: navy, green: green}}\n")
    return root


@pytest.fixture(scope="module")
def prepared(catalog, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("prepared"))
    cfg = RunConfig.from_options(PipelineOptions(
        ["--source", f"shop={catalog / 'shop.csv'}:{catalog / 'shop.yaml'}", "--output", out]))
    info = prepare(PrepareConfig(sources=cfg.sources, out=out, image_size=32, category_min_count=10,
                                 person_labels=(("shop", str(catalog / "person.csv")),), fetch=cfg.fetch))
    return out, info


def test_prepare_writes_examples_vocabularies_and_transform_output(prepared):
    out, info = prepared
    assert info["examples"] == 72 and info["products"] == 36 and info["dead_letter"] == {}
    assert sorted(info["vocabularies"]["category"]) == ["DRESSES", "JEANS"]  # HATS (8 images): under the floor
    assert info["labelled"] == {"category": 64, "gender": 72, "age_group": 72, "colour": 36, "person": 72}
    assert sorted(info["vocabularies"]["colour"]) == ["green", "navy", "red"]
    data = load_prepared(out)
    assert data.images.shape == (72, 32, 32, 3) and data.images.dtype == np.uint8
    assert set(data.labels["person"]) == {0, 1}
    assert (data.groups == data.product_keys).all()  # no group column in this mapping: products
    assert all(len(h) == 64 for h in data.sha256)
    assert os.path.isdir(os.path.join(out, "transform_fn", "transform_fn"))
    # Pixels are the shared preprocessing's: a red dress photo is red in the middle.
    dress = data.images[data.labels["category"] == data.vocabularies["category"].index("DRESSES")][0]
    assert dress[16, 16, 0] > 150 and dress[16, 16, 2] < 90


def test_prepare_maps_onto_a_custom_taxonomy_and_records_it(catalog, tmp_path, caplog, monkeypatch):
    """--taxonomy reaches the map stage of prepare (not only the mapping validation), and the
    prepared folder records it (and the command) for train and evaluate. Through the CLI, the
    command is quiet: no TensorFlow / absl / TFT warnings (TFT notes "instance dicts" on every
    prepare)."""
    from pipeline.quiet import CHATTY_LOGGERS, VERBOSE_ENV
    from runners.cli import main

    taxonomy = tmp_path / "taxonomy.yaml"
    shipped = (Path(__file__).resolve().parents[1] / "schemas" / "taxonomy.yaml").read_text()
    # TOPS renamed UPPERS: a node the shipped taxonomy lacks (43 nodes still, keywords unaffected).
    taxonomy.write_text(shipped.replace("- TOPS: CLOTHING", "- UPPERS: CLOTHING").replace(": TOPS\n", ": UPPERS\n"))
    mapping = tmp_path / "uppers.yaml"
    mapping.write_text((catalog / "shop.yaml").read_text().replace("dress: DRESSES", "dress: UPPERS"))
    out = tmp_path / "prepared"
    argv = ["--source", f"shop={catalog / 'shop.csv'}:{mapping}", "--taxonomy", str(taxonomy),
            "--image-size", "32", "--category-min-count", "10", "--out", str(out)]
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    caplog.set_level(logging.WARNING)
    assert main(["prepare", *argv]) == 0
    chatter = [r for r in caplog.records if r.name.split(".")[0] in CHATTY_LOGGERS and r.levelno < logging.ERROR]
    assert not chatter, [r.getMessage()[:100] for r in chatter]
    info = json.loads((out / "prepared.json").read_text())
    assert sorted(info["vocabularies"]["category"]) == ["JEANS", "UPPERS"]
    assert info["taxonomy"] == str(taxonomy) and info["command"].startswith("fashion-enrich prepare --source")
    assert load_prepared(str(out)).taxonomy_path == str(taxonomy)


def test_train_export_reload_and_evaluate(prepared, tmp_path):
    from models.config import TrainConfig
    from models.export import load_exported
    from models.report import evaluate
    from models.train import train

    out, _ = prepared
    cfg = TrainConfig(task="category", data=out, out=str(tmp_path / "model"), arch="custom_cnn", width=8,
                      folds=2, epochs=8, batch_size=16, augment=False, learning_rate=3e-3,
                      group_near_duplicates=False)
    lines = []
    card = train(cfg, log=lines.append, command="test")
    assert any("epoch 8/8" in line for line in lines)
    assert sorted(card["classes"]) == ["DRESSES", "JEANS"] and card["image_size"] == 32
    assert len(card["metrics"]["folds"]) == 2
    # Red dresses vs blue jeans is learnable in a few epochs: far above the 0.5 of chance.
    assert card["metrics"]["table_one"]["mean_product_accuracy"] >= 0.8, card["metrics"]["table_one"]
    with zipfile.ZipFile(tmp_path / "model" / "model.keras") as archive, h5py.File(
            io.BytesIO(archive.read("model.weights.h5"))) as weights:
        assert "optimizer" not in weights  # the serving artifact carries no training state
    model, loaded_card = load_exported(str(tmp_path / "model"))
    assert loaded_card["model_id"] == card["model_id"]
    assert card["command"] == "test" and "--no-near-duplicate-groups" in card["command_explicit"]
    assert json.loads((tmp_path / "model" / "labels.json").read_text()) == card["classes"]
    from pipeline.model_info import transform_vocabulary

    assert transform_vocabulary(str(tmp_path / "model"), "category") == card["classes"]  # TFT's, served
    # The reloaded artifact scores its held-out fold exactly as the in-memory model did in training.
    from models.evaluation import fold_metrics
    from models.folds import split

    data = load_prepared(out)
    index, _, _, folds = split(data, cfg)
    # These synthetic products are one rectangle each: near-duplicates of each other by design.
    # With near-duplicate grouping they form one group, which cannot fill two folds.
    with pytest.raises(ValueError, match="cannot fill 2 folds"):
        split(data, dataclasses.replace(cfg, group_near_duplicates=True))
    best = int(card["metrics"]["exported"].split()[-1]) - 1
    held = index[folds == best]
    # Identical predictions after reload: the exported file vs the scores the trained model gave.
    oof = np.load(tmp_path / "model" / "cv_report" / "out_of_fold.npz")
    assert sorted(oof["example"]) == sorted(index) and oof["scores"].shape == (64, 2)  # each image once
    mine = oof["fold"] == best
    assert sorted(oof["example"][mine]) == sorted(held)
    np.testing.assert_allclose(model.predict(data.images[oof["example"][mine]], verbose=0), oof["scores"][mine],
                               rtol=1e-5, atol=1e-6)
    again = fold_metrics(model.predict(data.images[held], verbose=0), data.labels["category"][held],
                         list(data.product_keys[held]), card["classes"])
    assert again["image_accuracy"] == card["metrics"]["folds"][best]["image_accuracy"]
    assert again["macro_f1"] == pytest.approx(card["metrics"]["folds"][best]["macro_f1"])
    metrics = evaluate(str(tmp_path / "model"), out, str(tmp_path / "report"))
    assert metrics["images"] == 64 and 0 <= metrics["image_accuracy"] <= 1
    assert set(metrics["hierarchy"]) == {"exact", "parent", "child", "parent_or_child", "same_branch",
                                        "miss"}
    assert (tmp_path / "report" / "confusion_matrix.png").stat().st_size > 1000
    assert (tmp_path / "report" / "per_class_accuracy.png").stat().st_size > 1000
    cv = json.loads((tmp_path / "model" / "cv_report" / "confusion.json").read_text())
    assert np.array(cv["counts"]).sum() == 64  # every labelled image scored once, in its held-out fold
    assert (tmp_path / "model" / "cv_report" / "confusion_matrix.png").is_file()
    # Calibration: fitted on the out-of-fold predictions, stored in the card, used by evaluate.
    calibration = card["calibration"]
    assert calibration["method"] == "temperature" and calibration["examples"] == 64
    assert 0.05 <= calibration["temperature"] <= 20 and calibration["nll_after"] <= calibration["nll_before"]
    assert (tmp_path / "model" / "cv_report" / "reliability.png").stat().st_size > 1000
    assert metrics["calibration"]["temperature"] == calibration["temperature"]
    assert (tmp_path / "report" / "reliability.png").is_file()
    # After the fact: fitted on the exported fold's own held-out images, card updated in place.
    from models.report import calibrate_export

    again = calibrate_export(str(tmp_path / "model"), out)
    assert again["examples"] == len(held) and again["fitted_on"] == f"held-out {card['metrics']['exported']} " \
        "of the exported model"
    assert load_exported(str(tmp_path / "model"))[1]["calibration"] == again
    # Every held-out rectangle has a near-duplicate among the training rectangles: all leaked.
    from models.report import near_duplicate_leakage

    leak = near_duplicate_leakage(str(tmp_path / "model"), out)
    assert leak["held_out"] == len(held) == leak["with_train_near_duplicate"]
    assert leak["accuracy_all"] == leak["accuracy_on_near_duplicates"]
    assert leak["accuracy_without_near_duplicates"] is None


def test_person_task_with_augmentation_and_size_mismatch(prepared, tmp_path):
    from models.config import TrainConfig
    from models.train import train

    out, _ = prepared
    lines = []
    card = train(TrainConfig(task="person", data=out, out=str(tmp_path / "person"), arch="vgg_person", folds=2,
                             epochs=1, batch_size=16, max_folds_run=1, group_near_duplicates=False,
                             progress_seconds=0), log=lines.append)
    # Progress within the epoch (36 training images: steps 1 and 2 of 3), then the epoch's metrics.
    assert [line.split(",")[0] for line in lines if "step" in line] == ["  epoch 1/1: step 1/3",
                                                                        "  epoch 1/1: step 2/3"]
    assert any(line.startswith("  epoch 1/1: ") and "step" not in line and "val_loss" in line for line in lines)
    assert card["classes"] == ["PRODUCT", "PERSON"] and card["output"].startswith("sigmoid")
    from models.export import load_exported

    model, _ = load_exported(str(tmp_path / "person"))
    oof = np.load(tmp_path / "person" / "cv_report" / "out_of_fold.npz")
    assert set(oof["fold"]) == {0} and oof["scores"].shape == (len(oof["example"]), 2)  # [1 - p, p]
    p = model.predict(load_prepared(out).images[oof["example"]], verbose=0)
    assert p.shape == (len(oof["example"]), 1)
    np.testing.assert_allclose(p[:, 0], oof["scores"][:, 1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="differs from the prepared"):
        train(TrainConfig(task="gender", data=out, out=str(tmp_path / "g"), image_size=64), log=lambda _: None)


def test_explicit_command_reproduces_the_train_config():
    import shlex

    from models.cli import _train_config, _train_parser
    from models.config import TrainConfig, explicit_command

    def round_trip(cfg: TrainConfig) -> TrainConfig:
        argv = shlex.split(explicit_command(dataclasses.asdict(cfg)))
        assert argv[:2] == ["fashion-enrich", "train"]
        return _train_config(_train_parser().parse_args(argv[2:]))

    tuned = TrainConfig(task="gender", data="/d", out="/o m", epochs=12, augment_range=0.1, width=48,
                        learning_rate=3e-4, subsample_fraction=0.15, subsample_floor=60, seed=3,
                        group_near_duplicates=False, final_fit=True, tta_flip=True, epoch_validation=False)
    assert round_trip(tuned) == tuned
    plain = TrainConfig(task="category", data="/d", out="/o", augment=False)
    assert round_trip(plain) == plain
    # A card written before near-duplicate grouping existed (and was made the default) trained without it.
    old = {k: v for k, v in dataclasses.asdict(plain).items() if k != "group_near_duplicates"}
    assert "--no-near-duplicate-groups" in explicit_command(old)
    assert "--no-near-duplicate-groups" not in explicit_command(dataclasses.asdict(plain))


def test_flip_test_time_augmentation_is_measured_exported_and_served(prepared, tmp_path):
    from models.config import TrainConfig
    from models.export import load_exported
    from models.train import train

    out, _ = prepared
    lines = []
    cfg = TrainConfig(task="category", data=out, out=str(tmp_path / "tta"), arch="custom_cnn", width=8, folds=2,
                      epochs=2, batch_size=16, max_folds_run=1, group_near_duplicates=False, tta_flip=True,
                      epoch_validation=False)
    card = train(cfg, log=lines.append)
    assert not any("val_loss" in line for line in lines)  # no held-out scoring after each epoch
    assert any("without the mirror image" in line for line in lines)
    fold = card["metrics"]["folds"][0]
    assert set(fold["without_tta"]) == {"image_accuracy", "product_accuracy", "macro_f1"}
    assert "mean_image_accuracy_without_tta" in card["metrics"]["table_one"]
    assert card["test_time_augmentation"].startswith("horizontal flip")
    assert "--tta-flip" in card["command_explicit"] and "--no-epoch-validation" in card["command_explicit"]
    model, _ = load_exported(str(tmp_path / "tta"))
    images = load_prepared(out).images
    oof = np.load(tmp_path / "tta" / "cv_report" / "out_of_fold.npz")
    # The served artifact reproduces the cross-validation scores, which are the mean over the
    # image and its mirror image of the inner (trained) model's scores.
    np.testing.assert_allclose(model.predict(images[oof["example"]], verbose=0), oof["scores"], rtol=1e-5,
                               atol=1e-6)
    inner = next(layer for layer in model.layers if layer.name.startswith("custom_cnn"))
    some = images[oof["example"][:8]]
    mean = (inner.predict(some, verbose=0) + inner.predict(some[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(model.predict(some, verbose=0), mean, rtol=1e-5, atol=1e-6)
    assert not np.allclose(inner.predict(some, verbose=0), mean, atol=1e-6)  # the mirror image counts
