"""Image features computed next to decoding: a perceptual hash and the dominant colour.

* ``perceptual_hash``: a 144-bit DCT hash (pHash: 12 x 12 low frequencies) of the image
  averaged with its mirror image, so that a horizontally flipped copy hashes alike; flipped,
  halved and re-encoded copies land within a few bits. Near-duplicates differ in at most
  ``NEAR_DUPLICATE_BITS`` bits. 144 bits rather than the classic 64: catalog packshots share a
  centred silhouette on white, and at 64 bits a quarter of distinct Myntra products sat within
  the threshold of another one; with more bits, small amateur photos lose robustness
  (benchmarks/README.md has the measurements).
* ``dominant_colours``: the most common named colour of the foreground, with the white /
  near-white background discounted, and the same with skin-toned pixels discounted too (used
  for person shots). Names come from a small vocabulary (``COLOURS``), matched in CIE Lab.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

HASH_SIDE = 64
HASH_BLOCK = 12  # 12 vertical x 12 even horizontal DCT frequencies = 144 bits
NEAR_DUPLICATE_BITS = 11

# name -> reference sRGB; several references may share a name.
COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("black", (20, 20, 20)), ("black", (45, 45, 50)),
    ("white", (245, 245, 245)), ("white", (222, 222, 224)),
    ("grey", (128, 128, 128)), ("grey", (90, 90, 95)), ("grey", (170, 170, 172)),
    ("navy", (30, 40, 80)), ("navy", (40, 50, 100)),
    ("blue", (40, 90, 180)), ("blue", (90, 140, 210)), ("blue", (70, 110, 150)),
    ("green", (40, 130, 60)), ("green", (30, 80, 50)), ("green", (110, 180, 120)),
    ("olive", (110, 110, 50)),
    ("red", (200, 30, 40)), ("red", (170, 20, 30)),
    ("maroon", (110, 20, 35)),
    ("pink", (235, 130, 170)), ("pink", (240, 180, 200)),
    ("purple", (110, 50, 140)), ("purple", (160, 110, 190)),
    ("yellow", (235, 210, 50)), ("yellow", (240, 225, 120)),
    ("orange", (240, 130, 30)),
    ("brown", (110, 70, 40)), ("brown", (150, 100, 60)),
    ("beige", (215, 195, 160)), ("beige", (200, 180, 140)),
)
COLOUR_NAMES = tuple(dict.fromkeys(name for name, _ in COLOURS))


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


_DCT = _dct_matrix(HASH_SIDE)
_ROWS = np.ascontiguousarray(_DCT[:HASH_BLOCK])  # the vertical frequencies kept
_COLUMNS = np.ascontiguousarray(_DCT[0:2 * HASH_BLOCK:2].T)  # the even horizontal ones


def perceptual_hash(array: np.ndarray) -> str:
    """36 hex digits: 144 bits of the low-frequency DCT of the mirror-averaged grey image."""
    grey = np.asarray(Image.fromarray(array).convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BILINEAR),
                      dtype=np.float64)
    symmetric = (grey + grey[:, ::-1]) / 2  # odd horizontal frequencies vanish: keep the even ones
    block = (_ROWS @ symmetric @ _COLUMNS).ravel()  # only the kept coefficients of the 2-D DCT
    bits = block > np.median(block[1:])  # the DC term skews the median
    return np.packbits(bits).tobytes().hex()  # 144 bits: 18 bytes, most significant bit first


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    c = rgb.astype(np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = c @ np.array([[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192], [0.1805, 0.0722, 0.9505]])
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


_REFERENCE_LAB = _srgb_to_lab(np.array([rgb for _, rgb in COLOURS]))
_REFERENCE_NAME = np.array([COLOUR_NAMES.index(name) for name, _ in COLOURS])


def _is_background(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]  # per channel: a min/max over axes of 3 is slow in numpy
    low, high = np.minimum(np.minimum(r, g), b), np.maximum(np.maximum(r, g), b)
    return (low >= 225) & (high - low <= 18)


def _is_skin(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[:, i].astype(np.float32) for i in range(3))
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return (cb >= 77) & (cb <= 127) & (cr >= 137) & (cr <= 173) & (r > g) & (r > b)


@functools.lru_cache(maxsize=1)
def _name_table() -> np.ndarray:
    """Colour name index for every RGB colour quantised to 5 bits per channel (32x32x32), built
    once per process: voting is then a table lookup, not a Lab distance per pixel."""
    levels = np.arange(32) * 8 + 4
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    distances = ((_srgb_to_lab(grid)[:, None, :] - _REFERENCE_LAB[None, :, :]) ** 2).sum(axis=2)
    return _REFERENCE_NAME[distances.argmin(axis=1)].reshape(32, 32, 32)


ACHROMATIC = ("black", "white", "grey")
CHROMATIC_SHARE = 0.5  # a colour wins over black/white/grey with half their votes (shading is achromatic)


def _vote(rgb: np.ndarray) -> str | None:
    if len(rgb) == 0:
        return None
    q = (rgb >> 3).astype(np.intp)
    names = _name_table().ravel()[(q[:, 0] << 10) | (q[:, 1] << 5) | q[:, 2]]  # one lookup in the 32^3 table
    votes = np.bincount(names, minlength=len(COLOUR_NAMES))
    best = int(votes.argmax())
    if COLOUR_NAMES[best] in ACHROMATIC:
        chromatic = [i for i, name in enumerate(COLOUR_NAMES) if name not in ACHROMATIC]
        colour = max(chromatic, key=lambda i: votes[i])
        if votes[colour] >= CHROMATIC_SHARE * votes[best]:
            return COLOUR_NAMES[colour]
    return COLOUR_NAMES[best]


def dominant_colours(array: np.ndarray) -> tuple[str | None, str | None]:
    """(dominant colour without the background, the same without skin either).

    Pixels are sampled without blending (a stride, not a resize: averaging a black edge with
    the white background would invent grey), and the foreground is eroded by one pixel so its
    anti-aliased rim does not vote either."""
    stride = max(1, array.shape[0] // 64)
    small = array[::stride, ::stride]
    background = _is_background(small)
    inner = ~background
    inner[1:, :] &= ~background[:-1, :]
    inner[:-1, :] &= ~background[1:, :]
    inner[:, 1:] &= ~background[:, :-1]
    inner[:, :-1] &= ~background[:, 1:]
    total = background.size
    if (~background).sum() < 0.03 * total:  # almost nothing but white: a white product on white
        return "white", "white"
    foreground = small[inner] if inner.sum() >= 0.01 * total else small[~background]
    plain = _vote(foreground)
    without_skin = foreground[~_is_skin(foreground)]
    return plain, (_vote(without_skin) if len(without_skin) >= 0.01 * total else plain)
