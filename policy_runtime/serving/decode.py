"""From a message's fields (plain arrays) to an observation key's array: numpy only.

The ROS 2 adapter unpacks a message into arrays and calls these; every function returns the
key's array or raises :class:`DecodeError` naming what does not fit, and the caller counts and
drops that message.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from policy_runtime.robots.poses import matrix_from_quaternion, rot6d_from_matrix


class DecodeError(ValueError):
    """A message that cannot become the observation it is mapped to."""


def pose_observation(position: Sequence[float], quaternion_xyzw: Sequence[float]) -> np.ndarray:
    """Position + 6D rotation (9,) float32, the ``ee_pose`` encoding of a pose."""
    p = np.asarray(position, dtype=np.float64)
    q = np.asarray(quaternion_xyzw, dtype=np.float64)
    norm = float(np.linalg.norm(q)) if np.all(np.isfinite(q)) else 0.0
    if not np.all(np.isfinite(p)) or not 0.5 < norm < 1.5:
        raise DecodeError(f"pose with a non-finite position or a non-unit quaternion (|q|={norm})")
    return np.concatenate([p, rot6d_from_matrix(matrix_from_quaternion(q))]).astype(np.float32)


class NamePicker:
    """Values picked by name from a named array (a JointState's), in a fixed order.

    ``names`` are the wanted names, or ``prefix`` picks ``<prefix>0``, ``<prefix>1``, ... (as
    many as the first message has). The index map is cached per message name list, so a stream
    whose names never change costs one dict lookup per message.
    """

    def __init__(self, names: Sequence[str] | None = None, prefix: str | None = None) -> None:
        if (names is None) == (prefix is None):
            raise ValueError("give exactly one of names or prefix")
        self.names = None if names is None else tuple(names)
        self.prefix = prefix
        self._cache: tuple[tuple[str, ...], np.ndarray] | None = None

    def _wanted(self, available: tuple[str, ...]) -> tuple[str, ...]:
        if self.names is not None:
            return self.names
        present = set(available)
        wanted: list[str] = []
        while f"{self.prefix}{len(wanted)}" in present:
            wanted.append(f"{self.prefix}{len(wanted)}")
        if not wanted:
            raise DecodeError(f"no name {self.prefix}0 in the message (names: {list(available)})")
        self.names = tuple(wanted)  # fixed by the first message: the key's shape
        return self.names

    def __call__(self, names: Sequence[str], values: Sequence[float]) -> np.ndarray:
        available = tuple(names)
        if len(values) != len(available):
            raise DecodeError(f"{len(available)} names but {len(values)} values")
        cached = self._cache
        if cached is None or cached[0] != available:
            wanted = self._wanted(available)
            where = {name: i for i, name in enumerate(available)}
            missing = [name for name in wanted if name not in where]
            if missing:
                raise DecodeError(f"names {missing} are not in the message ({list(available)})")
            cached = (available, np.array([where[name] for name in wanted]))
            self._cache = cached
        picked = np.asarray(values, dtype=np.float64)[cached[1]]
        if not np.all(np.isfinite(picked)):
            raise DecodeError("a picked value is NaN or inf")
        return picked.astype(np.float32)


def fit_image(pixels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """An (H, W, 3) uint8 image cropped about its centre to the aspect of ``shape`` (h, w, 3),
    then resized bilinearly (pixel centres at half-integers, as OpenCV's INTER_LINEAR)."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise DecodeError(f"expected an (H, W, 3) uint8 image, got {pixels.shape} {pixels.dtype}")
    out_h, out_w = int(shape[0]), int(shape[1])
    h, w = pixels.shape[:2]
    if h * out_w > w * out_h:  # too tall: crop rows
        crop_h, crop_w = round(w * out_h / out_w), w
    else:
        crop_h, crop_w = h, round(h * out_w / out_h)
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    image = pixels[top : top + crop_h, left : left + crop_w]
    if (crop_h, crop_w) == (out_h, out_w):
        return np.ascontiguousarray(image)
    ys = np.clip((np.arange(out_h) + 0.5) * crop_h / out_h - 0.5, 0, crop_h - 1)
    xs = np.clip((np.arange(out_w) + 0.5) * crop_w / out_w - 0.5, 0, crop_w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, crop_h - 1), np.minimum(x0 + 1, crop_w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    img = image.astype(np.float32)
    top_row = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bottom_row = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    return np.clip(np.rint(top_row * (1 - fy) + bottom_row * fy), 0, 255).astype(np.uint8)
