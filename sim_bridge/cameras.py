"""RealSense-like cameras: intrinsics as a matrix, extrinsics as the optical frame's pose.

MuJoCo cameras look along -z with y up; the ROS optical frame (REP 103, what realsense-ros
stamps images with) looks along +z with y down, i.e. the MuJoCo frame turned by pi about x.
Intrinsics follow from the vertical field of view with square pixels, principal point at the
image centre in pixel-index coordinates (pixel (0, 0)'s centre is (0, 0)).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

#: MuJoCo camera frame -> optical frame (x right, y down, z forward).
MUJOCO_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class CameraSpec:
    """A camera of the cell. ``fovy_deg`` is the vertical field of view of the colour stream.

    ``placement``: where a calibration put the camera, the 16 values (row-major) of its optical
    frame's pose in its parent (``base_link`` for the front camera, ``tool0`` for the wrist
    camera); None: the cell's default placement.
    """

    name: str
    fovy_deg: float
    width: int = 640
    height: int = 480
    depth_min_m: float = 0.1
    depth_max_m: float = 10.0
    placement: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.placement is not None:
            pose = np.asarray(self.placement, dtype=np.float64)
            if pose.shape != (16,) or not np.all(np.isfinite(pose)):
                raise ValueError(f"camera {self.name}: placement must be 16 finite values")
            rotation = pose.reshape(4, 4)[:3, :3]
            if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6):
                raise ValueError(f"camera {self.name}: placement's rotation is not orthonormal")

    def placed(self, parent_from_optical: np.ndarray) -> CameraSpec:
        """This camera at ``parent_from_optical`` (4x4)."""
        values = tuple(float(v) for v in np.asarray(parent_from_optical).reshape(16))
        return dataclasses.replace(self, placement=values)


#: D435 / D415 colour stream at 640x480: fx = fy ~ 615 px, i.e. 42.6 deg vertical.
REALSENSE_COLOR_FOVY_DEG = float(np.degrees(2 * np.arctan(240 / 615.0)))


def intrinsics_matrix(fovy_deg: float, width: int, height: int) -> np.ndarray:
    """K (3x3) for a MuJoCo camera rendered at ``width`` x ``height``."""
    f = (height / 2) / np.tan(np.radians(fovy_deg) / 2)
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def optical_pose(cam_xpos: np.ndarray, cam_xmat: np.ndarray) -> np.ndarray:
    """World pose (4x4) of the optical frame of a MuJoCo camera from ``data.cam_x*``."""
    pose = np.eye(4)
    pose[:3, :3] = np.asarray(cam_xmat).reshape(3, 3) @ MUJOCO_TO_OPTICAL
    pose[:3, 3] = cam_xpos
    return pose


def project(points_world: np.ndarray, k: np.ndarray, world_from_optical: np.ndarray) -> np.ndarray:
    """Pixel coordinates (N, 2) of world points (N, 3) seen by a camera."""
    optical_from_world = np.linalg.inv(world_from_optical)
    p = np.asarray(points_world, dtype=np.float64) @ optical_from_world[:3, :3].T
    p += optical_from_world[:3, 3]
    uvw = p @ k.T
    return uvw[:, :2] / uvw[:, 2:3]


def camera_xml(name: str, parent_from_optical: np.ndarray, fovy_deg: float) -> str:
    """A MuJoCo ``<camera>`` whose optical frame is ``parent_from_optical`` in its parent body."""
    pose = np.asarray(parent_from_optical, dtype=np.float64)
    frame = pose[:3, :3] @ MUJOCO_TO_OPTICAL  # MuJoCo's camera axes in the parent
    pos = " ".join(f"{v:.12g}" for v in pose[:3, 3])
    axes = " ".join(f"{v:.12g}" for v in (*frame[:, 0], *frame[:, 1]))
    return f'<camera name="{name}" pos="{pos}" xyaxes="{axes}" fovy="{fovy_deg:.10g}"/>'


def look_at_optical(position: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The optical frame (4x4: x right, y down, z forward) of a camera at ``position`` looking
    at ``target``, level (its x axis horizontal, world z up in the image)."""
    forward = np.asarray(target, float) - np.asarray(position, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2] = right, np.cross(forward, right), forward
    pose[:3, 3] = position
    return pose


def look_at_xyaxes(position: np.ndarray, target: np.ndarray) -> str:
    """MuJoCo ``xyaxes`` for a camera at ``position`` looking at ``target`` with world z up."""
    frame = look_at_optical(position, target)[:3, :3] @ MUJOCO_TO_OPTICAL
    return " ".join(f"{v:.10g}" for v in (*frame[:, 0], *frame[:, 1]))


#: Each sim camera's parent body: a calibration of it must be relative to this frame.
CAMERA_PARENTS = {"front": "base_link", "wrist": "tool0", "side": "base_link"}


def placed_cameras(
    cameras: tuple[CameraSpec, ...],
    placements: dict[str, tuple[str, np.ndarray, float]],
) -> tuple[CameraSpec, ...]:
    """``cameras`` with those named in ``placements`` moved and refocused: ``name -> (parent
    frame, parent_from_optical, vertical field of view in degrees)``, e.g. from calibrations of
    the real cameras. ValueError for a camera the cell does not have or a placement relative
    to another frame than the camera's parent."""
    by_name = {camera.name: camera for camera in cameras}
    for name, (parent, _, _) in placements.items():
        if name not in by_name:
            raise ValueError(f"no sim camera {name!r} (there are {sorted(by_name)})")
        if parent != CAMERA_PARENTS.get(name):
            raise ValueError(
                f"camera {name}: calibrated in {parent}, but the sim mounts it in "
                f"{CAMERA_PARENTS.get(name)}"
            )
    placed = []
    for camera in cameras:
        if camera.name in placements:
            _, pose, fovy_deg = placements[camera.name]
            camera = dataclasses.replace(camera.placed(pose), fovy_deg=fovy_deg)
        placed.append(camera)
    return tuple(placed)
