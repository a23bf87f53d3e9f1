"""Serving a multi-task export (issue 17): one ModelInfo per head, one artifact load and one
forward pass per batch for every head, mixing with single-task exports, the model profiles,
and a whole run whose products carry the age group and colour from the model (Parquet read back).

The exports are tiny real Keras models with random weights, written in the layout of
``models.export.export_multitask``: ``model.keras`` (``{task: softmax}`` out, each head's Dense
layer named after its task), ``labels.json`` ``{task: classes}`` and a card with
``task: multitask`` and one ``heads`` entry per output.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from apache_beam.testing.test_pipeline import TestPipeline  # noqa: E402
from apache_beam.testing.util import assert_that, equal_to  # noqa: E402

from models.architectures import ModelSpec, build_model  # noqa: E402
from models.export import export_model  # noqa: E402
from pipeline.images.features import COLOUR_NAMES  # noqa: E402
from pipeline.inference import ScoreImages, apply_scores  # noqa: E402
from pipeline.keras_handler import InferenceConfig, KerasModelHandler  # noqa: E402
from pipeline.model_choice import choose_models  # noqa: E402
from pipeline.model_info import ModelInfo  # noqa: E402
from pipeline.records import ImageRecord  # noqa: E402

SIZE = 32
HEADS = {
    "category": ("T_SHIRTS", "SHIRTS", "TOPS", "SHOES", "DRESSES", "TROUSERS", "SKIRTS"),
    "gender": ("FEMALE", "MALE", "UNISEX"),
    "person": ("PRODUCT", "PERSON"),
    "age_group": ("ADULT", "KIDS"),
    "colour": tuple(COLOUR_NAMES),
}
TEMPERATURES = {"category": 1.3, "gender": 0.8, "person": 1.0, "age_group": 2.0, "colour": 1.1}


def export_multitask_tiny(folder, heads: dict[str, tuple[str, ...]] = HEADS, size: int = SIZE,
                          model_id: str = "multitask-custom_cnn-clean-test") -> str:
    """A multi-task export folder with random weights, in export_multitask's layout."""
    from models.multitask import Head, build_multitask_model

    folder.mkdir(parents=True, exist_ok=True)
    model = build_multitask_model(ModelSpec("custom_cnn", image_size=size, width=4),
                                  tuple(Head(task, classes) for task, classes in heads.items()))
    model.save(folder / "model.keras")
    (folder / "labels.json").write_text(json.dumps({t: list(c) for t, c in heads.items()}))
    card = {"model_id": model_id, "task": "multitask", "tasks": list(heads), "architecture": "custom_cnn",
            "mode": "clean", "image_size": size, "output": "a dict of softmax scores, one entry per head",
            "heads": [{"task": t, "classes": list(c), "output": "softmax",
                       "calibration": {"method": "temperature", "temperature": TEMPERATURES.get(t, 1.0)}}
                      for t, c in heads.items()]}
    (folder / "model_card.json").write_text(json.dumps(card))
    return str(folder)


def export_single_tiny(folder, task: str, classes: list[str], size: int = SIZE) -> str:
    spec = ModelSpec("custom_cnn", image_size=size, num_outputs=len(classes), width=4)
    export_model(build_model(spec), out=str(folder), spec=spec, task=task, classes=classes, data_dir=str(folder),
                 train_config={}, metrics={}, wall_seconds=0.0)
    return str(folder)


@pytest.fixture(scope="module")
def multitask(tmp_path_factory) -> str:
    return export_multitask_tiny(tmp_path_factory.mktemp("mt") / "export")


@pytest.fixture(scope="module")
def single_category(tmp_path_factory) -> str:
    return export_single_tiny(tmp_path_factory.mktemp("cat") / "export", "category", ["DRESSES", "JEANS", "HATS"])


def record(n: int) -> ImageRecord:
    return ImageRecord(retailer="shop", product_id=f"p{n}", image_position=1, image_uri=f"/{n}.jpg",
                       source_file="f", source_line=n)


def array(n: int, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def test_a_multitask_card_gives_one_model_info_per_head(multitask):
    infos = ModelInfo.read_all(multitask)
    assert [i.task for i in infos] == list(HEADS) and [i.head for i in infos] == list(HEADS)
    assert {i.path for i in infos} == {multitask} and {i.model_id for i in infos} == {"multitask-custom_cnn-clean-test"}
    assert {i.task: i.temperature for i in infos} == TEMPERATURES
    assert all(not i.sigmoid and i.image_size == SIZE for i in infos)
    assert ModelInfo.read(multitask, head="colour").classes == tuple(COLOUR_NAMES)
    with pytest.raises(ValueError, match="no head 'pattern'"):
        ModelInfo.read(multitask, head="pattern")


def test_one_artifact_load_and_one_forward_pass_give_every_head(multitask, monkeypatch):
    import keras

    from models.export import load_exported
    from pipeline.temperature import apply_to_outputs

    real_load = keras.models.load_model
    loads, calls = [], []

    def counting_load(path, **kwargs):
        loads.append(path)
        model = real_load(path, **kwargs)

        def counted(batch, training=False):  # traced once: one call per compiled forward pass
            calls.append(batch.shape)
            return model(batch, training=training)
        return counted

    monkeypatch.setattr(keras.models, "load_model", counting_load)
    infos = ModelInfo.read_all(multitask)
    handler = KerasModelHandler(infos, InferenceConfig(max_batch_size=8))
    scorer = handler.load_model()
    batch = [array(i) for i in range(4)]
    results = handler.run_inference(batch, scorer)
    handler.run_inference(batch[:2], scorer)
    assert len(loads) == 1 and len(scorer.models) == 1 and len(calls) == 1
    monkeypatch.setattr(keras.models, "load_model", real_load)
    reference, _ = load_exported(multitask)
    expected = reference.predict(np.stack(batch), verbose=0)
    for position, info in enumerate(infos):
        want = apply_to_outputs(expected[info.task], info.temperature, sigmoid=False)
        got = np.stack([r.inference[position] for r in results])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        assert got.shape == (4, len(HEADS[info.task]))
    assert {r.model_id for r in results} == {"multitask-custom_cnn-clean-test"}


def test_apply_scores_for_age_group_colour_and_the_person_head(multitask):
    infos = {i.task: i for i in ModelInfo.read_all(multitask)}
    rec = apply_scores(record(1), infos["age_group"], np.array([0.3, 0.7]))
    assert (rec.predicted_age_group, rec.age_group_scores) == ("KIDS", (0.3, 0.7))
    assert rec.age_group_model == "multitask-custom_cnn-clean-test"
    colours = np.full(len(COLOUR_NAMES), 0.01)
    colours[COLOUR_NAMES.index("navy")] = 0.86
    rec = apply_scores(rec, infos["colour"], colours)
    assert rec.predicted_colour == "navy" and len(rec.colour_scores) == len(COLOUR_NAMES)
    assert rec.colour_model == "multitask-custom_cnn-clean-test"
    assert apply_scores(rec, infos["person"], np.array([0.2, 0.8])).person_score == pytest.approx(0.8)


@pytest.mark.parametrize("steps", ["combined", "per-model"])
def test_a_multitask_export_mixed_with_a_single_task_export_on_a_pipeline(multitask, single_category, steps):
    """The single-task category export replaces the multi-task category head; every other head
    comes from the multi-task export (one step for it alone with per-model steps)."""
    infos = choose_models(profile=None, multitask=multitask, single={"category": single_category})
    assert [(i.task, i.path) for i in infos] == [
        ("person", multitask), ("category", single_category), ("gender", multitask), ("age_group", multitask),
        ("colour", multitask)]
    with TestPipeline() as p:
        scored = p | beam.Create([(record(i), array(i)) for i in range(5)]) | ScoreImages(
            infos, InferenceConfig(max_batch_size=4, steps=steps))
        rows = scored["images"] | beam.Map(lambda e: (
            e[0].product_id, len(e[0].category_scores), e[0].predicted_category in ("DRESSES", "JEANS", "HATS"),
            e[0].category_model.startswith("category-"), len(e[0].gender_scores), e[0].predicted_age_group in HEADS[
                "age_group"], len(e[0].colour_scores), e[0].colour_model, 0 <= e[0].person_score <= 1))
        assert_that(rows, equal_to([(f"p{i}", 3, True, True, 3, True, 15, "multitask-custom_cnn-clean-test", True)
                                    for i in range(5)]), label="scored")
        assert_that(scored["dead_letter"], equal_to([]), label="no dead letters")


def test_head_classes_that_do_not_match_the_dense_units_are_refused(tmp_path):
    folder = tmp_path / "mt"
    export_multitask_tiny(folder, {"gender": HEADS["gender"], "age_group": HEADS["age_group"]})
    card = json.loads((folder / "model_card.json").read_text())
    card["heads"][1]["classes"] = ["ADULT", "KIDS", "BABY"]
    (folder / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"head 'age_group'\): the model has 2 outputs but its card lists 3"):
        ModelInfo.read_all(str(folder))
    card["heads"][1] = {"task": "pattern", "classes": ["PLAIN", "STRIPED"], "output": "softmax"}
    (folder / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="head 'pattern' is not an output layer"):
        ModelInfo.read_all(str(folder))


def test_model_choice_profiles_and_overrides(multitask, single_category, tmp_path):
    shipped = choose_models()  # the default profile: the shipped multi-task export, one head per task
    assert [(i.task, i.path, i.head) for i in shipped] == [
        (t, f"default:{t}", t) for t in ("person", "category", "gender", "age_group", "colour")]
    assert choose_models(profile="multitask") == shipped  # the default profile named: the same names
    compact = choose_models(profile="compact")
    assert [(i.task, i.path, i.head) for i in compact] == [
        ("person", "default:compact/person", None), ("category", "default:compact/category", None),
        ("gender", "default:compact/gender", None)]
    mixed = choose_models(multitask=multitask, single={"gender": "none", "category": "default"})
    assert [(i.task, i.head) for i in mixed] == [
        ("person", "person"), ("category", "category"), ("age_group", "age_group"), ("colour", "colour")]
    assert [i.path for i in mixed] == [multitask] * 4  # "default": what the profile and --multitask-model give
    head = choose_models(profile="compact", single={"age_group": multitask, "person": "none"})
    assert [(i.task, i.path, i.head) for i in head] == [
        ("category", "default:compact/category", None), ("gender", "default:compact/gender", None),
        ("age_group", multitask, "age_group")]
    with pytest.raises(ValueError, match="is a category model"):
        choose_models(single={"gender": single_category})
    with pytest.raises(ValueError, match="single-task category export: use --category-model"):
        choose_models(multitask=single_category)
    partial = export_multitask_tiny(tmp_path / "partial", {"gender": HEADS["gender"]})
    with pytest.raises(ValueError, match="--colour-model .*without a colour head"):
        choose_models(single={"colour": partial})


def test_a_multitask_default_profile_serves_every_head_from_one_shipped_export(multitask, monkeypatch):
    """When the multi-task profile is the default, ``default:<task>`` names each head of the one
    shipped export, which loads once; when it is not, ``default:multitask/<task>``."""
    import pipeline.model_profiles as defaults

    monkeypatch.setitem(defaults.PROFILES, "multitask", (multitask,))  # an absolute folder stands in
    monkeypatch.setattr(defaults, "DEFAULT_PROFILE", "compact")
    assert defaults.profile_models("multitask") == {t: defaults.Path(multitask) for t in HEADS}
    explicit = choose_models(profile="multitask")
    assert [i.path for i in explicit] == [f"default:multitask/{t}" for t in
                                          ("person", "category", "gender", "age_group", "colour")]
    monkeypatch.setattr(defaults, "DEFAULT_PROFILE", "multitask")
    infos = choose_models()
    assert [(i.task, i.path, i.head) for i in infos] == [
        (t, f"default:{t}", t) for t in ("person", "category", "gender", "age_group", "colour")]
    assert ModelInfo.read("default:gender", head="gender") == infos[2]  # RunConfig.from_json re-reads so
    handler = KerasModelHandler(infos)
    assert len(handler._artifacts) == 1
    results = handler.run_inference([array(1)], handler.load_model())
    assert [len(s) for s in results[0].inference] == [2, 7, 3, 2, 15]


@pytest.fixture(scope="module")
def mixed_run(multitask, single_category, tmp_path_factory):
    """The shipped samples through the whole pipeline: a multi-task export for person, gender, age
    group and colour, and a single-task category export."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.build import build_pipeline
    from pipeline.options import RunConfig

    out = tmp_path_factory.mktemp("out")
    options = PipelineOptions(["--output", str(out), "--run_date", "2026-01-02", "--multitask-model", multitask,
                               "--category-model", single_category])
    config = RunConfig.from_options(options)
    assert RunConfig.from_json(config.to_json()) == config
    with TestPipeline(options=options) as p:
        outputs = build_pipeline(p, config)
        assert_that(outputs.manifest | beam.Map(lambda m: m["reconciled"]), equal_to([True]), label="reconciled")
    return out


def test_products_carry_age_group_and_colour_from_the_model(mixed_run):
    import pandas as pd
    import pyarrow.parquet as pq

    images = pd.read_parquet(mixed_run / "images")
    products = pd.read_parquet(mixed_run / "products")
    assert len(products) > 20 and images["predicted_age_group"].isin(HEADS["age_group"]).all()
    assert (images["colour_model"] == "multitask-custom_cnn-clean-test").all()
    assert (products["age_group_model"] == "multitask-custom_cnn-clean-test").all()
    assert (products["colour_model"] == "multitask-custom_cnn-clean-test").all()
    assert products["category_model"].str.startswith("category-custom_cnn").all()
    for (retailer, product_id), group in images.groupby(["retailer", "product_id"], observed=True):
        row = products[(products.retailer == retailer) & (products.product_id == product_id)].iloc[0]
        ages = np.max(np.stack(group["age_group_scores"].to_numpy()), axis=0)  # cumulative max, every image
        assert row.age_group == HEADS["age_group"][int(np.argmax(ages))]
        assert row.age_group_score == pytest.approx(ages.max())
        retailer_age = group["age_group"].dropna().mode()
        assert row.retailer_age_group == (retailer_age.iloc[0] if len(retailer_age) else None)
        if row.retailer_age_group is None:
            assert row.age_group_agreement == "RETAILER_MISSING"
        else:  # DISAGREE or WEAK_DISAGREE by the class thresholds (none in this export: 0.5)
            assert (row.age_group_agreement == "AGREE") == (row.retailer_age_group == row.age_group)
        flagged = row.age_group_agreement == "DISAGREE" and row.age_group_error_probability >= 0.5
        assert flagged == ("AGE_GROUP_DISAGREE" in row.review_reasons)
        packshots = group[group["person_score"] < 0.5]
        scored = packshots if len(packshots) else group  # non-person images when there are any
        colours = np.max(np.stack(scored["colour_scores"].to_numpy()), axis=0)
        assert row.colour == COLOUR_NAMES[int(np.argmax(colours))]
        assert row.colour_score == pytest.approx(colours.max())
    from pipeline.records import REVIEW_COLUMNS

    age_columns = {"age_group", "age_group_score", "retailer_age_group", "age_group_agreement"}
    assert age_columns <= set(REVIEW_COLUMNS)
    if products["review_reasons"].map(len).any():  # a random test model may flag nothing: no review partition
        assert age_columns <= set(pd.read_parquet(mixed_run / "review").columns)
    metadata = pq.read_schema(next((mixed_run / "products").rglob("*.parquet"))).metadata
    assert metadata[b"fashion_enrich.colour_source"] == b"model"
    assert metadata[b"fashion_enrich.schema_version"] == b"4"
    assert json.loads(metadata[b"fashion_enrich.age_group_classes"]) == list(HEADS["age_group"])
    manifest = json.loads((mixed_run / "manifest.json").read_text())
    assert manifest["colour_source"] == "model"
    assert manifest["models"]["age_group"]["head"] == "age_group" and manifest["models"]["category"]["head"] is None
    assert sum(sum(v.values()) for v in manifest["counts"]["age_group_agreement"].values()) == len(products)


def test_dataflow_names_a_local_multitask_export_once(multitask, single_category, samples):
    """Workers cannot read the launcher's disk: a local multi-task export is refused once, under
    its own flag, beside a local single-task one; shipped profile models are inside the image."""
    from pipeline.options import ConfigError
    from runners.dataflow import build, check_remote_paths
    from tests.test_runners import dataflow_args, settings

    local = ["--zalando", str(samples / "zalando.jsonl"), "--output", "/tmp/local-out"]
    _, config = build(dataflow_args(settings()) + local + ["--multitask-model", multitask,
                                                          "--category-model", single_category])
    with pytest.raises(ConfigError) as refused:
        check_remote_paths(config)
    message = str(refused.value)
    assert message.count(multitask) == 1 and f"--multitask-model {multitask}" in message
    assert f"--category-model {single_category}" in message
    _, shipped = build(dataflow_args(settings()) + local)
    with pytest.raises(ConfigError) as refused:
        check_remote_paths(shipped)
    assert "model" not in str(refused.value)  # only the input and output


def test_the_run_summary_names_each_export_once(mixed_run):
    from pipeline.summary import format_summary

    manifest = json.loads((mixed_run / "manifest.json").read_text())
    line = next(x for x in format_summary(manifest, 2.0).splitlines() if x.startswith("models: "))
    assert line.count("multitask-custom_cnn-clean-test") == 1
    exports = dict(part.split(" ")[::-1] for part in line.removeprefix("models: ").split(", "))
    assert sorted(exports["multitask-custom_cnn-clean-test"].split("+")) == ["age_group", "colour", "gender", "person"]
    assert [tasks for model, tasks in exports.items() if model.startswith("category-custom_cnn")] == ["category"]
