"""Object state from a calibrated camera (``prt-object-state``): what a real cell publishes for
a low-dim policy in place of the simulator's state.

Parameter ``deployment``: the node tracks each ``object_state`` entry of the deployment file
(:class:`~policy_runtime.deployment.config.ObjectStateSource`: cameras with an eye_to_base
calibration, an object model, the tracker's settings) with a
:class:`~calibration.tracking.MarkerTracker` per camera:

- in: each camera's colour images, ``/<camera_namespace>/<camera>/color/image_raw`` (rgb8 or
  bgr8), with the sensor-data QoS (best effort: it matches realsense-ros's and our camera
  node's reliable publishers, and a tracker wants the newest frame, never a late resend). The
  callback keeps only the newest frame; one thread per entry and camera estimates on it. A
  frame replaced before the thread took it is counted as skipped. Every camera of an entry
  publishes its estimates on the entry's topic, so the observation stays fresh while any of
  them sees the object (the server takes the newest sample not after each window time).
- out: ``/perception/<key>`` (``DeploymentConfig.object_state_topic``),
  ``sensor_msgs/JointState``, reliable (``qos.STREAM``, as the policy server subscribes to
  joint_state sources): ``header.stamp`` the image's stamp (the observation's time, not the
  estimate's), ``frame_id`` ``base_link``, values named ``<key>/0`` ... ``<key>/<2N-1>``: the N
  keypoints' x, y in base_link (m), the layout of ``/sim_bridge/task_state``, so the policy
  server reads it with ``name_prefix: <key>/`` unchanged; then ``<key>.confidence`` (0..1) and
  ``<key>.latency_s`` (publish time minus the image's stamp, ROS clock), which that prefix does
  not pick (:func:`~policy_runtime.deployment.config.object_state_names`).
- A frame without an estimate (the tracker's *lost*: marker not visible, low confidence, off
  the table, an image the calibration does not fit) publishes NOTHING: the policy server's
  window stops advancing and the executor holds on a stale observation, as when a camera
  stops; a zero would be read as a position. It is counted by reason and logged at most once
  per ``log_period_s`` per key.
- ``/diagnostics``, one status per key and camera: estimates and their rate, frames tracked, lost by
  reason, skipped, the newest problem, latency and processing p50/p99, the newest confidence;
  WARN while no image has come, or when the newest ``lost_warn_frames`` frames were all lost.

A deployment without ``object_state`` entries: the node says so in one line and exits 0, so a
launch file can always start it (``prt launch`` and ``ros2 launch`` carry on when a node exits
cleanly). A missing or wrong calibration or object file, a camera calibrated on the tool or
for another image size: one error naming the file and the field, exit status 2, before any
subscription.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy._rclpy_pybind11 import RCLError
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.publisher import Publisher
from sensor_msgs.msg import Image, JointState

from policy_runtime.deployment.config import DeploymentConfig, object_state_names
from policy_runtime.ros import qos
from policy_runtime.ros.diagnostics import diagnostic_array, millisecond_quantiles
from policy_runtime.ros.messages import BASE_FRAME
from policy_runtime.ros.params import Param, ParameterError, declare_parameters, positive
from policy_runtime.serving.decode import DecodeError
from policy_runtime.serving.topics import image_pixels, message_stamp

if TYPE_CHECKING:
    from calibration.tracking import MarkerTracker

PARAMETERS = {
    "deployment": Param("", "the deployment YAML: each of its object_state entries is tracked"),
    "lost_warn_frames": Param(
        15, "/diagnostics says WARN when this many newest frames were all lost", positive
    ),
    "log_period_s": Param(
        5.0, "at most one log line about lost frames per key this often", positive
    ),
    "diagnostics_period_s": Param(1.0, "seconds between /diagnostics messages", positive),
}

#: Samples kept for the latency and processing quantiles.
QUANTILE_WINDOW = 300


def make_tracker(cell: DeploymentConfig, key: str, name: str) -> MarkerTracker:
    """The tracker of ``object_state`` entry ``key`` in camera ``name``; ValueError naming the
    field and the file for a calibration or object model that is missing, does not load, or
    does not fit."""
    try:
        from calibration.result import CameraCalibration
        from calibration.tracking import MarkerTracker, load_object_model
    except ImportError as exc:  # OpenCV: the calibration extra
        raise ValueError(
            f"prt-object-state needs OpenCV (pip install -e '.[calibration]'): {exc}"
        ) from exc

    source = cell.object_state[key]
    camera = cell.cameras[name]
    where = f"object_state.{key}: cameras.{name}.calibration"
    path = camera.calibration
    if path is None or not Path(path).is_file():
        raise ValueError(
            f"{where} {path} does not exist: calibrate camera {name} with `prt calibrate "
            "handeye --mode eye_to_base` (see the README)"
        )
    calibration = CameraCalibration.load(path)
    if calibration.parent_frame != "base_link":
        raise ValueError(
            f"{where} {path} places the camera on {calibration.parent_frame} "
            f"({calibration.mode}): track objects with a camera fixed in the cell (an "
            "eye_to_base calibration)"
        )
    if calibration.child_frame != f"{name}_color_optical_frame":
        raise ValueError(
            f"{where} {path} calibrates {calibration.child_frame}, not camera {name}'s "
            f"{name}_color_optical_frame"
        )
    size = (calibration.intrinsics.width, calibration.intrinsics.height)
    if size != (camera.width, camera.height):
        raise ValueError(
            f"{where} {path} is of {size[0]}x{size[1]} images, but cameras.{name} streams "
            f"{camera.width}x{camera.height}: calibrate at the streamed size"
        )
    if not source.object.is_file():
        raise ValueError(f"object_state.{key}.object {source.object} does not exist")
    model = load_object_model(source.object)
    try:
        return MarkerTracker.from_calibration(model, calibration, source.tracker)
    except ValueError as exc:
        raise ValueError(f"object_state.{key}.tracker ({source.object}): {exc}") from exc


@dataclass
class Track:
    """One ``object_state`` entry: its tracker, its newest frame, its counters."""

    key: str
    camera: str
    image_topic: str
    topic: str
    tracker: MarkerTracker
    publisher: Publisher
    recent_lost: deque[bool]
    ready: threading.Condition = field(default_factory=threading.Condition)
    #: The newest frame, not yet taken by the thread.
    frame: Image | None = None
    frames: int = 0
    skipped: int = 0
    #: Frames stamped 0 (no clock yet: never an observation time).
    unstamped: int = 0
    #: Frames of an encoding other than rgb8 or bgr8.
    undecodable: int = 0
    errors: int = 0
    estimates: int = 0
    problem: str = ""
    confidence: float | None = None
    latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=QUANTILE_WINDOW))
    processing_s: deque[float] = field(default_factory=lambda: deque(maxlen=QUANTILE_WINDOW))
    #: Lost frames since the last log line about them, when that was (monotonic), and
    #: whether one was logged since the last estimate.
    unlogged_lost: int = 0
    logged_at: float = -math.inf
    loss_logged: bool = False
    #: Estimates and steady time at the last diagnostics (the rate between two).
    rate_mark: tuple[int, float] = (0, 0.0)


class ObjectStateNode(Node):
    """See the module docs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("object_state", **kwargs)
        p = declare_parameters(self, PARAMETERS)
        self.params = p
        if not p["deployment"]:
            raise ParameterError(
                f"parameter 'deployment' of node {self.get_name()}: give the deployment YAML "
                "whose object_state entries to track"
            )
        cell = DeploymentConfig.load(p["deployment"])
        trackers = {}
        for key, source in cell.object_state.items():
            for camera in source.cameras:
                try:
                    trackers[key, camera] = make_tracker(cell, key, camera)
                except ValueError as exc:
                    raise ValueError(f"deployment {p['deployment']}: {exc}") from exc
        self.tracks: list[Track] = []
        self._closing = False
        self._threads: list[threading.Thread] = []
        if not trackers:
            self.get_logger().info(
                f"deployment {p['deployment']} has no object_state entries: nothing to track, "
                "exiting"
            )
            self.create_timer(0.01, rclpy.try_shutdown)  # run_nodes then returns 0
            return
        publishers = {
            key: self.create_publisher(JointState, cell.object_state_topic(key), qos.STREAM)
            for key in cell.object_state
        }
        for (key, camera), tracker in trackers.items():
            track = Track(
                key=key,
                camera=camera,
                image_topic=cell.camera_topic(camera),
                topic=cell.object_state_topic(key),
                tracker=tracker,
                publisher=publishers[key],
                recent_lost=deque(maxlen=p["lost_warn_frames"]),
            )
            self.tracks.append(track)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", qos.STREAM)
        for track in self.tracks:
            self.create_subscription(Image, track.image_topic, self._on_image(track), qos.SENSOR)
            thread = threading.Thread(
                target=self._work,
                args=(track,),
                name=f"object_state_{track.key}_{track.camera}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
            self.get_logger().info(
                f"{track.key}: tracking {cell.object_state[track.key].object} in "
                f"{track.image_topic} -> {track.topic}"
            )
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._steady = steady
        start = steady.now().nanoseconds * 1e-9
        for track in self.tracks:
            track.rate_mark = (0, start)
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics, clock=steady)

    # -- images in --------------------------------------------------------------------------

    def _on_image(self, track: Track) -> Callable[[Image], None]:
        def callback(msg: Image) -> None:
            with track.ready:
                track.frames += 1
                if track.frame is not None:
                    track.skipped += 1
                track.frame = msg
                track.ready.notify()

        return callback

    def _work(self, track: Track) -> None:
        """The entry's thread: estimate on the newest frame until :meth:`close`."""
        while True:
            with track.ready:
                while track.frame is None and not self._closing:
                    track.ready.wait()
                if self._closing:
                    return
                msg, track.frame = track.frame, None
            try:
                self._process(track, msg)
            except Exception:  # a bug, never the camera's input: the next frame is tried afresh
                with track.ready:
                    track.errors += 1
                self.get_logger().error(f"{track.key}: frame failed:\n{traceback.format_exc()}")

    def _process(self, track: Track, msg: Image) -> None:
        t_image = message_stamp(msg)
        if t_image <= 0.0:
            with track.ready:
                track.unstamped += 1
            self.get_logger().warning(
                f"{track.image_topic}: frames stamped 0 (no clock yet) are not tracked",
                throttle_duration_sec=5.0,
            )
            return
        try:
            pixels = np.ascontiguousarray(image_pixels(msg))
        except DecodeError as exc:
            with track.ready:
                track.undecodable += 1
            self._lose(track, f"undecodable: {exc}")
            return
        estimate = track.tracker.estimate(pixels)
        if estimate is None:
            self._lose(track, track.tracker.last_problem)
            return
        flat = estimate.keypoints.reshape(-1)
        state = JointState()
        state.header.stamp = msg.header.stamp
        state.header.frame_id = BASE_FRAME
        state.name = object_state_names(track.key, flat.size)
        latency = self.get_clock().now().nanoseconds * 1e-9 - t_image
        state.position = [*flat.tolist(), float(estimate.confidence), latency]
        if not self.context.ok():
            return
        try:
            track.publisher.publish(state)
        except RCLError:
            if self.context.ok():  # not a shutdown (Ctrl-C) under way
                raise
            return
        with track.ready:
            track.estimates += 1
            track.recent_lost.append(False)
            track.problem = ""
            track.confidence = float(estimate.confidence)
            track.latency_s.append(latency)
            track.processing_s.append(estimate.processing_s)
            resumed = track.loss_logged
            unlogged, track.unlogged_lost, track.loss_logged = track.unlogged_lost, 0, False
        if resumed:
            self.get_logger().info(
                f"{track.key}: tracking again ({unlogged} more frame(s) lost before this one)"
            )

    def _lose(self, track: Track, problem: str) -> None:
        """A frame without an estimate: counted, and logged at most once per ``log_period_s``
        per key."""
        now = time.monotonic()
        with track.ready:
            track.recent_lost.append(True)
            track.problem = problem
            track.unlogged_lost += 1
            if now - track.logged_at < self.params["log_period_s"]:
                return
            count, track.unlogged_lost = track.unlogged_lost, 0
            track.logged_at, track.loss_logged = now, True
        self.get_logger().warning(
            f"{track.key}: {count} frame(s) lost, nothing published for them; newest: {problem}"
        )

    # -- diagnostics ------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        now = self._steady.now().nanoseconds * 1e-9
        stamp = self.get_clock().now().to_msg()
        for track in self.tracks:
            with track.ready:
                estimates, (marked, since) = track.estimates, track.rate_mark
                track.rate_mark = (estimates, now)
                recent = list(track.recent_lost)
                values = {
                    "camera": track.camera,
                    "image_topic": track.image_topic,
                    "topic": track.topic,
                    "frames": str(track.frames),
                    "estimates": str(estimates),
                    "estimate_rate_hz": f"{(estimates - marked) / max(now - since, 1e-9):.1f}",
                    "tracked": str(track.tracker.tracked),
                    **{f"lost.{k}": str(v) for k, v in dict(track.tracker.lost).items()},
                    "skipped": str(track.skipped),
                    "unstamped": str(track.unstamped),
                    "undecodable": str(track.undecodable),
                    "errors": str(track.errors),
                    "last_problem": track.problem,
                    "confidence": "" if track.confidence is None else f"{track.confidence:.3f}",
                    **millisecond_quantiles("latency", track.latency_s),
                    **millisecond_quantiles("processing", track.processing_s),
                }
                frames = track.frames
            lost = len(recent) == track.recent_lost.maxlen and all(recent)
            if frames == 0:
                level, message = DiagnosticStatus.WARN, f"no images on {track.image_topic}"
            elif lost:
                level, message = DiagnosticStatus.WARN, f"lost: {values['last_problem']}"
            else:
                level, message = DiagnosticStatus.OK, "tracking"
            self.pub_diagnostics.publish(
                diagnostic_array(
                    f"policy_runtime: object_state {track.key} ({track.camera})",
                    level,
                    message,
                    track.camera,
                    values,
                    stamp,
                )
            )

    def close(self) -> None:
        """Stop the threads (``run_nodes`` calls this at shutdown)."""
        self._closing = True
        for track in self.tracks:
            with track.ready:
                track.ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=5.0)


def main() -> None:
    from policy_runtime.ros.params import run_nodes

    raise SystemExit(run_nodes(lambda: [ObjectStateNode()]))
