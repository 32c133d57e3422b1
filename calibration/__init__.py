"""Camera intrinsics and hand-eye calibration, written out as YAML and static TF.

:mod:`calibration.board`: boards (ChArUco, chessboard), their frame and drawing, detection,
board pose. :mod:`calibration.intrinsics`: :class:`CameraIntrinsics` (ROS CameraInfo's
conventions), estimating it from board views. OpenCV (the ``calibration`` extra) loads with the
first name that needs it, not with this package. :mod:`calibration.handeye`: hand-eye solvers
(eye_in_hand: ``tool0_from_camera``; eye_to_base: ``base_from_camera``) with residuals, outlier
rejection and pose guidance, in numpy (OpenCV's own where the installed wheel binds them).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BoardPose": "calibration.board",
    "BoardSpec": "calibration.board",
    "BoardView": "calibration.board",
    "ViewRejected": "calibration.board",
    "board_pose": "calibration.board",
    "detect": "calibration.board",
    "CameraIntrinsics": "calibration.intrinsics",
    "IntrinsicsEstimate": "calibration.intrinsics",
    "estimate_intrinsics": "calibration.intrinsics",
    "from_realsense": "calibration.intrinsics",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'calibration' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
