"""The multi-task network: the masked loss on hand-made batches, every head from one forward
pass, and a head without labels left untouched by training."""

from __future__ import annotations

import numpy as np
import pytest

from models.architectures import ModelSpec
from models.multitask import (
    MISSING,
    Head,
    MaskedAccuracy,
    build_multitask_model,
    compile_multitask,
    masked_crossentropy,
)

HEADS = (Head("category", ("DRESSES", "JEANS", "SHOES")), Head("gender", ("FEMALE", "MALE", "UNISEX")),
         Head("person", ("PRODUCT", "PERSON")), Head("age_group", ("ADULT", "KIDS")),
         Head("colour", ("black", "white", "red", "blue"), weight=0.5))


def test_masked_loss_is_the_mean_over_labelled_rows_only():
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.25, 0.25]], "float32")
    labels = np.array([0, MISSING, 2, MISSING])
    expected = -(np.log(0.7) + np.log(0.4)) / 2  # rows 0 and 2; the others count for nothing
    assert float(masked_crossentropy(labels, scores)) == pytest.approx(expected, rel=1e-5)
    # A missing row's scores may be anything: the loss does not move.
    changed = scores.copy()
    changed[1] = [0.98, 0.01, 0.01]
    assert float(masked_crossentropy(labels, changed)) == pytest.approx(expected, rel=1e-5)
    # No labelled row: zero, not a division by zero; every row labelled: the plain mean.
    assert float(masked_crossentropy(np.full(4, MISSING), scores)) == 0.0
    full = np.array([0, 1, 2, 0])
    assert float(masked_crossentropy(full, scores)) == pytest.approx(
        -np.mean(np.log([0.7, 0.8, 0.4, 0.5])), rel=1e-5)


def test_missing_rows_get_no_gradient():
    import tensorflow as tf

    scores = tf.Variable([[0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    with tf.GradientTape() as tape:
        loss = masked_crossentropy(np.array([1, MISSING, 0]), scores)
    grad = tape.gradient(loss, scores).numpy()
    assert np.all(grad[1] == 0) and np.any(grad[0] != 0) and np.any(grad[2] != 0)


def test_masked_accuracy_counts_labelled_rows():
    metric = MaskedAccuracy()
    metric.update_state(np.array([0, MISSING, 1]), np.array([[0.9, 0.1], [0.9, 0.1], [0.8, 0.2]]))
    metric.update_state(np.array([MISSING]), np.array([[0.1, 0.9]]))
    assert float(metric.result()) == pytest.approx(0.5)


def test_one_forward_pass_gives_every_head():
    model = build_multitask_model(ModelSpec("custom_cnn", image_size=32, width=4), HEADS)
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    out = model.predict(images, verbose=0)
    assert set(out) == {h.task for h in HEADS}
    for head in HEADS:
        assert out[head.task].shape == (5, len(head.classes))
        np.testing.assert_allclose(out[head.task].sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="each task once"):
        build_multitask_model(ModelSpec("custom_cnn", image_size=32, width=4), HEADS[:1] * 2)


def test_joint_training_learns_labelled_heads_and_leaves_an_unlabelled_head_alone():
    """Category labels on half the images, colour on none: the category head learns a pattern
    in the pixels, the colour head's weights do not move (no label, no gradient)."""
    rng = np.random.default_rng(1)
    n = 64
    kind = rng.integers(0, 2, n)  # dark or light images
    images = np.where(kind[:, None, None, None] == 1, 220, 30).astype(np.uint8) + rng.integers(
        0, 20, (n, 32, 32, 3)).astype(np.uint8)
    labels = {h.task: np.full(n, MISSING) for h in HEADS}
    labels["category"] = np.where(np.arange(n) % 2 == 0, kind, MISSING)  # half labelled
    labels["gender"] = kind  # every image labelled
    spec = ModelSpec("custom_cnn", image_size=32, width=4, dropout=0.0)
    model = compile_multitask(build_multitask_model(spec, HEADS), spec, HEADS, learning_rate=1e-2)
    colour_before = [w.copy() for w in model.get_layer("colour").get_weights()]
    history = model.fit(images, labels, epochs=12, batch_size=16, verbose=0, shuffle=True)
    for before, after in zip(colour_before, model.get_layer("colour").get_weights()):
        np.testing.assert_array_equal(before, after)
    assert history.history["category_loss"][-1] < history.history["category_loss"][0]
    scores = model.predict(images, verbose=0)
    assert (scores["gender"].argmax(axis=1) == kind).mean() >= 0.9
