"""A RealSense camera on realsense-ros 4.x's topics, over :mod:`policy_runtime.camera`.

Topics (``<base>`` = ``/<camera_namespace>/<camera_name>``, the namespace may be empty):
``<base>/color/image_raw`` (rgb8), ``<base>/color/camera_info``,
``<base>/aligned_depth_to_color/image_raw`` (16UC1, millimetres, 0 = no depth) and
``<base>/aligned_depth_to_color/camera_info`` (the colour intrinsics: depth is aligned to colour).
Every message's ``frame_id`` is the colour optical frame, ``<camera_name>_color_optical_frame``,
and its stamp the frame's capture time on the ROS clock (:mod:`policy_runtime.camera.clock`).

Images are published from the camera's frame thread, each copied once from librealsense's buffer
into its message. ``/diagnostics``: frames published, dropped and skipped, stalls, removals,
reconnects, measured fps and capture-to-publish latency; WARN while the camera is not streaming,
ERROR, naming the serial, while it cannot be opened.

``device: test_pattern`` streams a librealsense software device's test pattern instead of a
camera (:mod:`policy_runtime.camera.software`): the whole graph runs on a machine without one.

With a ``deployment`` whose camera has a ``calibration`` (``prt calibrate handeye``'s YAML),
the node publishes it once on ``/tf_static`` as tf2's static broadcaster does (reliable,
transient local): ``base_link`` (or ``tool0``) to ``<camera_name>_color_optical_frame``. Where
``tf2_msgs`` is not importable (the pip wheels) it says so once and publishes none; a
calibration file that does not exist yet (the camera runs while it is being calibrated) is a
warning, one that does not load or is another camera's stops the node.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy._rclpy_pybind11 import RCLError
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.publisher import Publisher
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from policy_runtime.camera.config import CameraConfig
from policy_runtime.camera.device import CameraError, DeviceHub
from policy_runtime.camera.frames import CameraFrame, Intrinsics
from policy_runtime.camera.software import DEFAULT_SERIAL, SoftwareCamera
from policy_runtime.camera.stream import Camera
from policy_runtime.ros import qos
from policy_runtime.ros.diagnostics import diagnostic_array, millisecond_quantiles
from policy_runtime.ros.messages import image_to_msg, stamp
from policy_runtime.ros.params import Param, ParameterError, declare_parameters, one_of, positive
from policy_runtime.ros.transforms import (
    static_transform,
    tf_message,
    tf_publisher,
    transform_stamped,
)

_TOKEN = r"[A-Za-z_][A-Za-z0-9_]*"


def _ros_name(value: str) -> str | None:
    return None if re.fullmatch(_TOKEN, value) else "must be a ROS name ([A-Za-z_][A-Za-z0-9_]*)"


def _ros_namespace(value: str) -> str | None:
    if value == "" or re.fullmatch(f"{_TOKEN}(/{_TOKEN})*", value):
        return None
    return "must be '' or ROS names separated by '/'"


def _auto_or_positive(value: float) -> str | None:
    return None if value != 0 else "must be > 0 (or < 0 for automatic)"


PARAMETERS = {
    "camera_name": Param(
        "camera", "topics /<camera_namespace>/<camera_name>/..., frames <camera_name>_*", _ros_name
    ),
    "camera_namespace": Param("camera", "the topics' namespace ('' : none)", _ros_namespace),
    "serial_no": Param(
        "", "the device's serial ('' : the only one connected; quote a numeric one: \"'0123'\")"
    ),
    "device": Param(
        "realsense",
        "realsense: a connected camera; test_pattern: a librealsense software device's pattern",
        one_of("realsense", "test_pattern"),
    ),
    "width": Param(640, "colour (and aligned depth) width, pixels", positive),
    "height": Param(480, "colour (and aligned depth) height, pixels", positive),
    "fps": Param(30, "colour and depth frames per second", positive),
    "enable_depth": Param(True, "publish depth aligned to colour (16UC1, millimetres)"),
    "exposure_us": Param(-1.0, "colour exposure, microseconds (< 0: auto)", _auto_or_positive),
    "white_balance_k": Param(-1.0, "colour white balance, kelvin (< 0: auto)", _auto_or_positive),
    "laser_power_mw": Param(-1.0, "projector power, milliwatts (< 0: the device's; 0: off)"),
    "sync_mode": Param(
        "default",
        "inter-camera hardware sync (inter_cam_sync_mode): default, master or slave",
        one_of("default", "master", "slave"),
    ),
    "reconnect_period_s": Param(1.0, "seconds between attempts to open a lost device", positive),
    "frame_timeout_s": Param(1.0, "no frame for this long: close and reopen the device", positive),
    "image_qos": Param(
        "SYSTEM_DEFAULT",
        "image and camera_info QoS: SYSTEM_DEFAULT (reliable, as realsense-ros) or SENSOR_DATA",
        one_of("SYSTEM_DEFAULT", "SENSOR_DATA"),
    ),
    "diagnostics_period_s": Param(1.0, "seconds between /diagnostics messages", positive),
    "deployment": Param("", "deployment YAML: its cameras.<camera_name> replaces the above"),
}

#: The parameter of each :class:`CameraConfig` field whose name differs.
FIELD_PARAMETERS = {"serial": "serial_no", "depth": "enable_depth"}


def camera_config(params: Mapping[str, Any]) -> tuple[CameraConfig, str]:
    """The camera's settings and topic namespace, from the node's parameters or, with
    ``deployment``, from the deployment file's ``cameras.<camera_name>`` and
    ``camera_namespace``: the one place they are built."""
    if params["deployment"]:
        from policy_runtime.deployment.config import DeploymentConfig

        cell = DeploymentConfig.load(params["deployment"])
        name = params["camera_name"]
        if name not in cell.cameras:
            raise ValueError(
                f"deployment {params['deployment']}: no camera {name!r} under cameras (it has "
                f"{sorted(cell.cameras)})"
            )
        return cell.cameras[name], cell.camera_namespace

    def auto(value: float) -> float | None:
        return None if value < 0 else value

    config = CameraConfig(
        serial=params["serial_no"],
        width=params["width"],
        height=params["height"],
        fps=params["fps"],
        depth=params["enable_depth"],
        exposure_us=auto(params["exposure_us"]),
        white_balance_k=auto(params["white_balance_k"]),
        laser_power_mw=auto(params["laser_power_mw"]),
        sync_mode=params["sync_mode"],
        reconnect_period_s=params["reconnect_period_s"],
        frame_timeout_s=params["frame_timeout_s"],
    )
    return config, params["camera_namespace"]


def camera_info(intrinsics: Intrinsics) -> CameraInfo:
    """CameraInfo as realsense-ros fills it (``BaseRealSenseNode::updateStreamCalibData``):
    K, P = [K | 0], R = I; Kannala-Brandt4 is ``equidistant`` with 4 coefficients, every other
    model (Brown-Conrady, inverse and modified Brown-Conrady, none) ``plumb_bob`` with 5."""
    info = CameraInfo()
    info.width, info.height = intrinsics.width, intrinsics.height
    k = intrinsics.k
    info.k = k.reshape(-1).tolist()
    info.r = np.eye(3).reshape(-1).tolist()
    info.p = np.hstack([k, np.zeros((3, 1))]).reshape(-1).tolist()
    count = 4 if intrinsics.model == "kannala_brandt4" else 5
    info.distortion_model = "equidistant" if count == 4 else "plumb_bob"
    info.d = [float(c) for c in intrinsics.coeffs[:count]]
    return info


class CameraNode(Node):
    """See the module docs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("camera", **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.params = p
        config, namespace = camera_config(p)
        name = p["camera_name"]
        base = f"/{namespace}/{name}" if namespace else f"/{name}"
        self.frame_id = f"{name}_color_optical_frame"
        image_qos = qos.SENSOR_PUBLISH if p["image_qos"] == "SYSTEM_DEFAULT" else qos.SENSOR
        self.pub_color = self.create_publisher(Image, f"{base}/color/image_raw", image_qos)
        self.pub_color_info = self.create_publisher(
            CameraInfo, f"{base}/color/camera_info", image_qos
        )
        #: The aligned depth's image and camera_info publishers.
        self.pub_depth: tuple[Publisher, Publisher] | None = None
        if config.depth:
            aligned = f"{base}/aligned_depth_to_color"
            self.pub_depth = (
                self.create_publisher(Image, f"{aligned}/image_raw", image_qos),
                self.create_publisher(CameraInfo, f"{aligned}/camera_info", image_qos),
            )
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", qos.STREAM)
        #: /tf_static, kept: its transient-local message is served to every late subscriber.
        self.pub_tf_static: Publisher | None = None
        calibration = getattr(config, "calibration", None)  # a deployment camera's
        if calibration is not None:
            self.pub_tf_static = self._publish_calibration(Path(calibration))
        self._info_cache: tuple[Intrinsics, CameraInfo] | None = None
        for what, value, parameter in (
            ("exposure", config.exposure_us, "exposure_us"),
            ("white balance", config.white_balance_k, "white_balance_k"),
        ):
            if value is None:
                self.get_logger().warning(
                    f"camera {name}: auto {what} changes the images a policy was trained on "
                    f"with the scene's light; set {parameter} to the training data's"
                )

        self.pattern: SoftwareCamera | None = None
        if p["device"] == "test_pattern":
            hub = DeviceHub.software_only()
            self.pattern = SoftwareCamera(
                config.serial or DEFAULT_SERIAL,
                width=config.width,
                height=config.height,
                fps=config.fps,
            )
            hub.add(self.pattern.device)
        else:
            hub = DeviceHub()
        self.camera = Camera(
            hub,
            config,
            self._publish,
            ros_minus_system=lambda: self.get_clock().now().nanoseconds * 1e-9 - time.time(),
            log=self.get_logger(),
        )
        try:
            self.camera.start(wait_for_device=True)
        except CameraError as exc:
            names = [f"'{FIELD_PARAMETERS.get(f, f)}'" for f in exc.fields] or ["'serial_no'"]
            which = f"parameter {names[0]}" if len(names) == 1 else f"parameters {', '.join(names)}"
            raise ParameterError(f"{which} of node {self.get_name()}: {exc}") from None
        if self.pattern is not None:
            self.pattern.start()
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics, clock=steady)

    def _publish_calibration(self, path: Path) -> Publisher | None:
        """The calibration in ``path`` as a static transform on ``/tf_static`` (see the module
        docs); the publisher, or None when there is none to publish or no tf2_msgs."""
        name = self.params["camera_name"]
        field = f"cameras.{name}.calibration"
        if not path.is_file():
            self.get_logger().warning(
                f"camera {name}: {field} {path} does not exist (yet): no static transform of "
                f"{self.frame_id}; write it with `prt calibrate handeye` (see the README)"
            )
            return None
        from calibration.result import CameraCalibration

        calibration = CameraCalibration.load(path)  # ValueError naming the file and the field
        if calibration.child_frame != self.frame_id:
            raise ValueError(
                f"{field} {path} calibrates {calibration.child_frame}, not this camera's "
                f"{self.frame_id}: give camera {name} its own calibration"
            )
        transform = static_transform(calibration)
        publisher = tf_publisher(
            self,
            "/tf_static",
            qos.LATCHED,
            f"{transform.child} in {transform.parent} is in {path}",
        )
        if publisher is not None:
            now = self.get_clock().now().to_msg()
            publisher.publish(tf_message([transform_stamped(*transform, now)]))
            self.get_logger().info(
                f"/tf_static: {transform.parent} -> {transform.child} from {path}"
            )
        return publisher

    def _camera_info(self, intrinsics: Intrinsics) -> CameraInfo:
        if self._info_cache is None or self._info_cache[0] != intrinsics:
            self._info_cache = (intrinsics, camera_info(intrinsics))
        return self._info_cache[1]

    def _publish(self, frame: CameraFrame) -> None:
        """The frame thread's callback: colour, depth and their camera infos."""
        if not self.context.ok():
            return
        header = Header(stamp=stamp(frame.stamp_s), frame_id=self.frame_id)
        info = self._camera_info(frame.intrinsics)
        info.header = header
        try:
            self.pub_color.publish(image_to_msg(frame.color, frame.stamp_s, self.frame_id, "rgb8"))
            self.pub_color_info.publish(info)
            if self.pub_depth is not None and frame.depth_mm is not None:
                depth, depth_info = self.pub_depth
                depth.publish(image_to_msg(frame.depth_mm, frame.stamp_s, self.frame_id, "16UC1"))
                depth_info.publish(info)
        except RCLError:
            if self.context.ok():  # not a shutdown (Ctrl-C) under way
                raise

    def _publish_diagnostics(self) -> None:
        s = self.camera.stats.snapshot()
        values = {
            "serial": s.serial or self.camera.config.serial,
            "device": self.params["device"],
            "state": s.state,
            "frames_published": str(s.published),
            "frames_dropped": str(s.dropped),
            "frames_skipped": str(s.skipped),
            "stalls": str(s.stalls),
            "removals": str(s.removals),
            "reconnects": str(s.reconnects),
            "fps": f"{s.fps:.1f}",
            **millisecond_quantiles("capture_to_publish", s.latency_s),
        }
        level = DiagnosticStatus.OK if s.state == "streaming" else DiagnosticStatus.WARN
        if s.state == "error":
            level = DiagnosticStatus.ERROR
        name = f"policy_runtime: camera {self.params['camera_name']}"
        self.pub_diagnostics.publish(
            diagnostic_array(
                name,
                level,
                s.problem or s.state,
                values["serial"],
                values,
                self.get_clock().now().to_msg(),
            )
        )

    def close(self) -> None:
        """Release the device (``run_nodes`` calls this at shutdown)."""
        self.camera.close()
        if self.pattern is not None:
            self.pattern.stop()


def main() -> None:
    from policy_runtime.ros.params import run_nodes

    raise SystemExit(run_nodes(lambda: [CameraNode()]))
