"""The project's own layers inside exported models: what loading a ``.keras`` export needs.

Every export takes the pipeline's ``uint8`` arrays as they are, so an architecture's input
convention is a layer of the model itself (:mod:`models.architectures` builds them in).
Importing this module registers the layers with Keras under the ``fashion_enrich`` package
name that the saved files carry; the pipeline's handler imports it before loading a model.
"""

from __future__ import annotations

import keras
from keras import layers

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="fashion_enrich")
class CaffePreprocess(layers.Layer):
    """VGG's input convention: RGB -> BGR, ImageNet channel means subtracted, no scaling."""

    def call(self, inputs):
        x = keras.ops.cast(inputs, "float32")[..., ::-1]
        return x - keras.ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype="float32")


@keras.saving.register_keras_serializable(package="fashion_enrich")
class HorizontalFlip(layers.Layer):
    """Mirrors images left to right, always (unlike ``RandomFlip``): test-time augmentation."""

    def call(self, inputs):
        return keras.ops.flip(inputs, axis=-2)
