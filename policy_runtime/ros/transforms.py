"""Transforms for ``/tf`` and ``/tf_static``, where ``tf2_msgs`` is importable.

The pip wheels of ROS 2 Jazzy have no ``tf2_msgs``: there :func:`tf_publisher` says once what is
not published and why, and returns None, so a node runs the same with or without it. The
transforms themselves are built from ``geometry_msgs`` (always there): :func:`static_transform`
is the pure part (numbers and frame names), :func:`transform_stamped` the message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile

from policy_runtime.robots.poses import quaternion_from_matrix

if TYPE_CHECKING:
    from calibration.result import CameraCalibration


class StaticTransform(NamedTuple):
    """``child`` in ``parent``: translation (m) and rotation as a unit quaternion (x, y, z, w)."""

    translation: tuple[float, float, float]
    rotation_xyzw: tuple[float, float, float, float]
    parent: str
    child: str


def static_transform(calibration: CameraCalibration) -> StaticTransform:
    """A camera calibration's ``parent_frame -> child_frame`` (the optical frame's pose in
    ``base_link`` or ``tool0``), its quaternion normalised."""
    pose = calibration.parent_from_optical
    quaternion = quaternion_from_matrix(pose[:3, :3])
    return StaticTransform(
        tuple(float(v) for v in pose[:3, 3]),  # type: ignore[arg-type]
        tuple(float(v) for v in quaternion),  # type: ignore[arg-type]
        calibration.parent_frame,
        calibration.child_frame,
    )


def transform_stamped(
    translation: tuple[float, float, float] | np.ndarray,
    rotation_xyzw: tuple[float, float, float, float] | np.ndarray,
    parent: str,
    child: str,
    header_stamp: Time,
) -> TransformStamped:
    """``child`` in ``parent`` as a ``geometry_msgs/TransformStamped``."""
    transform = TransformStamped()
    transform.header.stamp, transform.header.frame_id = header_stamp, parent
    transform.child_frame_id = child
    t = transform.transform
    t.translation.x, t.translation.y, t.translation.z = (float(v) for v in translation)
    r = t.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in rotation_xyzw)
    return transform


def tf_publisher(node: Node, topic: str, profile: QoSProfile, missing: str) -> Publisher | None:
    """A ``tf2_msgs/TFMessage`` publisher on ``topic``, or None where tf2_msgs is not
    importable (ROS 2 from the pip wheels), logged once with ``missing`` (what is not
    published, and where the information is instead)."""
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError:
        node.get_logger().info(
            f"tf2_msgs is not importable (ROS 2 from the pip wheels): no {topic}; {missing}"
        )
        return None
    return node.create_publisher(TFMessage, topic, profile)


def tf_message(transforms: list[TransformStamped]) -> object:
    """A ``tf2_msgs/TFMessage`` of ``transforms`` (only where :func:`tf_publisher` gave a
    publisher)."""
    from tf2_msgs.msg import TFMessage

    return TFMessage(transforms=transforms)
