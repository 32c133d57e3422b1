"""The recorder: ROS 2 topics in, dataset episodes out (``prt record``, ``prt-recorder``).

Two nodes in one process, each spinning on its own thread (:func:`run_nodes`):

- ``recorder_streams`` subscribes to every topic of the recording config (images with the
  sensor-data QoS, the rest reliable), each image topic's ``camera_info`` (the schema records
  the cameras' intrinsics), and the simulator's episode status when configured; its callbacks
  only hand messages to the :class:`~policy_runtime.recording.session.RecordingSession`'s queue.
- ``recorder`` serves the operator: ``~/start``, ``~/stop`` (save), ``~/discard``,
  ``~/rerecord``, ``~/quit`` (std_srvs/Trigger), ``~/label`` (SetBool: success or failure),
  ``~/note`` (std_msgs/String) and ``~/status`` (std_msgs/String, latched, the status line).
  A stop answers once the episode is saved; its own thread keeps the streams flowing meanwhile.

The dataset is created (or, with ``resume``, opened and checked) once every camera's
``camera_info`` has arrived, since the cameras' intrinsics are part of its schema. In simulation
(``sim_bridge`` in the config) the reset phase stops the robot program, resets the executor and
the teleop target and starts the bridge's next episode; each episode's seed, success and score
come from its status. On a robot the operator labels episodes (a demonstration counts as a
success unless labelled a failure).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from policy_runtime.data import DatasetWriter
from policy_runtime.recording.config import CameraCalibration, RecordingConfig
from policy_runtime.recording.episode import EpisodeInfo, RecordingError
from policy_runtime.recording.session import RecordingSession
from policy_runtime.ros import qos
from policy_runtime.ros.messages import SOURCE_MESSAGES
from policy_runtime.ros.params import BAD_INPUT_EXIT, Param, declare_parameters, non_negative
from policy_runtime.serving.topics import TopicReader, image_pixels, message_stamp, readers

PARAMETERS = {
    "config": Param("", "the recording config (config/record_*.yaml)"),
    "output": Param("", "the dataset store (.zarr directory) to write"),
    "resume": Param(False, "append to an existing store (its schema must match)"),
    "episodes": Param(0, "quit after this many saved episodes (0: when told)", non_negative),
}

#: Seconds a service waits for the recorder's answer (a stop includes settling and writing).
ANSWER_TIMEOUT_S = 60.0


class RecorderStreams(Node):
    """The subscriptions (see the module docs): messages to the session's queue."""

    def __init__(self, config: RecordingConfig, **kwargs: Any) -> None:
        super().__init__("recorder_streams", **kwargs)
        self.config = config
        self.session: RecordingSession | None = None
        self.cameras: dict[str, CameraCalibration] = {}
        self.status: dict[str, str] | None = None
        self._status_lock = threading.Lock()
        self.status_changed = threading.Condition(self._status_lock)
        for topic, reader in readers(config.streams(), config.image_shapes()).items():
            profile = qos.SENSOR if reader.kind == "image" else qos.STREAM
            self.create_subscription(
                SOURCE_MESSAGES[reader.kind], topic, self._callback(reader), profile
            )
        for key, topic in config.camera_info_topics().items():
            self.create_subscription(CameraInfo, topic, self._camera_info(key), qos.SENSOR)
        if config.sim_bridge:
            self.create_subscription(
                DiagnosticArray, f"{config.sim_bridge}/episode", self._on_status, qos.LATCHED
            )

    def _callback(self, reader: TopicReader) -> Callable[[Any], None]:
        video = self.config.video and reader.kind == "image"

        def callback(msg: Any) -> None:
            session = self.session
            if session is None:
                return
            t = message_stamp(msg)
            if t <= 0.0:
                return  # ROS time 0: no clock yet, never a stamp
            for key, decode in reader.read(msg):
                session.sample(key, t, decode)
            if video:
                with contextlib.suppress(ValueError):  # counted by the sample's decode
                    session.frame(reader.topic, t, image_pixels(msg))

        return callback

    def _camera_info(self, key: str) -> Callable[[CameraInfo], None]:
        def callback(msg: CameraInfo) -> None:
            if key not in self.cameras:
                self.cameras[key] = CameraCalibration.from_message(msg)

        return callback

    def _on_status(self, msg: DiagnosticArray) -> None:
        if not msg.status:
            return
        with self._status_lock:
            self.status = {v.key: v.value for v in msg.status[0].values}
            self.status_changed.notify_all()

    def episode_info(self) -> EpisodeInfo | None:
        """The simulator's verdict on the current episode (None without a status)."""
        with self._status_lock:
            status = self.status
        if status is None:
            return None
        return EpisodeInfo(
            seed=int(status.get("seed", -1)),
            success=status.get("success") == "true",
            score=float(status.get("score", "nan")),
        )

    def wait_for_new_episode(self, after: str | None, timeout: float) -> bool:
        """Wait until the status names an episode other than ``after`` that is not done."""
        deadline = time.monotonic() + timeout
        with self._status_lock:
            while True:
                status = self.status
                if status and status.get("episode") != after and status.get("done") == "false":
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.status_changed.wait(left)


class Recorder(Node):
    """The operator's side (see the module docs)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("recorder", **kwargs)
        p = declare_parameters(self, PARAMETERS)
        if not p["config"]:
            raise ValueError("parameter 'config': give the recording config (config/record_*.yaml)")
        if not p["output"]:
            raise ValueError("parameter 'output': give the dataset store to write (a .zarr path)")
        self.params = p
        self.config = RecordingConfig.load(p["config"])
        self.output = Path(p["output"])
        if self.output.exists() and not p["resume"]:
            raise ValueError(f"{self.output} exists: pass resume to append to it")
        self.session: RecordingSession | None = None
        self._status_pub = self.create_publisher(String, "~/status", qos.LATCHED)
        bridge = self.config.sim_bridge
        # On the streams node: its thread is free while a service of this one waits for the
        # save (and the reset phase the save ends with).
        self.streams = RecorderStreams(self.config)
        node = self.streams
        self._sim_clients = (
            {
                "program": node.create_client(SetBool, f"{bridge}/program_running"),
                "executor": node.create_client(Trigger, "/executor/reset"),
                "teleop": node.create_client(Trigger, "/teleop/reset"),
                "bridge": node.create_client(Trigger, f"{bridge}/reset"),
            }
            if bridge
            else None
        )
        for name in ("start", "stop", "discard", "rerecord", "quit"):
            self.create_service(Trigger, f"~/{name}", self._trigger(name))
        self.create_service(SetBool, "~/label", self._on_label)
        self.create_subscription(String, "~/note", self._on_note, qos.STREAM)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(0.5, self._tick, clock=steady)
        self.quit = threading.Event()

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _tick(self) -> None:
        """Open the store once the cameras are known; publish the status line; quit when
        told (the episode in progress is dropped, the saved ones stay)."""
        if self.quit.is_set():
            self.close()
            rclpy.try_shutdown()
            return
        if self.session is None:
            missing = sorted(set(self.config.camera_info_topics()) - set(self.streams.cameras))
            if missing:
                text = f"waiting for camera_info of {missing}"
                self._status_pub.publish(String(data=text))
                return
            try:
                self.session = self._open_session()
            except ValueError as exc:  # another schema, a store another writer holds
                self.get_logger().error(f"{self.output}: {exc}")
                raise SystemExit(BAD_INPUT_EXIT) from None
            self.streams.session = self.session
            self.get_logger().info(
                f"recording into {self.output} ({self.session.writer.n_episodes} episode(s) "
                "there): call ~/start"
            )
        status = self.session.status()
        self._status_pub.publish(String(data=status.line()))
        wanted = self.params["episodes"]
        if wanted and status.episodes >= wanted and status.state == "ready":
            self.quit.set()

    def _open_session(self) -> RecordingSession:
        schema = self.config.dataset_schema(self.streams.cameras)
        writer = DatasetWriter(self.output, schema)
        reset = self._reset_sim if self._sim_clients is not None else None
        info = self.streams.episode_info if self.config.sim_bridge else None
        return RecordingSession(writer, self.config, self.now, info, reset)

    def _reset_sim(self) -> None:
        """The reset phase in simulation, as ``prt-episodes`` runs it: the robot program off,
        the executor's operator reset (asked again until it has seen the stop), the teleop
        target back on the arm, then the bridge's next episode, once it has started."""
        assert self._sim_clients is not None
        clients = self._sim_clients
        self._call(clients["program"], SetBool.Request(data=False))
        deadline = time.monotonic() + 10.0
        while True:
            reply = self._call(clients["executor"], Trigger.Request())
            if reply is None or reply.success or "the loop is running" not in reply.message:
                break
            if time.monotonic() > deadline:
                raise RecordingError(f"/executor/reset: {reply.message}")
            time.sleep(0.02)
        status = self.streams.status
        before = None if status is None else status.get("episode")
        reply = self._call(clients["bridge"], Trigger.Request(), required=True)
        if reply is not None and not reply.success:
            raise RecordingError(f"{self.config.sim_bridge}/reset: {reply.message}")
        if not self.streams.wait_for_new_episode(before, timeout=10.0):
            raise RecordingError("the simulator did not start its next episode")
        self._call(clients["teleop"], Trigger.Request())

    def _call(self, client: Any, request: Any, required: bool = False) -> Any:
        """A service's answer from the worker thread (this node spins on its own); None when
        an optional service (no teleop, no executor) is not there."""
        if not client.wait_for_service(timeout_sec=2.0 if required else 0.5):
            if required:
                raise RecordingError(f"{client.srv_name} is not available")
            return None
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(10.0):
            raise RecordingError(f"{client.srv_name} did not answer")
        return future.result()

    def _answer(self, future: Future[str] | None, response: Any) -> Any:
        if future is None:
            response.success, response.message = False, "not ready: " + self._waiting()
            return response
        try:
            response.message = future.result(ANSWER_TIMEOUT_S)
            response.success = True
        except (RecordingError, FutureTimeout) as exc:
            response.success, response.message = False, str(exc) or "no answer in time"
        return response

    def _waiting(self) -> str:
        missing = sorted(set(self.config.camera_info_topics()) - set(self.streams.cameras))
        return f"waiting for camera_info of {missing}"

    def _trigger(self, name: str) -> Callable[[Trigger.Request, Trigger.Response], Any]:
        def callback(request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
            if name == "quit":
                self.quit.set()
                response.success, response.message = True, "quitting"
                return response
            future = None if self.session is None else self.session.command(name)
            return self._answer(future, response)

        return callback

    def _on_label(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        future = None if self.session is None else self.session.command("label", request.data)
        return self._answer(future, response)

    def _on_note(self, msg: String) -> None:
        if self.session is not None:
            self.session.command("note", msg.data)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


def make_recorder() -> list[Node]:
    """The two nodes."""
    recorder = Recorder()
    return [recorder, recorder.streams]


def main() -> None:
    from policy_runtime.ros.params import run_nodes

    raise SystemExit(run_nodes(make_recorder))
