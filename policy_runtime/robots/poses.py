"""Pose encodings for policies: position + 6D rotation, and back.

The 6D rotation is the first two rows of the rotation matrix, as pytorch3d's
``matrix_to_rotation_6d`` (which Diffusion Policy's rotation transformer uses) defines it; it is
continuous, unlike Euler angles or quaternions, which is why policies regress it. Decoding
orthonormalises with Gram-Schmidt, so any 6-vector a network outputs maps to a valid rotation.
numpy only: the deploy path decodes end-effector actions with this.
"""

from __future__ import annotations

import numpy as np

#: An end-effector action: position (3), 6D rotation (6), gripper opening (1).
EE_ACTION_DIM = 10


def rot6d_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 6): the first two rows."""
    rotation = np.asarray(rotation, dtype=np.float64)
    return rotation[..., :2, :].reshape(*rotation.shape[:-2], 6)


def matrix_from_rot6d(rot6d: np.ndarray) -> np.ndarray:
    """(..., 6) -> (..., 3, 3), Gram-Schmidt on the two rows (pytorch3d's convention)."""
    rot6d = np.asarray(rot6d, dtype=np.float64)
    a1, a2 = rot6d[..., :3], rot6d[..., 3:]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    b2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = b2 / np.linalg.norm(b2, axis=-1, keepdims=True)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-2)


#: A 6D rotation whose rows are shorter than this, or closer than this to parallel (sine of the
#: angle between them), does not define a rotation: Gram-Schmidt would amplify noise.
DEGENERATE_ROT6D = 1e-6


def valid_rot6d(rot6d: np.ndarray) -> np.ndarray:
    """(..., 6) -> (...) bool: whether each 6D encoding defines a rotation (finite rows, neither
    near zero nor near parallel), i.e. whether :func:`matrix_from_rot6d` is well conditioned."""
    rot6d = np.asarray(rot6d, dtype=np.float64)
    a1, a2 = rot6d[..., :3], rot6d[..., 3:]
    with np.errstate(invalid="ignore", over="ignore"):
        n1, n2 = np.linalg.norm(a1, axis=-1), np.linalg.norm(a2, axis=-1)
        sine = np.linalg.norm(np.cross(a1, a2), axis=-1)
        product = n1 * n2
        ok = (np.minimum(n1, n2) >= DEGENERATE_ROT6D) & (sine >= DEGENERATE_ROT6D * product)
    return ok & np.isfinite(product) & np.isfinite(sine) & np.all(np.isfinite(rot6d), axis=-1)


def pose_to_ee_action(pose: np.ndarray, gripper: float) -> np.ndarray:
    """4x4 pose + gripper opening -> (10,) float32 action."""
    return np.concatenate(
        [pose[:3, 3], rot6d_from_matrix(pose[:3, :3]), [gripper]], dtype=np.float64
    ).astype(np.float32)


def ee_action_to_pose(action: np.ndarray) -> tuple[np.ndarray, float]:
    """(10,) action -> (4x4 pose, gripper opening)."""
    action = np.asarray(action, dtype=np.float64)
    if action.shape != (EE_ACTION_DIM,):
        raise ValueError(f"an end-effector action has shape ({EE_ACTION_DIM},), got {action.shape}")
    pose = np.eye(4)
    pose[:3, :3] = matrix_from_rot6d(action[3:9])
    pose[:3, 3] = action[:3]
    return pose, float(action[9])


def quaternion_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """3x3 rotation -> unit quaternion (x, y, z, w), ROS's order, with w >= 0 (Shepperd's
    method: the largest of the four squares first, so no division by a small number)."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    squares = np.array([m[0, 0], m[1, 1], m[2, 2], trace])
    i = int(np.argmax(squares))
    if i == 3:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    else:
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0, 0.0, 0.0, (m[k, j] - m[j, k]) / s]
        q[i] = s / 4
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
    quat = np.asarray(q)
    return quat if quat[3] >= 0 else -quat


def matrix_from_quaternion(quaternion: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w), normalised first -> 3x3 rotation."""
    x, y, z, w = np.asarray(quaternion, dtype=np.float64) / np.linalg.norm(quaternion)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
