"""Between ROS 2 messages and the cores' types: stamps, chunks, requests, images.

Chunks travel as the architecture says: ``trajectory_msgs/JointTrajectory`` for joint actions
(the six UR joints, then ``gripper`` when the action has one) and
``trajectory_msgs/MultiDOFJointTrajectory`` for end-effector actions (joint ``tcp``: the TCP
pose in ``base_link``; joint ``gripper``: the opening in ``translation.x``, 0 closed to 1 open),
``header.stamp = t_obs`` and ``time_from_start`` the actions' due times after it.

A chunk request (executor -> server) is a ``JointTrajectory`` stamped with the request time;
for real-time chunking its points carry the committed prefix: ``positions`` the action,
``effort[0]`` its weight, ``time_from_start`` its due time after the request. No points: none.
"""

from __future__ import annotations

import array
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import PoseStamped, Transform
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import (
    JointTrajectory,
    JointTrajectoryPoint,
    MultiDOFJointTrajectory,
    MultiDOFJointTrajectoryPoint,
)

from policy_runtime.chunk import ActionChunk, ChunkPrefix
from policy_runtime.robots.poses import (
    ee_action_to_pose,
    matrix_from_quaternion,
    pose_to_ee_action,
    quaternion_from_matrix,
)
from policy_runtime.robots.ur5 import JOINT_NAMES
from policy_runtime.serving.server import PolicyInfo

#: The message type of each observation source type (:mod:`policy_runtime.serving.topics`).
SOURCE_MESSAGES: dict[str, type] = {"joint_state": JointState, "pose": PoseStamped, "image": Image}

GRIPPER = "gripper"
TCP = "tcp"
BASE_FRAME = "base_link"


def seconds(stamp: Time | Duration) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _split(t: float) -> tuple[int, int]:
    ns = round(t * 1e9)
    return ns // 1_000_000_000, ns % 1_000_000_000


def stamp(t: float) -> Time:
    sec, nanosec = _split(t)
    return Time(sec=sec, nanosec=nanosec)


def duration(t: float) -> Duration:
    sec, nanosec = _split(t)
    return Duration(sec=sec, nanosec=nanosec)


def action_names(info: PolicyInfo) -> list[str]:
    """The names of a joint action's components: the six UR joints (+ ``gripper``)."""
    return [*JOINT_NAMES, GRIPPER][: info.action_dim]


def chunk_to_msg(
    chunk: ActionChunk, t_obs: float, info: PolicyInfo
) -> JointTrajectory | MultiDOFJointTrajectory:
    if info.action_space == "joint":
        msg = JointTrajectory()
        msg.header.stamp = stamp(t_obs)
        msg.joint_names = action_names(info)
        msg.points = [
            JointTrajectoryPoint(positions=[float(v) for v in a], time_from_start=duration(s))
            for a, s in zip(chunk.actions, chunk.stamps, strict=True)
        ]
        return msg
    multi = MultiDOFJointTrajectory()
    multi.header.stamp = stamp(t_obs)
    multi.header.frame_id = BASE_FRAME
    multi.joint_names = [TCP, GRIPPER]
    for action, due in zip(chunk.actions, chunk.stamps, strict=True):
        pose, gripper = ee_action_to_pose(action)
        tcp = Transform()
        tcp.translation.x, tcp.translation.y, tcp.translation.z = (float(v) for v in pose[:3, 3])
        q = quaternion_from_matrix(pose[:3, :3])
        tcp.rotation.x, tcp.rotation.y, tcp.rotation.z, tcp.rotation.w = (float(v) for v in q)
        opening = Transform()
        opening.translation.x = float(gripper)
        multi.points.append(
            MultiDOFJointTrajectoryPoint(transforms=[tcp, opening], time_from_start=duration(due))
        )
    return multi


def no_chunk_msg(t_request: float, info: PolicyInfo) -> JointTrajectory | MultiDOFJointTrajectory:
    """The answer to a request that gets no chunk: no points, stamped with the request."""
    msg = JointTrajectory() if info.action_space == "joint" else MultiDOFJointTrajectory()
    msg.header.stamp = stamp(t_request)
    return msg


def chunk_from_msg(
    msg: JointTrajectory | MultiDOFJointTrajectory, info: PolicyInfo
) -> tuple[ActionChunk, float] | None:
    """The chunk and its ``t_obs``; None for the answer "no chunk" (:func:`no_chunk_msg`);
    ValueError names what does not fit ``info``."""
    if not msg.points:
        return None
    t_obs = seconds(msg.header.stamp)
    if t_obs <= 0.0:
        raise ValueError("a chunk stamped 0 (a clock that is not running)")
    due = np.array([seconds(p.time_from_start) for p in msg.points])
    if isinstance(msg, JointTrajectory):
        if info.action_space != "joint":
            raise ValueError("a joint trajectory for an end-effector policy")
        if list(msg.joint_names) != action_names(info):
            raise ValueError(f"joint names {list(msg.joint_names)}, expected {action_names(info)}")
        rows = [list(p.positions) for p in msg.points]
        if any(len(r) != info.action_dim for r in rows):
            raise ValueError(f"a point without {info.action_dim} positions")
        actions = np.array(rows, dtype=np.float64)
    else:
        if info.action_space != "ee":
            raise ValueError("a multi-DOF trajectory for a joint policy")
        if list(msg.joint_names) != [TCP, GRIPPER]:
            raise ValueError(f"joint names {list(msg.joint_names)}, expected {[TCP, GRIPPER]}")
        actions = np.empty((len(msg.points), info.action_dim))
        for i, point in enumerate(msg.points):
            if len(point.transforms) != 2:
                raise ValueError("a point without a tcp and a gripper transform")
            tcp, opening = point.transforms
            q = [tcp.rotation.x, tcp.rotation.y, tcp.rotation.z, tcp.rotation.w]
            if not np.all(np.isfinite(q)) or np.linalg.norm(q) < 0.5:
                raise ValueError("a tcp rotation that is not a quaternion")
            pose = np.eye(4)
            pose[:3, :3] = matrix_from_quaternion(np.array(q))
            pose[:3, 3] = [tcp.translation.x, tcp.translation.y, tcp.translation.z]
            actions[i] = pose_to_ee_action(pose, opening.translation.x)
    return ActionChunk(actions, due, min(info.n_action_steps, len(actions)), info.dt), t_obs


@dataclass(frozen=True)
class Prefix:
    """A committed prefix as the server receives it (a :class:`ChunkPrefix`)."""

    actions: np.ndarray
    weights: np.ndarray


def request_to_msg(t_request: float, prefix: ChunkPrefix | None) -> JointTrajectory:
    msg = JointTrajectory()
    msg.header.stamp = stamp(t_request)
    if prefix is not None:
        msg.points = [
            JointTrajectoryPoint(positions=[float(v) for v in a], effort=[float(w)])
            for a, w in zip(prefix.actions, prefix.weights, strict=True)
        ]
    return msg


def request_from_msg(msg: JointTrajectory, info: PolicyInfo) -> tuple[float, Prefix | None]:
    t = seconds(msg.header.stamp)
    if t <= 0.0:
        raise ValueError("a request stamped 0 (a clock that is not running)")
    if not msg.points:
        return t, None
    rows = [list(p.positions) for p in msg.points]
    if any(len(row) != info.action_dim for row in rows):
        raise ValueError(f"a prefix whose actions are not {info.action_dim}-dimensional")
    actions = np.array(rows, dtype=np.float64)
    weights = np.array([p.effort[0] if len(p.effort) else 0.0 for p in msg.points])
    if not np.all(np.isfinite(actions)) or not np.all((weights >= 0.0) & (weights <= 1.0)):
        raise ValueError("a prefix with non-finite actions or weights outside [0, 1]")
    return t, Prefix(actions, weights)


def image_to_msg(pixels: np.ndarray, t: float, frame_id: str, encoding: str) -> Image:
    """An (H, W) or (H, W, C) array as a sensor_msgs/Image (``rgb8`` or ``16UC1``) holding one
    copy of the pixels: an ``array.array``, which the message keeps as it is (a ``bytes`` value
    would be copied again, element by element when checked)."""
    pixels = np.ascontiguousarray(pixels)
    data = array.array("B")
    data.frombytes(pixels.data.cast("B"))
    msg = Image(
        height=int(pixels.shape[0]),
        width=int(pixels.shape[1]),
        encoding=encoding,
        is_bigendian=0,
        step=pixels[0].nbytes,
        data=data,
    )
    msg.header.stamp = stamp(t)
    msg.header.frame_id = frame_id
    return msg
