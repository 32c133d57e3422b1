"""Robot poses for hand-eye calibration: diverse, reachable and clear of the table.

Hand-eye calibration is only as good as the rotations between its captures: rotations about
several axes, tens of degrees apart (with rotations about one axis only, the translation along
it cannot be observed). So the poses are drawn around the board: for a camera on the tool, the
camera looks at the board from directions spread over a cone above it, rolled about its optical
axis; for a fixed camera, the board on the tool faces the camera from spread-out tilts and
rolls. Each pose is kept only if the UR5's analytic IK reaches it within the joint limits on a
branch near the start (no wild reconfiguration between captures) and the tool stays above the
table. Frames: ``base_link``; every transform is ``a_from_b``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from policy_runtime.robots.ur5 import forward_kinematics
from policy_runtime.robots.ur5_ik import inverse_kinematics

Mode = Literal["eye_in_hand", "eye_to_base"]

#: The tool flange stays this high above the table top (the gripper hangs ~0.15 m below it).
MIN_TOOL_HEIGHT_M = 0.2


class PoseGenerationError(ValueError):
    """Too few reachable poses; the message says what to change."""


@dataclass(frozen=True)
class CalibrationPose:
    """A pose to capture at: the joints and the flange pose they give (``base_from_tool0``)."""

    q: np.ndarray
    base_from_tool0: np.ndarray


def look_at(camera_position: np.ndarray, target: np.ndarray, roll_rad: float) -> np.ndarray:
    """An optical frame (x right, y down, z forward) at ``camera_position`` looking at
    ``target``, rolled by ``roll_rad`` about its optical axis, as a 4x4 pose."""
    z = np.asarray(target, float) - np.asarray(camera_position, float)
    z /= np.linalg.norm(z)
    helper = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.95 else np.array([1.0, 0.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = np.cos(roll_rad), np.sin(roll_rad)
    pose = np.eye(4)
    pose[:3, 0] = c * x + s * y
    pose[:3, 1] = -s * x + c * y
    pose[:3, 2] = z
    pose[:3, 3] = camera_position
    return pose


def generate_poses(
    mode: Mode,
    n: int,
    board_centre: np.ndarray,
    tool0_from_camera: np.ndarray | None = None,
    base_from_camera: np.ndarray | None = None,
    tool0_from_board: np.ndarray | None = None,
    board_size_m: tuple[float, float] = (0.0, 0.0),
    q_start: np.ndarray | None = None,
    distance_m: tuple[float, float] = (0.3, 0.5),
    max_tilt_deg: float = 35.0,
    max_roll_deg: float = 40.0,
    spread_m: float = 0.15,
    seed: int = 0,
) -> list[CalibrationPose]:
    """``n`` capture poses (see the module docs).

    eye_in_hand: ``board_centre`` is where the board lies (base_link) and ``tool0_from_camera``
    a nominal camera mount (a drawing's or a first guess: it only aims the camera).
    eye_to_base: ``board_centre`` is where the board should be held (in front of the camera),
    ``base_from_camera`` the camera's nominal pose and ``tool0_from_board`` where the board
    sits on the tool (its frame: OpenCV's, origin at a corner, z into the board, so its face
    looks along -z); ``board_size_m`` puts the board's centre, not its corner, at the aim, and
    ``spread_m`` scatters it about the aim (corners all over the image make good intrinsics).
    """
    rng = np.random.default_rng(seed)
    q_near = np.asarray(
        q_start if q_start is not None else [0.0, -1.9, 1.9, -1.571, -1.571, 0.0], float
    )
    centre = np.asarray(board_centre, float)
    poses: list[CalibrationPose] = []
    for _ in range(60 * n):
        if len(poses) == n:
            break
        tilt = np.radians(rng.uniform(5.0, max_tilt_deg))
        azimuth = rng.uniform(-np.pi, np.pi)
        roll = np.radians(rng.uniform(-max_roll_deg, max_roll_deg))
        if mode == "eye_in_hand":
            assert tool0_from_camera is not None, "eye_in_hand needs tool0_from_camera"
            direction = np.array(
                [np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), np.cos(tilt)]
            )
            camera = look_at(centre + rng.uniform(*distance_m) * direction, centre, roll)
            tool0 = camera @ np.linalg.inv(tool0_from_camera)
        else:
            assert base_from_camera is not None and tool0_from_board is not None, (
                "eye_to_base needs base_from_camera and tool0_from_board"
            )
            jitter = rng.uniform(-spread_m, spread_m, 3)  # across the image, and in depth
            board_at = centre + jitter
            # The board faces the camera (its z, into the board, points away from it), tilted.
            to_camera = base_from_camera[:3, 3] - board_at
            facing = look_at(board_at, board_at - to_camera, 0.0)
            tilt_axis = np.array([np.cos(azimuth), np.sin(azimuth), 0.0])
            board = facing.copy()
            board[:3, :3] = (
                facing[:3, :3]
                @ _axis_angle(tilt_axis, tilt)
                @ _axis_angle(np.array([0.0, 0.0, 1.0]), roll)
            )
            centre_to_origin = np.eye(4)
            centre_to_origin[:2, 3] = (-board_size_m[0] / 2, -board_size_m[1] / 2)
            tool0 = board @ centre_to_origin @ np.linalg.inv(tool0_from_board)
        if tool0[2, 3] < MIN_TOOL_HEIGHT_M:
            continue
        q = inverse_kinematics(tool0, q_near=q_near)
        if q is None or np.max(np.abs(q - q_near)) > np.radians(150):
            continue
        poses.append(CalibrationPose(q, forward_kinematics(q)))
    if len(poses) < n:
        raise PoseGenerationError(
            f"only {len(poses)} of {n} poses are reachable above the table: move the board "
            "closer to the robot's workspace centre, or lower distance_m / max_tilt_deg"
        )
    return poses


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    k = axis / np.linalg.norm(axis)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
