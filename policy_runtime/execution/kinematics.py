"""End-effector targets to joint commands: the tool offset, the IK branch, and why it failed.

A policy with ``action_space="ee"`` predicts poses of the tool centre point (TCP, between the
fingertips) in ``base_link``; the arm's kinematics (:mod:`policy_runtime.robots.ur5`,
:mod:`policy_runtime.robots.ur5_ik`) ends at ``tool0``. :class:`EeToJoint` holds the offset
between the two (a parameter, so a different gripper is a configuration change and the deploy
core does not import the simulator) and picks, among the up to 8 IK branches, the one nearest
the previous joint command, which is what keeps a path on one branch from tick to tick.

An unreachable or malformed target is not an exception on this path: it comes back as an
:class:`IkSolution` with ``q=None`` and a reason, and the control loop holds. Only a caller's
programming error (wrong shapes, a NaN ``q_near``) raises. numpy only; a spatialmath ``SE3`` is
accepted where a caller has one, without importing spatialmath here (see :func:`tcp_target`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

import numpy as np

from policy_runtime.robots.poses import EE_ACTION_DIM, ee_action_to_pose, rot6d_from_matrix
from policy_runtime.robots.ur5 import UR5_DH, UR5_POSITION_LIMITS, DHParameters, forward_kinematics
from policy_runtime.robots.ur5_ik import inverse_kinematics, inverse_kinematics_all

if TYPE_CHECKING:
    from spatialmath import SE3

__all__ = [
    "DEFAULT_TCP_OFFSET_M",
    "DEFAULT_TOOL0_TO_TCP",
    "EeTarget",
    "EeToJoint",
    "IkFailure",
    "IkSolution",
    "tcp_target",
]

#: tool0 -> TCP distance along tool0's z of the 2F-85-like gripper the simulated cell carries
#: (``sim_bridge.models.gripper.TCP_OFFSET_M``; a test holds the two equal). Written here, not
#: imported, because the deploy core must not depend on the simulator.
DEFAULT_TCP_OFFSET_M = 0.145
#: tool0 -> TCP as a 4x4 transform: a pure translation along tool0's z.
DEFAULT_TOOL0_TO_TCP = np.eye(4)
DEFAULT_TOOL0_TO_TCP[2, 3] = DEFAULT_TCP_OFFSET_M
DEFAULT_TOOL0_TO_TCP.setflags(write=False)

#: Why a target gave no joint command: it is not a pose (NaN, a degenerate 6D rotation, a
#: matrix that is not a rigid transform), no IK branch reaches it, or every branch that reaches
#: it leaves the joint limits.
IkFailure = Literal["invalid_target", "unreachable", "outside_joint_limits"]

#: What :meth:`EeToJoint.solve` accepts: a 10-D end-effector action (position, 6D rotation,
#: gripper), a 4x4 TCP pose, or a spatialmath ``SE3`` (one pose).
EeTarget: TypeAlias = "np.ndarray | SE3"

_RIGID_TOL = 1e-6


@dataclass(frozen=True)
class IkSolution:
    """Joints for a target, or the reason there are none (then ``q`` is None: hold)."""

    #: Joint positions (6,) in rad, within the limits, nearest the ``q_near`` given; or None.
    q: np.ndarray | None
    #: The gripper opening carried by a 10-D action; None for a bare pose.
    gripper: float | None
    failure: IkFailure | None

    @property
    def ok(self) -> bool:
        return self.q is not None


def tcp_target(target: EeTarget) -> tuple[np.ndarray, float | None]:
    """``target`` as (4x4 float64 TCP pose, gripper opening or None). Values are not checked
    here (a NaN pose passes through), only the form: an unknown form is a ValueError.

    An ``SE3`` is recognised without importing spatialmath: if the caller holds one, the module
    is already in ``sys.modules``, so the deploy core never pays for (or needs) the import.
    """
    spatialmath = sys.modules.get("spatialmath")
    if spatialmath is not None and isinstance(target, spatialmath.SE3):
        if len(target) != 1:
            raise ValueError(f"target must be a single SE3 pose, got {len(target)} poses")
        return np.array(target.A, dtype=np.float64), None
    array = np.asarray(target, dtype=np.float64)
    if array.shape == (EE_ACTION_DIM,):
        with np.errstate(invalid="ignore", divide="ignore"):  # a degenerate 6D gives NaN
            return ee_action_to_pose(array)
    if array.shape == (4, 4):
        return array, None
    raise ValueError(
        f"target must be a ({EE_ACTION_DIM},) end-effector action, a 4x4 pose or an SE3, "
        f"got shape {array.shape}"
    )


def _check_tool_offset(tool0_to_tcp: np.ndarray) -> np.ndarray:
    offset = np.array(tool0_to_tcp, dtype=np.float64)
    if offset.shape != (4, 4) or not np.all(np.isfinite(offset)):
        raise ValueError(f"tool0_to_tcp must be a finite 4x4 transform, got shape {offset.shape}")
    rotation = offset[:3, :3]
    if (
        np.abs(offset[3] - (0.0, 0.0, 0.0, 1.0)).max() > _RIGID_TOL
        or np.abs(rotation.T @ rotation - np.eye(3)).max() > _RIGID_TOL
        or np.linalg.det(rotation) < 0.0
    ):
        raise ValueError("tool0_to_tcp must be a rigid transform (proper rotation, last row 0001)")
    return offset


class EeToJoint:
    """TCP targets in ``base_link`` to UR5 joint commands, and joints back to TCP poses.

    ``tool0_to_tcp`` is the pose of the TCP in ``tool0`` (default: the simulated gripper's,
    :data:`DEFAULT_TOOL0_TO_TCP`); ``dh`` and ``limits`` are the arm's (the UR5's by default;
    tighter ``limits`` exclude branches).
    """

    def __init__(
        self,
        tool0_to_tcp: np.ndarray = DEFAULT_TOOL0_TO_TCP,
        dh: DHParameters = UR5_DH,
        limits: tuple[tuple[float, float], ...] = UR5_POSITION_LIMITS,
    ) -> None:
        self.tool0_to_tcp = _check_tool_offset(tool0_to_tcp)
        self.tool0_to_tcp.setflags(write=False)
        self._tcp_to_tool0 = np.linalg.inv(self.tool0_to_tcp)
        self.dh = dh
        self.limits = limits
        #: An upper bound of the TCP's distance from any joint axis (m): the TCP moves at most
        #: this far per radian of any one joint, so at most ``max_lever_m * sum|dq|`` along a
        #: joint-space step. The link lengths and offsets and the tool's reach, summed.
        self.max_lever_m = float(
            np.abs(dh.a).sum() + np.abs(dh.d).sum() + np.linalg.norm(self.tool0_to_tcp[:3, 3])
        )

    def solve(self, target: EeTarget, q_near: np.ndarray) -> IkSolution:
        """Joints putting the TCP at ``target``, on the branch nearest ``q_near`` (6,).

        Pass the previous joint command as ``q_near``: the nearest solution in joint space is
        the one a control step can reach, so consecutive targets along a path stay on one
        branch (see :func:`~policy_runtime.robots.ur5_ik.inverse_kinematics`). A branch flip
        still happens where the path leaves the current branch's reach; the safety filter's
        joint-jump limit refuses it.
        """
        q_near = np.asarray(q_near, dtype=np.float64)
        if q_near.shape != (6,) or not np.all(np.isfinite(q_near)):
            raise ValueError(f"q_near must be 6 finite joint positions, got {q_near!r}")
        tcp, gripper = tcp_target(target)
        tool0 = tcp @ self._tcp_to_tool0
        try:
            q = inverse_kinematics(tool0, q_near=q_near, dh=self.dh, limits=self.limits)
        except ValueError:  # q_near is checked above: only the pose's values are left to fail
            return IkSolution(None, gripper, "invalid_target")
        if q is None:
            # Off the hot path: tell "no branch reaches it" from "none fits the limits".
            reachable = len(inverse_kinematics_all(tool0, self.dh, q_hint=q_near)) > 0
            return IkSolution(None, gripper, "outside_joint_limits" if reachable else "unreachable")
        return IkSolution(q, gripper, None)

    def forward(self, q: np.ndarray) -> np.ndarray:
        """TCP pose (4x4) in ``base_link`` for joint positions ``q`` (6,)."""
        return forward_kinematics(q, self.dh) @ self.tool0_to_tcp

    def tcp_position(self, q: np.ndarray) -> np.ndarray:
        """TCP position (3,) in ``base_link`` for joint positions ``q`` (6,)."""
        return self.forward(q)[:3, 3]

    def ee_action(self, q: np.ndarray, gripper: float) -> np.ndarray:
        """The 10-D end-effector action (float64) of joints ``q`` and a gripper opening: the
        form a policy's actions take, e.g. to compare a command with the previous one."""
        pose = self.forward(q)
        return np.concatenate([pose[:3, 3], rot6d_from_matrix(pose[:3, :3]), [gripper]])
