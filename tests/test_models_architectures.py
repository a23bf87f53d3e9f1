"""Model architectures: shapes, modes, the offline pretrained-weights path, save / reload."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from models.architectures import ModelSpec, build_model, compile_model  # noqa: E402


def images(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("spec, outputs", [
    (ModelSpec("custom_cnn", image_size=32, num_outputs=5, width=4), 5),
    (ModelSpec("vgg_person", image_size=32, num_outputs=1, multilabel=True), 1),
])
def test_compact_models_score_uint8_batches(spec, outputs):
    model = build_model(spec)
    scores = model.predict(images(3, 32), verbose=0)
    assert scores.shape == (3, outputs)
    if spec.multilabel:
        assert ((scores >= 0) & (scores <= 1)).all()
    else:
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)


def test_vgg_like_person_detector_matches_the_study():
    model = build_model(ModelSpec("vgg_person", image_size=64, num_outputs=1, multilabel=True))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 64, 64] and all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 3
    assert model.get_layer("fc").units == 256 and model.get_layer("dropout").rate == 0.5
    assert model.get_layer("scores").activation.__name__ == "sigmoid"


@pytest.mark.parametrize("kwargs, message", [
    (dict(arch="resnet"), "arch"),
    (dict(arch="custom_cnn", mode="top", weights="imagenet"), "no pretrained"),
    (dict(arch="vgg16", mode="finetune"), "needs weights"),
    (dict(arch="inception_v3", image_size=64), "at least 75"),
])
def test_invalid_specs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelSpec(**kwargs)


def _lite0(include_top, weights, input_shape):
    from models.efficientnet_lite import build_base

    assert not include_top and weights is None
    return build_base(input_shape)


BASES = {"vgg16": (keras.applications.VGG16, 32), "vgg19": (keras.applications.VGG19, 32),
         "inception_v3": (keras.applications.InceptionV3, 75), "efficientnet_lite0": (_lite0, 32)}


@pytest.fixture(scope="module", params=sorted(BASES))
def local_weights(request, tmp_path_factory) -> tuple[str, int, str]:
    """(arch, size, a local weights file saved from a randomly initialised base): stands in for
    ImageNet's, which this machine cannot download."""
    constructor, size = BASES[request.param]
    path = str(tmp_path_factory.mktemp("weights") / f"{request.param}_notop.weights.h5")
    constructor(include_top=False, weights=None, input_shape=(size, size, 3)).save_weights(path)
    return request.param, size, path


def _base(model: keras.Model) -> keras.Model:
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def test_top_mode_loads_local_weights_and_freezes_the_base(local_weights):
    arch, size, path = local_weights
    constructor, _ = BASES[arch]
    reference = constructor(include_top=False, weights=None, input_shape=(size, size, 3))
    reference.load_weights(path)
    model = build_model(ModelSpec(arch, mode="top", weights=path, image_size=size, num_outputs=3))
    base = _base(model)
    assert not base.trainable
    for mine, theirs in zip(base.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    trainable = {w.path for w in model.trainable_weights}
    assert trainable and all(p.startswith("scores") for p in trainable)  # only the new head learns


def test_top_mode_training_leaves_the_base_alone_and_exports(local_weights, tmp_path):
    """A training step changes the head only (BatchNorm statistics of InceptionV3 and Lite0
    included), and the serving copy (no optimizer) reloads with identical predictions."""
    from models.export import serving_copy

    arch, size, path = local_weights
    spec = ModelSpec(arch, mode="top", weights=path, image_size=size, num_outputs=3)
    model = compile_model(build_model(spec), spec)
    before = [w.copy() for w in _base(model).get_weights()]
    head = model.get_layer("scores").get_weights()[0].copy()
    model.fit(images(6, size), np.arange(6) % 3, epochs=1, batch_size=6, verbose=0)
    for mine, then in zip(_base(model).get_weights(), before):
        np.testing.assert_array_equal(mine, then)
    assert not np.array_equal(model.get_layer("scores").get_weights()[0], head)
    serving_copy(model).save(tmp_path / "model.keras")
    again = keras.models.load_model(tmp_path / "model.keras")
    batch = images(3, size)
    np.testing.assert_allclose(again.predict(batch, verbose=0), model.predict(batch, verbose=0), rtol=1e-5, atol=1e-6)


def test_finetune_mode_trains_everything_with_a_lower_learning_rate(local_weights):
    arch, size, path = local_weights
    spec = ModelSpec(arch, mode="finetune", weights=path, image_size=size, num_outputs=3)
    model = compile_model(build_model(spec), spec)
    assert _base(model).trainable
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-4)
    clean = ModelSpec(arch, image_size=size, num_outputs=3)
    assert float(compile_model(build_model(clean), clean).optimizer.learning_rate) == pytest.approx(1e-3)


def test_saved_model_reloads_with_identical_predictions(tmp_path):
    spec = ModelSpec("vgg16", image_size=32, num_outputs=4)  # CaffePreprocess must round-trip
    model = compile_model(build_model(spec), spec)
    model.fit(images(8, 32), np.arange(8) % 4, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    again = keras.models.load_model(path)
    batch = images(5, 32)
    np.testing.assert_allclose(again.predict(batch, verbose=0), model.predict(batch, verbose=0), rtol=1e-5, atol=1e-6)


def test_inception_v3_clean_builds_at_its_minimum_size():
    model = build_model(ModelSpec("inception_v3", image_size=75, num_outputs=2))
    assert model.predict(images(1, 75), verbose=0).shape == (1, 2)
