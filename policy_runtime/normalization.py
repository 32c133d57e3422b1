"""Per-key normalisation of observations and actions, as Diffusion Policy does it.

Low-dim keys and actions: per-dimension min-max to [-1, 1]; a dimension whose range is below
``RANGE_EPS`` maps its (constant) value to 0 with scale 1. Images (uint8 H x W x 3): [0, 255] ->
[-1, 1].

Unlike Diffusion Policy, fitting takes a ``min_range``: a dimension that spans less than that
(in its own units) is scaled as if it spanned that much, centred on its midpoint. Min-max alone
blows sensor noise up to full scale: a top-down gripper's measured orientation wobbles by a few
thousandths in the demonstrations, so min-max gave that noise the range [-1, 1], a policy's first
tilt of a degree read as -3, far outside anything it was trained on, and its answer tilted the
gripper further. The floor also keeps a constant action dimension constant: the network's error
on it is scaled by ``min_range / 2`` instead of 1.

Every key is the affine map ``x * scale + offset``, so the same numbers normalise in numpy (the
deploy runtime, no torch) and in torch (training): the arrays are the whole state, saved with
every checkpoint and bundle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from policy_runtime.data.stats import KeyStats

RANGE_EPS = 1e-4


@dataclass(frozen=True)
class AffineMap:
    """``x_normalised = x * scale + offset`` element-wise over a key's per-step shape."""

    scale: np.ndarray
    offset: np.ndarray

    @classmethod
    def min_max(cls, lo: np.ndarray, hi: np.ndarray, min_range: float = 0.0) -> AffineMap:
        """[lo, hi] -> [-1, 1] per dimension; a narrower range than ``min_range`` is widened
        to it about its midpoint (so it maps into a centred part of [-1, 1])."""
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        span = np.maximum(hi - lo, min_range)
        constant = span < RANGE_EPS
        span = np.where(constant, 2.0, span)
        scale = 2.0 / span
        offset = np.where(constant, -lo, -scale * (lo + hi) / 2)
        return cls(scale.astype(np.float32), offset.astype(np.float32))

    @classmethod
    def image(cls) -> AffineMap:
        return cls(np.float32(2.0 / 255.0) * np.ones(1, np.float32), -np.ones(1, np.float32))


class Normalizer:
    """Affine maps for named keys; applies to numpy arrays or torch tensors alike."""

    def __init__(self, maps: Mapping[str, AffineMap]) -> None:
        self.maps = dict(maps)

    @classmethod
    def fit(
        cls,
        stats: Mapping[str, KeyStats],
        image_keys: tuple[str, ...] = (),
        min_range: float = 0.0,
    ) -> Normalizer:
        """Min-max maps from dataset statistics (ranges widened to ``min_range``);
        ``image_keys`` get the fixed image map."""
        maps = {key: AffineMap.min_max(s.min, s.max, min_range) for key, s in stats.items()}
        maps.update({key: AffineMap.image() for key in image_keys})
        return cls(maps)

    def normalize(self, key: str, x: Any) -> Any:
        m = self._map(key)
        return x * _like(m.scale, x) + _like(m.offset, x)

    def unnormalize(self, key: str, x: Any) -> Any:
        m = self._map(key)
        return (x - _like(m.offset, x)) / _like(m.scale, x)

    def state(self) -> dict[str, np.ndarray]:
        """Flat arrays (``<key>.scale``, ``<key>.offset``), e.g. for safetensors."""
        out = {}
        for key, m in self.maps.items():
            out[f"{key}.scale"], out[f"{key}.offset"] = m.scale, m.offset
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> Normalizer:
        keys = {name.rsplit(".", 1)[0] for name in state}
        try:
            return cls(
                {
                    k: AffineMap(
                        np.asarray(state[f"{k}.scale"], np.float32),
                        np.asarray(state[f"{k}.offset"], np.float32),
                    )
                    for k in keys
                }
            )
        except KeyError as exc:
            raise ValueError(f"normaliser state is missing {exc.args[0]!r}") from None

    def _map(self, key: str) -> AffineMap:
        if key not in self.maps:
            raise KeyError(f"no normalisation for key {key!r} (have {sorted(self.maps)})")
        return self.maps[key]


def _like(array: np.ndarray, x: Any) -> Any:
    """``array`` as the same kind of object as ``x`` (numpy, or a torch tensor on x's device)."""
    if isinstance(x, np.ndarray | np.generic | float | int):
        return array
    import torch  # only reached with a torch tensor, i.e. in training

    return torch.as_tensor(array, dtype=x.dtype, device=x.device)
