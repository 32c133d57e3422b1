"""Commands between stamped waypoints at any controller tick, and blends of predicted actions.

A policy predicts at its own rate (10 Hz for Diffusion Policy on a UR5); the UR controller wants a
target every tick (125 Hz CB3, 500 Hz e-series). :class:`Trajectory` turns the waypoints of the
current plan into a target at any time ``t``:

* joint actions (6 angles in rad + gripper): ``linear`` (what Diffusion Policy's controller does:
  exact, never overshoots, but the velocity jumps at every waypoint) or ``cubic``: a cubic Hermite
  spline with Catmull-Rom tangents, i.e. the tangent at an interior waypoint is the central
  difference ``(q[k+1] - q[k-1]) / (t[k+1] - t[k-1])`` (valid for uneven spacing, which a splice
  creates). It passes through every waypoint and is C1; it is local (moving one waypoint changes
  only the four segments around it, unlike a C2 natural spline, which also rings more after a
  jump). The last tangent is zero, so the motion comes to rest at the last waypoint and holding
  after it stays C1; the first tangent is zero (start from rest) unless the caller passes the
  velocity of the trajectory being replaced, which makes a chunk switch C1 as well.
* end-effector actions (xyz, 6D rotation, gripper): linear position and SLERP on rotation, taking
  the short way (quaternions of consecutive waypoints are put on the same hemisphere), as Diffusion
  Policy's pose interpolator does. A cubic is refused here: SLERP has no C1 counterpart this cheap.
* the gripper opening (the last element of both spaces) is always linear: a cubic would overshoot
  an open/close step outside [0, 1].

Before the first waypoint the first is held, after the last the last is held: whether a plan is
stale is the engine's decision, not the interpolator's.

:func:`blend_actions` is the weighted mean the engine's blending modes need: joints and positions
average linearly, rotations by the weighted chordal mean (average the rotation matrices, project
back onto SO(3) with an SVD). Averaging raw 6D vectors would give a non-rotation.
"""

from __future__ import annotations

import bisect
import math
from typing import Literal, TypeVar

import numpy as np

from policy_runtime.robots.poses import EE_ACTION_DIM, matrix_from_rot6d, rot6d_from_matrix

ActionSpace = Literal["ee", "joint"]
Interpolation = Literal["linear", "cubic"]

#: A joint action: 6 joint angles (rad) and the gripper opening (0..1).
JOINT_ACTION_DIM = 7
ACTION_DIMS: dict[str, int] = {"ee": EE_ACTION_DIM, "joint": JOINT_ACTION_DIM}

_SMALL_ANGLE = 1e-6
_U = TypeVar("_U", float, np.ndarray)


def quaternion_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 4) unit quaternions ``(w, x, y, z)`` with ``w >= 0``.

    Shepperd's method: of the four ways to read a quaternion off the matrix, use the one with the
    largest pivot, so no rotation (180-degree turns included) loses precision.
    """
    m = np.asarray(rotation, dtype=np.float64)
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    pivots = np.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22],
        axis=-1,
    )
    wx, wy, wz = (
        m[..., 2, 1] - m[..., 1, 2],
        m[..., 0, 2] - m[..., 2, 0],
        m[..., 1, 0] - m[..., 0, 1],
    )
    xy, xz, yz = (
        m[..., 0, 1] + m[..., 1, 0],
        m[..., 0, 2] + m[..., 2, 0],
        m[..., 1, 2] + m[..., 2, 1],
    )
    candidates = np.stack(
        [
            np.stack([pivots[..., 0], wx, wy, wz], axis=-1),
            np.stack([wx, pivots[..., 1], xy, xz], axis=-1),
            np.stack([wy, xy, pivots[..., 2], yz], axis=-1),
            np.stack([wz, xz, yz, pivots[..., 3]], axis=-1),
        ],
        axis=-2,
    )
    best = np.argmax(pivots, axis=-1)[..., None, None]
    q = np.take_along_axis(candidates, best, axis=-2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def matrix_from_quaternion(quaternion: np.ndarray) -> np.ndarray:
    """(..., 4) ``(w, x, y, z)`` -> (..., 3, 3); the quaternion is normalised first."""
    q = np.asarray(quaternion, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def slerp(q0: np.ndarray, q1: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Spherical interpolation (..., 4) from ``q0`` (``u = 0``) to ``q1`` (``u = 1``), short way.

    ``q`` and ``-q`` are the same rotation; flipping ``q1`` onto ``q0``'s hemisphere makes the
    path the shorter of the two arcs (at most 180 degrees of rotation).
    """
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    theta = np.arccos(np.clip(np.abs(dot), 0.0, 1.0))
    sin_theta = np.sin(theta)
    small = sin_theta < _SMALL_ANGLE  # nearly equal: the linear blend is exact to first order
    safe = np.where(small, 1.0, sin_theta)
    w0 = np.where(small, 1 - u, np.sin((1 - u) * theta) / safe)
    w1 = np.where(small, u, np.sin(u * theta) / safe)
    q = w0 * q0 + w1 * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def mean_rotation(rotations: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted chordal mean: (k, n, 3, 3) rotations and (k, n) weights -> (n, 3, 3).

    The rotation nearest (Frobenius) to the weighted average of the matrices, found with an SVD
    (det fixed to +1). For two rotations about one axis it lies on the arc between them; it is
    the standard L2 mean on SO(3) and needs no iteration, unlike the geodesic (Karcher) mean.
    """
    weights = np.asarray(weights, dtype=np.float64)
    average = np.einsum("kn,knij->nij", weights, np.asarray(rotations, dtype=np.float64))
    u, _, vt = np.linalg.svd(average)
    fix = np.ones(u.shape[:-1])
    fix[..., -1] = np.sign(np.linalg.det(u @ vt))
    return (u * fix[..., None, :]) @ vt


def blend_actions(actions: np.ndarray, weights: np.ndarray, space: ActionSpace) -> np.ndarray:
    """Weighted mean of ``k`` predictions of ``n`` steps: (k, n, D) and (k, n) -> (n, D).

    Weights are normalised per step (a zero weight leaves a prediction out of that step). Joint
    angles, positions and the gripper average linearly; rotations with :func:`mean_rotation`.
    """
    actions = np.asarray(actions, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if actions.ndim != 3 or weights.shape != actions.shape[:2]:
        raise ValueError(
            f"actions must be (k, n, D) and weights (k, n), got {actions.shape} and {weights.shape}"
        )
    if np.any(weights < 0):
        raise ValueError("weights must be >= 0")
    total = weights.sum(axis=0)
    if np.any(total <= 0):
        raise ValueError("weights must have a positive sum at every step")
    w = weights / total
    mean = np.einsum("kn,knd->nd", w, actions)
    if space == "ee":
        rotation = mean_rotation(matrix_from_rot6d(actions[..., 3:9]), w)
        mean[:, 3:9] = rot6d_from_matrix(rotation)
    return mean


def check_actions(values: np.ndarray, space: ActionSpace, name: str) -> np.ndarray:
    """``values`` as float64 (n, D) for ``space``, or a ValueError that names ``name``."""
    values = np.asarray(values, dtype=np.float64)
    dim = ACTION_DIMS[space]
    if values.ndim != 2 or values.shape[1] != dim:
        raise ValueError(
            f"{name} must be (n, {dim}) for action_space={space!r}, got {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be finite")
    return values


def _hermite_basis(u: _U) -> tuple[_U, _U, _U, _U]:
    """Cubic Hermite basis at ``u`` in [0, 1]: weights of p0, h*m0, p1, h*m1."""
    return (1 + 2 * u) * (1 - u) ** 2, u * (1 - u) ** 2, u * u * (3 - 2 * u), u * u * (u - 1)


def _slerp_rot6d(q0: tuple[float, ...], q1: tuple[float, ...], u: float) -> list[float]:
    """:func:`slerp` of two quaternions, then the first two rows of its matrix, in floats."""
    dot = sum(a * b for a, b in zip(q0, q1, strict=True))
    sign = -1.0 if dot < 0 else 1.0
    theta = math.acos(min(abs(dot), 1.0))
    sin_theta = math.sin(theta)
    if sin_theta < _SMALL_ANGLE:
        w0, w1 = 1 - u, sign * u
    else:
        w0, w1 = math.sin((1 - u) * theta) / sin_theta, sign * math.sin(u * theta) / sin_theta
    w, x, y, z = (w0 * a + w1 * b for a, b in zip(q0, q1, strict=True))
    norm2 = w * w + x * x + y * y + z * z
    w, x, y, z = (c / math.sqrt(norm2) for c in (w, x, y, z))
    return [
        1 - 2 * (y * y + z * z),
        2 * (x * y - w * z),
        2 * (x * z + w * y),
        2 * (x * y + w * z),
        1 - 2 * (x * x + z * z),
        2 * (y * z - w * x),
    ]


class Trajectory:
    """Stamped waypoints and the rule that fills the time between them (see the module doc)."""

    def __init__(
        self,
        times: np.ndarray,
        values: np.ndarray,
        space: ActionSpace,
        interpolation: Interpolation = "linear",
        start_velocity: np.ndarray | None = None,
    ) -> None:
        times = np.asarray(times, dtype=np.float64)
        values = check_actions(values, space, "values")
        if times.shape != (len(values),) or len(values) == 0:
            raise ValueError(
                f"times must be (n,) with n >= 1 like values ({len(values)}), got {times.shape}"
            )
        if np.any(np.diff(times) <= 0):
            raise ValueError("times must be strictly increasing")
        if space == "ee" and interpolation == "cubic":
            raise ValueError("interpolation='cubic' is for joint actions; ee actions use 'linear'")
        if start_velocity is not None and interpolation != "cubic":
            raise ValueError("start_velocity is only used by interpolation='cubic'")
        self.times = times
        self.values = values
        self.space: ActionSpace = space
        self.interpolation: Interpolation = interpolation
        self._h = np.diff(times)
        self._times_list: list[float] = times.tolist()
        if space == "ee":
            quats = quaternion_from_matrix(matrix_from_rot6d(values[:, 3:9]))
            # Same hemisphere as the previous waypoint, so every segment turns the short way.
            for k in range(1, len(quats)):
                if np.dot(quats[k - 1], quats[k]) < 0:
                    quats[k] = -quats[k]
            self._quats = quats
            self._quat_list = [tuple(q) for q in quats.tolist()]
        elif interpolation == "cubic":
            self._tangents = self._catmull_rom(start_velocity)

    @property
    def start(self) -> float:
        return float(self.times[0])

    @property
    def end(self) -> float:
        return float(self.times[-1])

    def __call__(self, t: float) -> np.ndarray:
        """The target (D,) at time ``t``: :meth:`sample` for one tick, in scalar arithmetic.

        A controller calls this every 2 ms at 500 Hz; numpy's overhead on one-element arrays
        would make it several times slower than this path (same maths, tested equal).
        """
        times = self._times_list
        if len(times) == 1:
            return self.values[0].copy()
        k = min(max(bisect.bisect_right(times, t) - 1, 0), len(times) - 2)
        h = times[k + 1] - times[k]
        u = min(max((t - times[k]) / h, 0.0), 1.0)
        v0, v1 = self.values[k], self.values[k + 1]
        out = v0 + u * (v1 - v0)
        if self.space == "ee":
            out[3:9] = _slerp_rot6d(self._quat_list[k], self._quat_list[k + 1], u)
        elif self.interpolation == "cubic":
            h00, h10, h01, h11 = _hermite_basis(u)
            cubic = h00 * v0 + (h10 * h) * self._tangents[k] + h01 * v1
            out[:-1] = (cubic + (h11 * h) * self._tangents[k + 1])[:-1]
        return out

    def sample(self, ts: np.ndarray) -> np.ndarray:
        """Targets (m, D) at times ``ts`` (m,)."""
        ts = np.asarray(ts, dtype=np.float64)
        if len(self.times) == 1:
            return np.repeat(self.values, len(ts), axis=0)
        k, u = self._segments(ts)
        v0, v1 = self.values[k], self.values[k + 1]
        out = v0 + u[:, None] * (v1 - v0)  # linear everywhere; rotation/joints refined below
        if self.space == "ee":
            rotation = matrix_from_quaternion(slerp(self._quats[k], self._quats[k + 1], u))
            out[:, 3:9] = rot6d_from_matrix(rotation)
        elif self.interpolation == "cubic":
            h = self._h[k][:, None]
            m0, m1 = self._tangents[k], self._tangents[k + 1]
            h00, h10, h01, h11 = _hermite_basis(u[:, None])
            cubic = h00 * v0 + h10 * h * m0 + h01 * v1 + h11 * h * m1
            out[:, :-1] = cubic[:, :-1]  # the gripper stays linear
        return out

    def velocity(self, t: float) -> np.ndarray:
        """d/dt of a joint trajectory at ``t`` (D,); zero outside the waypoints (held there).

        The engine hands this to the next plan as its ``start_velocity`` so a cubic plan keeps
        the speed it had when a new chunk replaces it.
        """
        if self.space != "joint":
            raise ValueError("velocity() is defined for joint trajectories only")
        if len(self.times) == 1 or not self.start <= t <= self.end:
            return np.zeros(self.values.shape[1])
        k_arr, u_arr = self._segments(np.array([t], dtype=np.float64))
        k, u, h = int(k_arr[0]), float(u_arr[0]), float(self._h[k_arr[0]])
        v0, v1 = self.values[k], self.values[k + 1]
        slope = (v1 - v0) / h
        if self.interpolation == "linear":
            return slope
        m0, m1 = self._tangents[k], self._tangents[k + 1]
        d00, d10 = 6 * u * u - 6 * u, 3 * u * u - 4 * u + 1
        d01, d11 = -6 * u * u + 6 * u, 3 * u * u - 2 * u
        out = (d00 * v0 + d01 * v1) / h + d10 * m0 + d11 * m1
        out[-1] = slope[-1]
        return out

    def _segments(self, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Segment index and position ``u`` in [0, 1] of each time (clipped: holds outside)."""
        k = np.clip(np.searchsorted(self.times, ts, side="right") - 1, 0, len(self.times) - 2)
        u = np.clip((ts - self.times[k]) / self._h[k], 0.0, 1.0)
        return k, u

    def _catmull_rom(self, start_velocity: np.ndarray | None) -> np.ndarray:
        tangents = np.zeros_like(self.values)
        if len(self.times) >= 3:
            span = (self.times[2:] - self.times[:-2])[:, None]
            tangents[1:-1] = (self.values[2:] - self.values[:-2]) / span
        if start_velocity is not None:
            start_velocity = np.asarray(start_velocity, dtype=np.float64)
            if start_velocity.shape != (self.values.shape[1],):
                raise ValueError(
                    f"start_velocity must be ({self.values.shape[1]},), got {start_velocity.shape}"
                )
            tangents[0] = start_velocity
        return tangents
