"""The bare limit of a whole run, as one process tree: no Beam, the project's decode and the
shipped default model, ``--workers`` processes each decoding and scoring its share of the
images in batches of 64 with one TensorFlow thread, scores kept in memory. Run by
``bench_process.py`` as a fresh interpreter, so its wall, user and system time are those of a
whole process, start-up included, as a run's are. Prints the image count when done.

    python benchmarks/bare_run.py --list FILE_OF_PATHS [--workers 2] [--engine onnxruntime]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _onnx_scorer(folder: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(os.path.join(folder, "model.onnx"), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})


def _score_share(paths: list[str], folder: str, size: int, engine: str) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from pipeline.images import DecodeConfig, ImageError, decode_and_preprocess

    score = _onnx_scorer(folder) if engine == "onnxruntime" else _keras_scorer(folder, size)
    cfg = DecodeConfig(size=size)
    scored, batch, kept = 0, [], []
    for i, path in enumerate(paths):
        try:
            batch.append(decode_and_preprocess(Path(path).read_bytes(), cfg).array)
        except ImageError:
            pass
        if len(batch) == 64 or (i == len(paths) - 1 and batch):
            kept.append(score(np.stack(batch)))
            scored += len(batch)
            batch = []
    return scored


def _keras_scorer(folder: str, size: int):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    import models.architectures  # noqa: F401 - the custom preprocessing layer

    model = keras.models.load_model(os.path.join(folder, "model.keras"), compile=False)
    fn = tf.function(lambda x: model(x, training=False), autograph=False,
                     input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8)])
    return lambda batch: {k: v.numpy() for k, v in fn(batch).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", required=True, help="a file with one image path per line")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--engine", choices=("tensorflow", "onnxruntime"), default="tensorflow")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from pipeline.model_profiles import DEFAULT_PROFILE, profile_models

    folder = str(next(iter(profile_models(DEFAULT_PROFILE).values())))
    card = Path(folder, "model_card.json").read_text()
    import json

    size = json.loads(card)["image_size"]
    paths = Path(args.list).read_text().split()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        scored = sum(pool.starmap(_score_share, [(paths[i::args.workers], folder, size, args.engine)
                                                 for i in range(args.workers)]))
    print(scored)


if __name__ == "__main__":
    main()
