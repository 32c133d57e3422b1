"""A calibration board (or a marker) as a textured plate in the simulated cell.

The plate is a thin box whose top face carries the board image exactly (MuJoCo stretches a 2D
texture over each face of a box): image column 0 at the plate's -x edge, image row 0 at its +y
edge, seen from +z. So a board drawn by OpenCV, whose frame has x along the image's columns, y
along its rows (down) and z into the board, sits in the plate's frame at
``plate_from_board`` = (x, -y, -z) with its origin at the (-x, +y) corner of the top face.
"""

from __future__ import annotations

import numpy as np

PLATE_THICKNESS_M = 0.001


def plate_xml(
    name: str, size_m: tuple[float, float], pose: np.ndarray, texture: str
) -> tuple[str, str]:
    """(asset XML, body XML) of a plate of ``size_m`` (width along x, height along y) at
    ``pose`` (4x4, in its parent body) showing the PNG file ``texture`` (give its bytes to the
    cell as an asset of that name). Visual only: it collides with nothing."""
    width, height = size_m
    quat = _quaternion_wxyz(pose[:3, :3])
    pos = " ".join(f"{v:.12g}" for v in pose[:3, 3])
    assets = (
        f'<texture name="{name}" type="2d" file="{texture}"/>'
        f'<material name="{name}" texture="{name}" specular="0" shininess="0"/>'
    )
    body = (
        f'<body name="{name}" pos="{pos}" quat="{" ".join(f"{v:.12g}" for v in quat)}">'
        f'<geom name="{name}" type="box" size="{width / 2:.12g} {height / 2:.12g} '
        f'{PLATE_THICKNESS_M / 2}" pos="0 0 {-PLATE_THICKNESS_M / 2}" material="{name}" '
        'contype="0" conaffinity="0" mass="0.001"/></body>'
    )
    return assets, body


def plate_from_board(size_m: tuple[float, float]) -> np.ndarray:
    """The OpenCV board frame (origin at the image's top-left corner, x along columns, y down
    the rows, z into the board) in the plate's frame (its top face at z = 0)."""
    pose = np.diag([1.0, -1.0, -1.0, 1.0])
    pose[:3, 3] = (-size_m[0] / 2, size_m[1] / 2, 0.0)
    return pose


def _quaternion_wxyz(rotation: np.ndarray) -> np.ndarray:
    from policy_runtime.robots.poses import quaternion_from_matrix

    x, y, z, w = quaternion_from_matrix(rotation)
    return np.array([w, x, y, z])
