"""CPU cost of the candidate shipped networks: prints img/s (not a test; nothing is asserted).

For issue 17's choices (backbone and input size): the multi-task EfficientNet-Lite0 (one
backbone, five softmax heads, every head in one forward pass) at several input sizes, against
the shipped compact set (person + category + gender models at 64 px, three forward passes).
Weights do not change the cost, so the multi-task network is built with random weights (no
checkpoint needed); the compact set is the shipped one. Two call paths on uint8 arrays, batch
64, after one warm-up batch: ``model.predict``, and "served", a ``tf.function`` over each batch
as the pipeline's model handler calls it. The best of ``--repeat`` passes over ``--images``.

    python benchmarks/bench_backbones.py [--sizes 128 160 192 224] [--images 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def _served(models, size: int):
    """The models called as the pipeline's handler calls them: one ``tf.function`` per batch
    of 64 with a fixed input signature (pipeline/keras_handler.py), all models on each batch."""
    import tensorflow as tf

    fn = tf.function(lambda x: [m(x, training=False) for m in models],
                     input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8)])
    return lambda images: [fn(images[i:i + 64]) for i in range(0, len(images), 64)]


def _rate(predict, images: np.ndarray, repeat: int) -> float:
    predict(images[:64])  # warm-up: tracing, oneDNN kernel selection
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        predict(images)
        best = min(best, time.perf_counter() - started)
    return len(images) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 160, 192, 224])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import keras

    from models.architectures import ModelSpec
    from models.export import load_exported
    from models.multitask import Head, build_multitask_model
    from pipeline.images.features import COLOUR_NAMES
    from pipeline.model_profiles import DEFAULT_TASKS, shipped_model_dir

    rng = np.random.default_rng(0)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; keras {keras.__version__} "
          f"({keras.backend.backend()}); batch 64, best of {args.repeat}")
    compact = [load_exported(str(shipped_model_dir(f"compact/{task}")))[0] for task in DEFAULT_TASKS]
    small = rng.integers(0, 256, (args.images, 64, 64, 3), dtype=np.uint8)
    rate = _rate(lambda x: [m.predict(x, batch_size=64, verbose=0) for m in compact], small, args.repeat)
    served = _rate(_served(compact, 64), small, args.repeat)
    print(f"compact set, 3 models at 64 px: predict {rate:7.1f} img/s, served {served:7.1f} img/s")
    heads = (Head("category", tuple(f"c{i}" for i in range(27))), Head("gender", ("F", "M", "U")),
             Head("person", ("PRODUCT", "PERSON")), Head("age_group", ("ADULT", "KIDS")),
             Head("colour", COLOUR_NAMES))
    for size in args.sizes:
        model = build_multitask_model(ModelSpec("efficientnet_lite0", image_size=size), heads)
        images = rng.integers(0, 256, (args.images, size, size, 3), dtype=np.uint8)
        rate = _rate(lambda x, m=model: m.predict(x, batch_size=64, verbose=0), images, args.repeat)
        served = _rate(_served([model], size), images, args.repeat)
        print(f"multi-task Lite0 at {size} px ({model.count_params():,} parameters, 5 heads): predict {rate:7.1f} "
              f"img/s, served {served:7.1f} img/s")


if __name__ == "__main__":
    main()
