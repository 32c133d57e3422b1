"""Hand-eye calibration on a live graph (``prt calibrate handeye``, ``prt-calibrate``).

The node takes the policy server's place in front of the executor (as teleop does), with joint
actions: each chunk steps from the last commanded joints toward the current pose's joints at
``max_joint_speed_rad_s``, so the arm moves through the executor's whole safety stack. Once the
measured joints are within 2 mrad of the pose and have been still for ``settle_s``, the
camera's next image (stamped after that) and the joints become a stop
(:class:`~calibration.capture.CaptureRun`); then the next pose. After the last, it solves with
the camera's ``camera_info`` (factory intrinsics; or estimates them), writes the calibration
YAML and the report, and exits (0 when written, 1 when the solve refused the data, saying
what to capture). The same run works against the sim graph (the sim bridge with
``calibration_board``) and the real one.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header, String
from trajectory_msgs.msg import JointTrajectory

from calibration.capture import CalibrateConfig, CaptureRun, Stop
from calibration.handeye import HandEyeError
from calibration.intrinsics import CameraIntrinsics
from policy_runtime.chunk import ActionChunk
from policy_runtime.robots.ur5 import JOINT_NAMES
from policy_runtime.ros import qos
from policy_runtime.ros.executor_node import (
    INFO_TOPIC,
    JOINT_CHUNK_TOPIC,
    OBSERVED_TOPIC,
    REQUEST_TOPIC,
)
from policy_runtime.ros.messages import chunk_to_msg, request_from_msg, seconds, stamp
from policy_runtime.ros.params import Param, declare_parameters
from policy_runtime.serving.decode import DecodeError, NamePicker
from policy_runtime.serving.server import PolicyInfo
from policy_runtime.serving.topics import image_pixels

PARAMETERS = {
    "config": Param("", "the calibration config (config/calibrate_*.yaml)"),
    "output": Param("", "the calibration YAML to write"),
    "camera_namespace": Param("camera", "topics /<namespace>/<camera>/color/..."),
}

CONTROL_DT = 0.1
CHUNK_LENGTH = 10
#: A pose is commanded within this (rad, every joint); the arm is still below this (rad/s).
REACHED_RAD = 2e-3
STILL_RAD_S = 5e-3
#: Still this long short of a pose: the arm stays there (held by the safety stack).
HELD_S = 3.0
#: A pose the arm has not settled at after this long (ROS time) is skipped, and reported.
POSE_TIMEOUT_S = 30.0


class CalibrateNode(Node):
    """See the module docs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("calibrate", **kwargs)
        p = declare_parameters(self, PARAMETERS)
        if not p["config"] or not p["output"]:
            raise ValueError("parameters 'config' and 'output': give both")
        self.config = CalibrateConfig.load(p["config"])
        self.output = Path(p["output"])
        self.run = CaptureRun(self.config)
        self.info = PolicyInfo(
            kind="calibration",
            action_space="joint",
            action_dim=7,  # the six joints and the gripper, held where it is
            chunk_length=CHUNK_LENGTH,
            n_action_steps=1,
            dt=CONTROL_DT,
            offset_steps=1,
            obs_keys=(),
        )
        self.exit_code: int | None = None
        self._lock = threading.Lock()
        self._joints = NamePicker(JOINT_NAMES)
        self._q: np.ndarray | None = None
        self._q_stamp = 0.0
        self._still_since: float | None = None
        self._reached = False
        self._poses: list[Any] | None = None
        self._index = 0
        self._image: tuple[float, Image] | None = None
        self._intrinsics: CameraIntrinsics | None = None
        self._gripper = 1.0
        self._pose_since: float | None = None
        base = f"/{p['camera_namespace']}/{self.config.camera}/color"
        info = self.create_publisher(String, INFO_TOPIC, qos.LATCHED)
        info.publish(String(data=self.info.to_json()))
        self._info_pub = info
        self.pub_chunk = self.create_publisher(JointTrajectory, JOINT_CHUNK_TOPIC, qos.STREAM)
        self.pub_observed = self.create_publisher(Header, OBSERVED_TOPIC, qos.STREAM)
        self.create_subscription(JointTrajectory, REQUEST_TOPIC, self._on_request, qos.STREAM)
        self.create_subscription(JointState, "/joint_states", self._on_joints, qos.NEWEST)
        self.create_subscription(JointState, "/gripper/joint_states", self._on_gripper, qos.STREAM)
        self.create_subscription(Image, f"{base}/image_raw", self._on_image, qos.SENSOR)
        self.create_subscription(CameraInfo, f"{base}/camera_info", self._on_info, qos.SENSOR)
        self.create_timer(0.05, self._step)
        self.get_logger().info(
            f"{self.config.mode} calibration of {self.config.camera}: {self.config.poses} poses"
        )

    # -- inputs ---------------------------------------------------------------------------------

    def _on_joints(self, msg: JointState) -> None:
        try:
            q = self._joints(msg.name, msg.position).astype(np.float64)
            v = self._joints(msg.name, msg.velocity).astype(np.float64)
        except DecodeError:
            return
        t = seconds(msg.header.stamp)
        with self._lock:
            self._q, self._q_stamp = q, t
            target = self._target()
            if target is not None and np.max(np.abs(v)) < STILL_RAD_S:
                self._still_since = t if self._still_since is None else self._still_since
                self._reached = bool(np.max(np.abs(q - target)) < REACHED_RAD)
            else:
                self._still_since = None
        self.pub_observed.publish(Header(stamp=stamp(t)))

    def _on_gripper(self, msg: JointState) -> None:
        if "gripper" in msg.name:  # held as measured: a gripper holding the board keeps it
            self._gripper = float(msg.position[list(msg.name).index("gripper")])

    def _on_image(self, msg: Image) -> None:
        with self._lock:
            self._image = (seconds(msg.header.stamp), msg)

    def _on_info(self, msg: CameraInfo) -> None:
        if self._intrinsics is None and self.config.use_camera_info:
            k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
            self._intrinsics = CameraIntrinsics.from_matrix(
                k, int(msg.width), int(msg.height), tuple(float(v) for v in msg.d)
            )

    # -- motion ---------------------------------------------------------------------------------

    def _target(self) -> np.ndarray | None:
        if self._poses is None or self._index >= len(self._poses):
            return None
        return np.asarray(self._poses[self._index].q)

    def _on_request(self, msg: JointTrajectory) -> None:
        t, _ = request_from_msg(msg, self.info)
        with self._lock:
            target, q = self._target(), self._q
            if q is None:
                return
            # From the measured arm, not the last command: each chunk starts where the arm is,
            # so one the safety stack slowed never runs away from it.
            goal = target if target is not None else q
            step = self.config.max_joint_speed_rad_s * CONTROL_DT
            waypoints = []
            here = q.copy()
            for _ in range(CHUNK_LENGTH):
                here = here + np.clip(goal - here, -step, step)
                waypoints.append(here.copy())
        actions = np.column_stack([np.array(waypoints), np.full(CHUNK_LENGTH, self._gripper)])
        chunk = ActionChunk.from_actions(actions, 1, CONTROL_DT, 1)
        self.pub_chunk.publish(chunk_to_msg(chunk, t, self.info))

    # -- the run --------------------------------------------------------------------------------

    def _step(self) -> None:
        if self.exit_code is not None:
            return
        with self._lock:
            if self._poses is None:
                if self._q is None:
                    return
                self._poses = self.config.plan(self._q)
                self.get_logger().info(f"planned {len(self._poses)} poses")
                return
            if self._index >= len(self._poses):
                self._finish()
                return
            still = self._still_since
            image = self._image
            if self._pose_since is None:
                self._pose_since = self._q_stamp
            if self._q_stamp - self._pose_since > POSE_TIMEOUT_S:
                index, q = self._index, self._q
                self._index, self._pose_since, self._still_since = index + 1, None, None
                assert q is not None
                self.run.stops.append(
                    Stop(index, q, None, f"the arm did not settle in {POSE_TIMEOUT_S:g} s")
                )
                self.get_logger().warning(f"pose {index + 1}: skipped (did not settle)")
                return
            # At the pose and still for settle_s; or still for HELD_S short of it (the safety
            # stack holds it there: the measured joints still make a capture).
            wait = self.config.settle_s if self._reached else HELD_S
            if still is None or self._q_stamp - still < wait:
                return
            if image is None or image[0] < still + wait:
                return  # the next frame after settling
            q = self._q
            assert q is not None
            index = self._index
            self._index += 1
            self._still_since = self._pose_since = None
        stop = self.run.record(index, q, image_pixels(image[1]))
        seen = f"{len(stop.view.ids)} corners" if stop.view is not None else stop.rejected
        self.get_logger().info(f"pose {index + 1}/{len(self._poses)}: {seen}")

    def _finish(self) -> None:
        intrinsics = self._intrinsics if self.config.use_camera_info else None
        try:
            calibration = self.run.solve(intrinsics)
        except (HandEyeError, ValueError) as exc:
            self.get_logger().error(f"{self.run.report()}\nnot solved: {exc}")
            self.exit_code = 1
        else:
            calibration.save(self.output)
            self.get_logger().info(f"{self.run.report()}\nwrote {self.output}")
            self.exit_code = 0
        rclpy.try_shutdown()


def run(args: list[str] | None = None) -> int:
    """Run the node until it has written the calibration (0), refused the data (1) or was
    stopped; the process's exit status."""
    from policy_runtime.ros.params import run_nodes

    nodes: list[CalibrateNode] = []

    def make() -> list[Node]:
        nodes.append(CalibrateNode())
        return list(nodes)

    code = run_nodes(make, args=args)
    return code or (nodes[0].exit_code or 0 if nodes else 0)


def main() -> None:
    raise SystemExit(run())
