"""What a camera hands its consumer for each frame, in plain numpy (no pyrealsense2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Millimetres per metre: published depth is 16UC1 in millimetres, as realsense-ros's.
MM_PER_M = 1000.0


@dataclass(frozen=True)
class Intrinsics:
    """A stream's pinhole intrinsics and lens distortion, as librealsense reports them."""

    width: int
    height: int
    fx: float
    fy: float
    ppx: float
    ppy: float
    #: librealsense's distortion model name: ``brown_conrady``, ``inverse_brown_conrady``,
    #: ``modified_brown_conrady``, ``kannala_brandt4``, ``ftheta`` or ``none``.
    model: str
    #: The model's five coefficients (Brown-Conrady: k1, k2, p1, p2, k3).
    coeffs: tuple[float, ...]

    @property
    def k(self) -> np.ndarray:
        """The 3x3 camera matrix."""
        return np.array([[self.fx, 0.0, self.ppx], [0.0, self.fy, self.ppy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class CameraFrame:
    """One published frame. ``color`` (and ``depth_mm`` when it is a view) point into
    librealsense's buffers: they are valid only during the callback that receives them."""

    #: (H, W, 3) uint8 RGB.
    color: np.ndarray
    #: (H, W) uint16 millimetres aligned to ``color`` (0: no depth); None without depth.
    depth_mm: np.ndarray | None
    #: The colour frame's number (consecutive unless frames were lost).
    frame_number: int
    #: Capture time on the host's system clock and on the ROS clock (seconds).
    capture_s: float
    stamp_s: float
    #: When the frame thread received the frameset from librealsense (system clock).
    received_s: float
    #: The colour stream's intrinsics (also those of the aligned depth).
    intrinsics: Intrinsics


def depth_to_mm(depth: np.ndarray, units_m: float) -> np.ndarray:
    """Raw depth in the device's units (metres per unit) as uint16 millimetres: the same array
    when a unit is a millimetre, else rounded to the nearest millimetre and saturated at 65535.
    0 (no depth) stays 0. librealsense keeps the units as a float32, so 0.1 mm is
    9.99999975e-05 m and 12345 units are 1234.49997 mm: 1234."""
    scale = units_m * MM_PER_M
    if abs(scale - 1.0) < 1e-6:
        return depth
    mm = np.rint(depth * scale)
    np.minimum(mm, np.iinfo(np.uint16).max, out=mm)
    return mm.astype(np.uint16)
