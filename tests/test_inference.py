"""RunInference with the Keras model handler: tiny real exported models, scores, failures."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from apache_beam.testing.test_pipeline import TestPipeline  # noqa: E402
from apache_beam.testing.util import assert_that, equal_to  # noqa: E402

from models.architectures import ModelSpec, build_model  # noqa: E402
from models.export import export_model, load_exported  # noqa: E402
from pipeline.inference import ScoreImages, apply_scores  # noqa: E402
from pipeline.keras_handler import InferenceConfig, KerasModelHandler  # noqa: E402
from pipeline.model_info import ModelInfo  # noqa: E402
from pipeline.records import ImageRecord  # noqa: E402

SIZE = 32


def export_tiny(folder, task: str, classes: list[str], size: int = SIZE) -> ModelInfo:
    person = task == "person"
    spec = ModelSpec("custom_cnn", image_size=size, num_outputs=1 if person else len(classes), multilabel=person,
                     width=4)
    export_model(build_model(spec), out=str(folder), spec=spec, task=task, classes=classes, data_dir=str(folder),
                 train_config={}, metrics={}, wall_seconds=0.0)
    return ModelInfo.read(str(folder))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return (export_tiny(root / "person", "person", ["PRODUCT", "PERSON"]),
            export_tiny(root / "category", "category", ["DRESSES", "JEANS", "HATS", "SHOES"]),
            export_tiny(root / "gender", "gender", ["FEMALE", "MALE", "UNISEX"]))


def record(n: int) -> ImageRecord:
    return ImageRecord(retailer="shop", product_id=f"p{n}", image_position=1, image_uri=f"/{n}.jpg",
                       source_file="f", source_line=n)


def arrays(n: int, size: int = SIZE):
    return np.random.default_rng(n).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def test_model_info_from_the_card(models):
    person, category, gender = models
    assert person.sigmoid and not category.sigmoid
    assert category.classes == ("DRESSES", "JEANS", "HATS", "SHOES") and category.image_size == SIZE
    assert category.model_id.startswith("category-custom_cnn-clean-")


def test_handler_scores_a_batch_like_the_model_does(models):
    _, category, _ = models
    handler = KerasModelHandler(category, InferenceConfig(max_batch_size=8))
    assert handler.batch_elements_kwargs() == {"min_batch_size": 1, "max_batch_size": 8}
    model = handler.load_model()
    batch = [arrays(i) for i in range(3)]
    results = handler.run_inference(batch, model)
    reference, _ = load_exported(category.path)
    expected = reference.predict(np.stack(batch), verbose=0)
    np.testing.assert_allclose(np.stack([r.inference[0] for r in results]), expected, rtol=1e-5, atol=1e-6)
    assert all(r.model_id == category.model_id for r in results)


def test_apply_scores_top3_and_vectors(models):
    person, category, gender = models
    rec = apply_scores(record(1), category, np.array([0.1, 0.5, 0.3, 0.1]))
    assert rec.predicted_category == "JEANS" and rec.category_top3 == ("JEANS", "HATS", "DRESSES")
    assert rec.category_top3_scores == (0.5, 0.3, 0.1) and rec.category_scores == (0.1, 0.5, 0.3, 0.1)
    assert apply_scores(rec, person, np.array([0.83])).person_score == pytest.approx(0.83)
    assert apply_scores(rec, gender, np.array([0.2, 0.7, 0.1])).predicted_gender == "MALE"


@pytest.mark.parametrize("steps", ["combined", "per-model"])
def test_score_images_on_a_pipeline_and_failures_to_dead_letter(models, steps):
    good = [(record(i), arrays(i)) for i in range(5)]
    bad = [(record(99), arrays(99, size=SIZE + 8))]  # wrong input size: the model raises
    with TestPipeline() as p:
        # One batch holds good and bad elements: only the bad one may end in the dead-letter table.
        out = p | beam.Create(good + bad) | ScoreImages(
            models, InferenceConfig(min_batch_size=6, max_batch_size=6, steps=steps))
        assert_that(out["images"] | "Scored" >> beam.Map(
            lambda e: (e[0].product_id, len(e[0].category_scores), len(e[0].gender_scores),
                       0 <= e[0].person_score <= 1, e[0].predicted_category in ("DRESSES", "JEANS", "HATS", "SHOES"),
                       e[1].shape)),
            equal_to([(f"p{i}", 4, 3, True, True, (SIZE, SIZE, 3)) for i in range(5)]), label="scored")
        assert_that(out["dead_letter"] | "Dead" >> beam.Map(lambda d: (d.product_id, d.stage, d.reason)),
                    equal_to([("p99", "inference", "INFERENCE_ERROR")]), label="dead")
        # One readable line naming the models and the error, not a repr of Beam's error tuple.
        assert_that(out["dead_letter"] | "Message" >> beam.Map(
            lambda d: (d.message.startswith("person model "), "Traceback" in d.message, "<class" in d.message)),
            equal_to([(True, False, False)]), label="message")


def test_combined_and_per_model_steps_give_the_same_scores(models):
    from apache_beam.ml.inference.base import PredictionResult

    batch = [arrays(i) for i in range(4)]
    combined = KerasModelHandler(models)
    together = combined.run_inference(batch, combined.load_model())
    for position, info in enumerate(models):
        alone = KerasModelHandler(info)
        separate = alone.run_inference(batch, alone.load_model())
        for a, b in zip(together, separate):
            assert isinstance(a, PredictionResult)
            np.testing.assert_allclose(a.inference[position], b.inference[0], rtol=1e-5, atol=1e-6)
    assert together[0].model_id == ",".join(m.model_id for m in models)


def test_large_model_scores_in_one_shared_process_like_a_local_model(models):
    """``--large-model``: Beam's shared model (one per machine, served by the first process that
    loads it, called by the others through a proxy) gives the local handler's scores."""
    assert KerasModelHandler(models, InferenceConfig(large_model=True)).share_model_across_processes()
    handler = KerasModelHandler(models)
    expected = {f"p{i}": tuple(v.tolist() for v in r.inference)
                for i, r in enumerate(handler.run_inference([arrays(i) for i in range(6)], handler.load_model()))}
    with TestPipeline() as p:
        out = p | beam.Create([(record(i), arrays(i)) for i in range(6)]) | ScoreImages(
            models, InferenceConfig(max_batch_size=4, large_model=True))
        assert_that(out["images"] | beam.Map(
            lambda e: (e[0].product_id, e[0].person_score, e[0].category_scores, e[0].gender_scores)),
            equal_to([(k, pytest.approx(v[0][-1], abs=1e-5), pytest.approx(tuple(v[1]), abs=1e-5),
                       pytest.approx(tuple(v[2]), abs=1e-5)) for k, v in expected.items()]))


def test_a_smaller_model_scores_a_downscaled_copy(models, tmp_path):
    """Arrays are decoded at the largest model input; a 32 px model beside a 64 px one scores the
    2x2 box average of each array, exactly as if it were served alone on such arrays."""
    from pipeline.tf_engine import downscale

    big = export_tiny(tmp_path / "big", "category", ["DRESSES", "JEANS", "HATS", "SHOES"], size=2 * SIZE)
    small = models[2]  # gender, SIZE px
    batch = [arrays(i, 2 * SIZE) for i in range(3)]
    boxed = [a.reshape(SIZE, 2, SIZE, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8) for a in batch]
    np.testing.assert_array_equal(np.asarray(downscale(np.stack(batch), SIZE)), np.stack(boxed))
    mixed = KerasModelHandler((big, small))
    together = mixed.run_inference(batch, mixed.load_model())
    alone = KerasModelHandler(small)
    separate = alone.run_inference(boxed, alone.load_model())
    for a, b in zip(together, separate):
        np.testing.assert_allclose(a.inference[1], b.inference[0], rtol=1e-5, atol=1e-6)
    with TestPipeline() as p:
        scored = p | beam.Create([(record(i), batch[i]) for i in range(3)]) | ScoreImages((big, small))
        out = (scored["images"]
               | beam.Map(lambda pair: (pair[0].product_id, len(pair[0].gender_scores),
                                        len(pair[0].category_scores))))
        assert_that(out, equal_to([(f"p{i}", 3, 4) for i in range(3)]))


def test_a_model_larger_than_the_arrays_is_refused(models, tmp_path):
    with pytest.raises(ValueError, match="decode at the largest model input size"):
        ScoreImages((models[0],), image_size=SIZE // 2)


def test_a_card_that_does_not_match_the_model_is_refused(tmp_path):
    import json

    info = export_tiny(tmp_path / "m", "category", ["A", "B", "C"])
    card_path = tmp_path / "m" / "model_card.json"
    card = json.loads(card_path.read_text())
    card["classes"] = ["A", "B", "C", "D"]
    card_path.write_text(json.dumps(card))
    with pytest.raises(ValueError, match="3 outputs but its card lists 4"):
        ModelInfo.read(info.path)


def test_classes_are_checked_against_the_transform_output_vocabulary(tmp_path):
    """Serving uses the TFT transform output written at training: the shipped category model's
    card lists its vocabulary in the same order; a card whose class order drifted is refused."""
    import json
    import shutil

    from pipeline.model_info import transform_vocabulary
    from pipeline.model_profiles import shipped_model_dir

    shipped = str(shipped_model_dir("compact/category"))
    info = ModelInfo.read("default:compact/category")
    assert transform_vocabulary(shipped, "category") == list(info.classes)
    assert transform_vocabulary(shipped, "person") is None  # no vocabulary: fixed PRODUCT / PERSON
    copy = tmp_path / "category"
    shutil.copytree(shipped, copy)
    card = json.loads((copy / "model_card.json").read_text())
    card["classes"][0], card["classes"][1] = card["classes"][1], card["classes"][0]
    (copy / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="vocabulary of the transform output"):
        ModelInfo.read(str(copy))


def test_a_failing_element_is_isolated_within_its_batch(models):
    from pipeline.keras_handler import InferenceFailure

    _, category, _ = models
    handler = KerasModelHandler(category)
    model = handler.load_model()
    results = handler.run_inference([arrays(1), arrays(2, size=SIZE + 8), arrays(3)], model)
    assert [isinstance(r.inference, InferenceFailure) for r in results] == [False, True, False]
    assert results[0].inference[0].shape == (4,)


def test_beam_failure_tuples_become_one_line():
    from pipeline.inference import describe_failure

    beam_style = (ValueError, "ValueError('bad shape')", ["Traceback (most recent call last):\n", "  ...\n"])
    assert describe_failure(beam_style) == "ValueError: ValueError('bad shape')"
    assert describe_failure(RuntimeError("boom")) == "RuntimeError: boom"


def test_models_load_on_the_first_batch_and_never_without_one(models, monkeypatch):
    """A step that is never sent an image (an incremental shard where every image is reused)
    loads no model; the first batch loads each artifact once."""
    import keras

    from pipeline.keras_handler import forget_loaded_models

    forget_loaded_models()  # earlier tests may have loaded the same files in this process
    loads = []
    real_load = keras.models.load_model
    monkeypatch.setattr(keras.models, "load_model", lambda path, **kw: loads.append(path) or real_load(path, **kw))
    with TestPipeline() as p:
        out = p | beam.Create([], reshuffle=False).with_output_types(tuple) | ScoreImages(models)
        assert_that(out["images"], equal_to([]), label="none scored")
    assert loads == []

    handler = KerasModelHandler(models, InferenceConfig(max_batch_size=8))
    scorer = handler.load_model()
    assert not scorer.loaded and loads == []
    handler.run_inference([arrays(1), arrays(2)], scorer)
    handler.run_inference([arrays(3)], scorer)
    assert scorer.loaded and len(loads) == 3  # person, category, gender: once each


def test_a_later_pipeline_in_the_same_process_reuses_the_loaded_models_until_a_file_changes(models, tmp_path,
                                                                                             monkeypatch):
    """The in-process passes of a sharded run load the models once; a file replaced in place
    (another size or mtime) is loaded again."""
    import os
    import shutil

    import keras

    from pipeline.keras_handler import forget_loaded_models

    forget_loaded_models()
    loads = []
    real_load = keras.models.load_model
    monkeypatch.setattr(keras.models, "load_model", lambda path, **kw: loads.append(path) or real_load(path, **kw))
    copy = tmp_path / "category"
    shutil.copytree(models[1].path, copy)
    info = ModelInfo.read(str(copy))
    first = KerasModelHandler(info).load_model()
    first_scores = KerasModelHandler(info).run_inference([arrays(1)], first)[0].inference[0]
    second = KerasModelHandler(info).load_model()  # a new handler and DeferredScorer: a later pipeline
    second_scores = KerasModelHandler(info).run_inference([arrays(1)], second)[0].inference[0]
    assert len(loads) == 1 and np.allclose(first_scores, second_scores)
    stat = os.stat(copy / "model.keras")
    os.utime(copy / "model.keras", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    KerasModelHandler(info).run_inference([arrays(1)], KerasModelHandler(info).load_model())
    assert len(loads) == 2


def test_models_that_cannot_load_fail_the_run_instead_of_dead_lettering_images(models, tmp_path):
    import shutil

    broken = tmp_path / "category"
    shutil.copytree(models[1].path, broken)
    import zipfile

    with zipfile.ZipFile(models[1].path + "/model.keras") as src, \
            zipfile.ZipFile(broken / "model.keras", "w") as dst:  # the card still reads; the weights do not
        for item in src.infolist():
            dst.writestr(item, b"not HDF5" if item.filename.endswith(".h5") else src.read(item))
    info = ModelInfo.read(str(broken))
    with pytest.raises(Exception, match="could not be loaded"):
        with TestPipeline() as p:
            _ = p | beam.Create([(record(1), arrays(1))]) | ScoreImages((info,))
