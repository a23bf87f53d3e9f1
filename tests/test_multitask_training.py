"""A tiny real multi-task training on the generated catalog of test_models_training: grouped
folds over the union of the labels, heads warmed on cached features, fine-tuning with
checkpoints, --resume, per-head metrics and calibration, export and reload."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import test_models_training  # noqa: E402

from models.config import TrainConfig, config_from_card, explicit_command  # noqa: E402
from models.train_multitask import train_multitask  # noqa: E402

TASKS = ("category", "gender", "person", "colour")
catalog, prepared = test_models_training.catalog, test_models_training.prepared  # its fixtures, reused


def _cfg(data: str, out: str, **kw) -> TrainConfig:
    base = dict(task="multitask", data=data, out=out, arch="custom_cnn", width=4, folds=2, epochs=2, batch_size=16,
                augment=False, group_near_duplicates=False, tasks=TASKS, warmup_epochs=3, seed=1)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    data, _ = prepared
    out = str(tmp_path_factory.mktemp("multitask"))
    lines: list[str] = []
    card = train_multitask(_cfg(data, out), log=lines.append, command="fashion-enrich train --task multitask")
    return data, out, card, lines


def test_every_head_is_measured_calibrated_and_exported(trained):
    import keras

    import models.architectures  # noqa: F401

    data, out, card, lines = trained
    assert card["task"] == "multitask" and card["tasks"] == list(TASKS)
    heads = {h["task"]: h for h in card["heads"]}
    assert heads["category"]["classes"] == ["DRESSES", "JEANS"] or sorted(heads["category"]["classes"]) == [
        "DRESSES", "JEANS"]
    assert heads["person"]["classes"] == ["PRODUCT", "PERSON"]
    for task, head in heads.items():
        one = head["metrics"]["table_one"]
        assert 0.0 <= one["mean_image_accuracy"] <= 1.0, task
        assert head["calibration"]["temperature"] > 0 and "ece_after" in head["calibration"], task
        assert set(head["metrics"]["mean_per_source_accuracy"]) == {"shop"}, task
        assert os.path.isfile(os.path.join(out, "cv_report", task, "reliability.png"))
        assert len(head["metrics"]["folds"]) == 2
    # Only the labelled examples count: 36 of 72 images carry a colour, 64 a kept category.
    assert sum(f["images"] for f in heads["colour"]["metrics"]["folds"]) == 36
    assert sum(f["images"] for f in heads["category"]["metrics"]["folds"]) == 64
    assert any("heads warmed on frozen features" in line for line in lines)
    assert os.path.isfile(os.path.join(out, "transform_fn", "transformed_metadata", "asset_map"))

    model = keras.models.load_model(os.path.join(out, "model.keras"), compile=False)
    batch = np.full((3, 32, 32, 3), 255, dtype=np.uint8)
    outputs = model(batch, training=False)
    assert set(outputs) == set(TASKS)
    for task in TASKS:
        scores = np.asarray(outputs[task])
        assert scores.shape == (3, len(heads[task]["classes"]))
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)

    oof = np.load(os.path.join(out, "cv_report", "out_of_fold.npz"))
    assert len(oof["example"]) == 72 and oof["colour_scores"].shape == (72, len(heads["colour"]["classes"]))
    assert (oof["colour_label"] == -1).sum() == 36

    # The card's explicit command round-trips the configuration, heads included.
    cfg = config_from_card(card["train_config"])
    assert cfg.tasks == TASKS and cfg.warmup_epochs == 3
    assert "--task multitask" in explicit_command(card["train_config"]) and "--tasks category,gender" in \
        explicit_command(card["train_config"])


def test_the_export_reproduces_its_folds_scores(trained):
    """The exported model is the chosen fold's checkpoint: reloaded, it gives that fold's scores."""
    import keras

    from models.data import load_prepared

    data_dir, out, card, _ = trained
    fold = int(card["metrics"]["exported"].split()[1]) - 1
    oof = np.load(os.path.join(out, "cv_report", "out_of_fold.npz"))
    rows = oof["fold"] == fold
    data = load_prepared(data_dir)
    model = keras.models.load_model(os.path.join(out, "model.keras"), compile=False)
    scores = np.asarray(model.predict(data.images[oof["example"][rows]], verbose=0)["gender"])
    np.testing.assert_allclose(scores, oof["gender_scores"][rows], atol=1e-4)


def test_the_export_carries_the_label_quality_of_its_out_of_fold_predictions(trained):
    from models.label_quality import from_out_of_fold
    from pipeline.label_quality import read_heads
    from pipeline.model_info import ModelInfo
    from schemas.taxonomy import load_taxonomy

    _, out, card, _ = trained
    with open(os.path.join(out, "label_quality.json"), encoding="utf-8") as fh:
        stored = read_heads(fh.read())
    assert set(stored) == {"category", "gender"}  # the heads a retailer label is judged by (no age group here)
    oof = dict(np.load(os.path.join(out, "cv_report", "out_of_fold.npz")))
    classes = {h["task"]: tuple(h["classes"]) for h in card["heads"]}
    learned, temperatures = from_out_of_fold(oof, classes, load_taxonomy(), learned_from="out-of-fold predictions "
                                             "of 2 folds")
    assert stored == learned
    assert temperatures["category"] == {h["task"]: h for h in card["heads"]}["category"]["calibration"]["temperature"]
    infos = {i.task: i for i in ModelInfo.read_all(out)}
    assert infos["category"].quality == stored["category"] and infos["person"].quality is None


def test_a_fold_exports_as_a_model_of_its_own(trained, tmp_path):
    """export_fold: the fold's checkpoint, judged with what the other folds' held-out predictions say."""
    import keras

    from models.data import load_prepared
    from models.fold_export import export_fold
    from models.label_quality import from_out_of_fold
    from pipeline.model_info import ModelInfo
    from schemas.taxonomy import load_taxonomy

    data_dir, out, card, _ = trained
    folder = str(tmp_path / "fold2")
    exported = export_fold(out, 1, folder)
    assert exported["model_id"] == f"{card['model_id']}-fold2" and exported["metrics"]["exported"] == "fold 2"
    oof = dict(np.load(os.path.join(out, "cv_report", "out_of_fold.npz")))
    rows = oof["fold"] == 1
    model = keras.models.load_model(os.path.join(folder, "model.keras"), compile=False)
    scores = np.asarray(model.predict(load_prepared(data_dir).images[oof["example"][rows]], verbose=0)["category"])
    np.testing.assert_allclose(scores, oof["category_scores"][rows], atol=1e-4)  # fold 2's own model
    classes = {h["task"]: tuple(h["classes"]) for h in card["heads"]}
    other, temperatures = from_out_of_fold(oof, classes, load_taxonomy(), rows=~rows, learned_from="")
    infos = {i.task: i for i in ModelInfo.read_all(folder)}
    assert infos["gender"].quality.thresholds == other["gender"].thresholds
    assert infos["gender"].temperature == temperatures["gender"]


def test_evaluate_measures_every_head_and_calibrate_refuses(trained, tmp_path):
    from models.report import calibrate_export, evaluate
    from pipeline.options import ConfigError

    data_dir, out, card, _ = trained
    metrics = evaluate(out, data_dir, str(tmp_path / "report"))
    assert set(metrics["heads"]) == set(TASKS)
    assert metrics["heads"]["colour"]["images"] == 36 and metrics["heads"]["category"]["images"] == 64
    temperatures = {h["task"]: h["calibration"]["temperature"] for h in card["heads"]}
    for task, head in metrics["heads"].items():
        assert head["calibration"]["temperature"] == temperatures[task]
        assert set(head["per_source_accuracy"]) == {"shop"}
        assert (tmp_path / "report" / task / "confusion_matrix.png").stat().st_size > 1000
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["model"] == card["model_id"]
    with pytest.raises(ConfigError, match="multi-task"):
        calibrate_export(out, data_dir)


def test_resume_skips_scored_folds_and_continues_from_the_epoch_checkpoint(trained, tmp_path):
    data, out, _, _ = trained
    # Fold 2 interrupted after its first epoch: its scores are gone and its state says 1 epoch.
    checkpoints = os.path.join(out, "checkpoints")
    os.remove(os.path.join(checkpoints, "fold1-scores.npz"))
    with open(os.path.join(checkpoints, "fold1.json"), "w", encoding="utf-8") as fh:
        json.dump({"fold": 1, "epochs_done": 1, "epochs": 2}, fh)
    lines: list[str] = []
    card = train_multitask(_cfg(data, out), log=lines.append, resume=True)
    text = "\n".join(lines)
    assert "fold 1/2: scored in an earlier run" in text
    assert "resuming from" in text and "after epoch 1" in text
    assert "epoch 2/2" in text and "epoch 1/2" not in text  # only the missing epoch ran
    assert "heads warmed" not in text  # a resumed fold keeps its trained heads
    assert os.path.isfile(os.path.join(checkpoints, "fold1-scores.npz"))
    assert len(card["heads"]) == len(TASKS)


def test_a_head_without_labels_is_refused(prepared, tmp_path):
    from models.data import load_prepared
    from models.train_multitask import heads_of
    from pipeline.options import ConfigError

    data_dir, _ = prepared
    data = load_prepared(data_dir)
    empty = {**data.labels, "gender": np.full_like(data.labels["gender"], -1)}
    import dataclasses

    with pytest.raises(ConfigError, match="gender"):
        heads_of(dataclasses.replace(data, labels=empty), _cfg(data_dir, str(tmp_path)))


def test_config_checks():
    with pytest.raises(ValueError, match="tasks"):
        TrainConfig(task="category", data="d", out="o", tasks=("gender",))
    with pytest.raises(ValueError, match="distinct"):
        TrainConfig(task="multitask", data="d", out="o", tasks=("gender", "nope"))
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(task="multitask", data="d", out="o", epochs=0)
    assert TrainConfig(task="multitask", data="d", out="o", epochs=0, warmup_epochs=5).head_tasks == (
        "category", "gender", "person", "age_group", "colour")


def test_float16_storage_halves_the_file_and_loads_into_float32(trained, tmp_path):
    import keras

    from models.data import load_prepared
    from models.export import store_float16

    data_dir, out, _, _ = trained
    src, dst = os.path.join(out, "model.keras"), str(tmp_path / "half.keras")
    store_float16(src, dst)
    assert os.path.getsize(dst) < 0.6 * os.path.getsize(src)
    full, half = (keras.models.load_model(p, compile=False) for p in (src, dst))
    assert {w.dtype for w in half.weights} == {"float32"}  # computes as before; only the weights are rounded
    images = load_prepared(data_dir).images[:16]
    a, b = full.predict(images, verbose=0), half.predict(images, verbose=0)
    for task in TASKS:
        np.testing.assert_allclose(a[task], b[task], atol=5e-3)
        assert not np.array_equal(a[task], b[task])  # the rounding did happen


def test_the_trained_export_serves_every_head_through_beam(trained, catalog, tmp_path):
    """The tiny trained export, calibration included, through the whole pipeline (RunInference on
    the DirectRunner): every image's calibrated scores are the export's own prediction on the same
    image as prepare decoded it (one shared preprocessing), and products carry the model's colour."""
    import apache_beam as beam
    import keras
    import pandas as pd
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from models.data import load_prepared
    from pipeline.build import build_pipeline
    from pipeline.options import RunConfig
    from pipeline.temperature import apply_to_outputs

    data_dir, out, _, _ = trained
    with open(os.path.join(out, "model_card.json"), encoding="utf-8") as fh:
        card = json.load(fh)  # as written last (the resume test exports again)
    options = PipelineOptions(["--source", f"shop={catalog / 'shop.csv'}:{catalog / 'shop.yaml'}",
                               "--output", str(tmp_path / "run"), "--run_date", "2026-01-02",
                               "--multitask-model", out])
    with TestPipeline(options=options) as p:
        outputs = build_pipeline(p, RunConfig.from_options(options))
        assert_that(outputs.manifest | beam.Map(lambda m: m["reconciled"]), equal_to([True]), label="reconciled")

    images = pd.read_parquet(tmp_path / "run" / "images")
    products = pd.read_parquet(tmp_path / "run" / "products")
    assert len(images) == 72 and len(products) == 36
    heads = {h["task"]: h for h in card["heads"]}
    assert set(images["predicted_category"]) <= set(heads["category"]["classes"])
    assert (products["colour_model"] == card["model_id"]).all()
    assert (products["gender_model"] == card["model_id"]).all()
    judged = products[products["category_agreement"].isin(["AGREE", "DISAGREE", "WEAK_DISAGREE", "CONFUSABLE"])]
    assert len(judged) and judged["category_error_probability"].between(0, 1).all()  # with its label quality

    data = load_prepared(data_dir)
    model = keras.models.load_model(os.path.join(out, "model.keras"), compile=False)
    raw = model.predict(data.images, verbose=0)
    by_hash = {h: i for i, h in enumerate(data.sha256)}
    rows = [by_hash[h] for h in images["image_sha256"]]
    for task, column in (("category", "category_scores"), ("gender", "gender_scores"), ("colour", "colour_scores")):
        expected = apply_to_outputs(np.asarray(raw[task])[rows], heads[task]["calibration"]["temperature"],
                                    sigmoid=False)
        np.testing.assert_allclose(np.stack(images[column].to_numpy()), expected, atol=2e-3, err_msg=task)
    person = apply_to_outputs(np.asarray(raw["person"])[rows], heads["person"]["calibration"]["temperature"],
                              sigmoid=False)[:, 1]
    np.testing.assert_allclose(images["person_score"].to_numpy(), person, atol=2e-3)
