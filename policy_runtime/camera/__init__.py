"""RealSense cameras, without ROS: configuration, clock mapping, per-frame bookkeeping (these
import neither rclpy nor pyrealsense2), and the device side on pyrealsense2: ``device`` (find,
configure, open), ``stream`` (the frame thread, reconnects) and ``software`` (a software device
with a test pattern, for machines without a camera)."""

from policy_runtime.camera.clock import ClockOffset, FrameClock, FrameTime
from policy_runtime.camera.config import CameraConfig
from policy_runtime.camera.frames import CameraFrame, Intrinsics, depth_to_mm
from policy_runtime.camera.stats import CameraSnapshot, CameraStats

__all__ = [
    "CameraConfig",
    "CameraFrame",
    "CameraSnapshot",
    "CameraStats",
    "ClockOffset",
    "FrameClock",
    "FrameTime",
    "Intrinsics",
    "depth_to_mm",
]
