"""The policy server: observation topics in, action chunks out, inference off the callbacks.

It loads a bundle (:mod:`policy_runtime.inference`, onnxruntime), subscribes to the topics its
config maps to the bundle's observation keys (:mod:`policy_runtime.serving.config`), keeps their
stamped history (:mod:`policy_runtime.serving.history`), and answers each request of the
executor with a chunk predicted on its own thread, published as ``JointTrajectory`` (joint
actions, ``~/joint_chunk``) or ``MultiDOFJointTrajectory`` (end effector, ``~/ee_chunk``) with
``header.stamp = t_obs``.

Also: ``~/policy_info`` (std_msgs/String, JSON, latched: what the executor must know about the
chunks), ``~/observed`` (std_msgs/Header: every stream has arrived up to this stamp; the
executor's observation watchdog), ``~/start``, ``~/stop``, ``~/reset`` (std_srvs/Trigger; reset
re-seeds the sampler with the ``seed`` parameter and forgets the history) and ``/diagnostics``
(inference p50/p99, chunk rate, state, gaps). Subscriptions to images use the sensor-data QoS
(best effort matches realsense-ros's reliable publishers); other streams are reliable.

Lockstep (``lockstep: true``, a simulation faster than real time): a request of time ``t`` is
answered from the window ending at ``t`` once the simulator's announcement of its tick ``t``
(``/sim_bridge/published``, :mod:`policy_runtime.serving.lockstep`) has come and every sample
it names on the topics read here has arrived; every stream is then subscribed reliable, keep
all, so none is lost.
"""

from __future__ import annotations

import math
import queue
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

from policy_runtime.chunk import ActionChunk, ChunkPrefix
from policy_runtime.ros import qos
from policy_runtime.ros.diagnostics import diagnostic_array
from policy_runtime.ros.messages import (
    SOURCE_MESSAGES,
    chunk_to_msg,
    no_chunk_msg,
    request_from_msg,
    seconds,
    stamp,
)
from policy_runtime.ros.params import Param, declare_parameters, non_negative, positive
from policy_runtime.serving.config import ObservationSource, ServerConfig
from policy_runtime.serving.decode import DecodeError
from policy_runtime.serving.lockstep import PUBLISHED_TOPIC, PublishedStamps
from policy_runtime.serving.server import Answer, PolicyServerCore
from policy_runtime.serving.topics import Decoder, TopicReader, message_stamp, readers

PARAMETERS = {
    "bundle": Param("", "the policy bundle (directory or .zip) to serve"),
    "config": Param("", "the observation mapping (config/server_*.yaml)"),
    "deployment": Param("", "deployment YAML: its bundle and observations replace the two above"),
    "seed": Param(0, "the sampler's seed; ~/reset re-seeds with it"),
    "inference_steps": Param(0, "sampler steps (0: the bundle's)", non_negative),
    "execution_horizon": Param(0, "actions executed per chunk (0: the bundle's)", non_negative),
    "autostart": Param(True, "answer requests from the start (else after ~/start)"),
    "lockstep": Param(False, "simulation faster than real time: wait for the request's data"),
    "lockstep_timeout_s": Param(2.0, "lockstep: wall seconds to wait for the data", positive),
    "intra_op_threads": Param(1, "inference threads inside one operator", positive),
    "backend": Param("auto", "auto, onnxruntime or openvino (auto: GPU, else OpenVINO on Intel)"),
    "precision": Param(
        "auto", "auto (the fastest the bundle passed a check for), fp32, bf16, fp16, int8"
    ),
    "diagnostics_period_s": Param(1.0, "seconds between /diagnostics messages", positive),
}

#: ``deliver(chunk, t_obs)``: hand a chunk to the executor (DDS, or a direct call).
DeliverChunk = Callable[[ActionChunk, float], None]
#: ``heartbeat(t)``: every stream has arrived up to ``t``.
Heartbeat = Callable[[float], None]
#: ``unanswered(t_request)``: the request of ``t_request`` gets no chunk (no data yet, stopped).
Unanswered = Callable[[float], None]


class PolicyServer(Node):
    """See the module docs. ``deliver`` and ``heartbeat`` replace the chunk and heartbeat
    topics when composed with the executor in one process."""

    def __init__(
        self,
        deliver: DeliverChunk | None = None,
        heartbeat: Heartbeat | None = None,
        unanswered: Unanswered | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__("policy_server", **kwargs)  # type: ignore[arg-type]
        p = declare_parameters(self, PARAMETERS)
        bundle, config = _bundle_and_config(p["bundle"], p["config"], p["deployment"])
        p["bundle"] = str(bundle)
        from policy_runtime.inference import RuntimeOptions, load_policy

        runtime = load_policy(
            bundle,
            options=RuntimeOptions(
                intra_op_threads=p["intra_op_threads"],
                inter_op_threads=1,
                backend=p["backend"],
                precision=p["precision"],
            ),
        )
        self.core = PolicyServerCore(
            runtime,
            config,
            seed=p["seed"],
            inference_steps=p["inference_steps"] or None,
            execution_horizon=p["execution_horizon"] or None,
        )
        self.params = p
        self.info = self.core.info
        self._lock = threading.Lock()
        self._data = threading.Condition(self._lock)
        self._serving = bool(p["autostart"])
        self._requests: queue.Queue[tuple[float, ChunkPrefix | None] | None] = queue.Queue()
        self._heartbeat_sent = -math.inf
        self._newest_seen = -math.inf
        self._unannounced_logged = False
        self.decode_errors: dict[str, int] = dict.fromkeys(self.core.sources, 0)
        #: Lockstep: the simulator's announcements of what it published, against what arrived.
        self._published = (
            PublishedStamps(s.topic for s in self.core.sources.values()) if p["lockstep"] else None
        )

        latched = self.create_publisher(String, "~/policy_info", qos.LATCHED)
        latched.publish(String(data=self.info.to_json()))
        self._info_publisher = latched
        if deliver is None:
            if self.info.action_space == "joint":
                chunks = self.create_publisher(JointTrajectory, "~/joint_chunk", qos.STREAM)
            else:
                chunks = self.create_publisher(MultiDOFJointTrajectory, "~/ee_chunk", qos.STREAM)

            def deliver(chunk: ActionChunk, t_obs: float) -> None:
                chunks.publish(chunk_to_msg(chunk, t_obs, self.info))

            def unanswered(t_request: float) -> None:
                chunks.publish(no_chunk_msg(t_request, self.info))

            self.create_subscription(JointTrajectory, "~/request", self._on_request, qos.STREAM)
        if heartbeat is None:
            observed = self.create_publisher(Header, "~/observed", qos.STREAM)

            def heartbeat(t: float) -> None:
                observed.publish(Header(stamp=stamp(t)))

        assert unanswered is not None, "composed: give deliver, heartbeat and unanswered"
        self.deliver, self.heartbeat, self.unanswered = deliver, heartbeat, unanswered
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", qos.STREAM)
        self._subscribe(self.core.sources)
        if self._published is not None:
            self.create_subscription(JointState, PUBLISHED_TOPIC, self._on_published, qos.LATCHED)
        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.create_service(Trigger, "~/reset", self._on_reset)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics, clock=steady)
        self._worker = threading.Thread(
            target=self._serve, name="policy_server_inference", daemon=True
        )
        self._worker.start()
        self.get_logger().info(
            f"serving {p['bundle']} ({self.info.kind}, {self.info.action_space} actions) on "
            f"{sorted({s.topic for s in self.core.sources.values()})}"
        )

    # -- observations ---------------------------------------------------------------------------

    def _subscribe(self, sources: dict[str, ObservationSource]) -> None:
        """One subscription per topic, handing each message to every key read from it."""
        shapes = {k.key: tuple(k.shape) for k in self.core.runtime.specs.obs.keys}
        for topic, reader in readers(sources, shapes).items():
            if self._published is not None:
                profile = qos.LOCKSTEP  # no sample may be lost: the window waits for each
            else:
                profile = qos.SENSOR if reader.kind == "image" else qos.STREAM
            self.create_subscription(
                SOURCE_MESSAGES[reader.kind], topic, self._callback(reader), profile
            )

    def _callback(self, reader: TopicReader) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            t = message_stamp(msg)
            for key, decode in reader.read(msg):
                self._add(reader.topic, key, t, decode)
            if self._published is not None:
                with self._lock:
                    self._published.arrived(reader.topic, t)
                    self._data.notify_all()

        return callback

    def _add(self, topic: str, key: str, t: float, decode: Decoder) -> None:
        """Decode a message into ``key``'s array and keep it (a message that does not decode is
        counted and logged, never raised)."""
        if t <= 0.0:
            return  # ROS time 0: no clock yet, never a stamp
        try:
            value = decode()
        except (DecodeError, ValueError) as exc:
            self.decode_errors[key] += 1
            self.get_logger().warning(f"{topic} -> {key}: {exc}", throttle_duration_sec=1.0)
            return
        with self._lock:
            self._restart_if_resumed(t)
            self.core.observe(key, t, value)
            newest = self.core.history.newest_common_stamp()
            self._data.notify_all()
        if newest is not None and newest >= self._heartbeat_sent + 0.5 * self.info.dt - 1e-9:
            self._heartbeat_sent = newest
            self.heartbeat(newest)

    def _restart_if_resumed(self, t: float) -> None:
        """Data that resumes after a pause longer than half a second (a new simulated episode,
        a driver that came back) starts a new history: what came before the pause is not
        continuous with now, so the window repeats the first new sample instead."""
        if t > self._newest_seen + 0.5 and self._newest_seen > -math.inf:
            self.core.history.clear(since=t)
            self._heartbeat_sent = -math.inf
        self._newest_seen = max(self._newest_seen, t)

    # -- requests ---------------------------------------------------------------------------

    def request(self, t: float, prefix: ChunkPrefix | None) -> None:
        """Ask for the chunk of time ``t`` (the request topic's callback, or the executor's
        direct call when composed). Only the newest waiting request is answered."""
        try:
            while True:
                self._requests.get_nowait()
        except queue.Empty:
            pass
        self._requests.put((t, prefix))

    def _on_request(self, msg: JointTrajectory) -> None:
        try:
            t, prefix = request_from_msg(msg, self.info)
        except ValueError as exc:
            self.get_logger().warning(f"request refused: {exc}", throttle_duration_sec=1.0)
            self.core.stats.refusal("bad_request")
            self.unanswered(seconds(msg.header.stamp))
            return
        self.request(t, prefix)

    def _serve(self) -> None:
        """The inference thread: answer requests until :meth:`close`. Nothing ends it early: a
        request that fails in any way is logged, counted and answered with "no chunk"."""
        while True:
            item = self._requests.get()
            if item is None:
                return
            t, prefix = item
            try:
                answer = self._answer(t, prefix)
            except Exception:  # an onnxruntime failure, a bug: the next request is tried afresh
                self.core.stats.refusal("server_error")
                self.get_logger().error(f"request at {t:.3f} failed:\n{traceback.format_exc()}")
                answer = None
            if answer is None or answer.chunk is None or answer.t_obs is None:
                if answer is not None and answer.problem is not None:
                    self.get_logger().warning(
                        f"request at {t:.3f} unanswered: {answer.problem}",
                        throttle_duration_sec=1.0,
                    )
                self.unanswered(t)
                continue
            self.deliver(answer.chunk, answer.t_obs)

    def _answer(self, t: float, prefix: ChunkPrefix | None) -> Answer | None:
        """The answer to the request of ``t`` (None while stopped)."""
        lockstep = bool(self.params["lockstep"])
        with self._lock:
            if not self._serving:
                return None
            if lockstep:
                self._wait_for_data(t)
            window = self.core.window_for(t, exact=lockstep)
        return window if isinstance(window, Answer) else self.core.predict(window, prefix)

    def _wait_for_data(self, t: float) -> None:
        """Lockstep: wait (lock held, released while waiting) until the simulator has announced
        its tick ``t`` (or a later one) and every sample that announcement names on the topics
        read here has arrived."""
        published = self._published
        assert published is not None
        deadline = time.monotonic() + self.params["lockstep_timeout_s"]
        while not published.complete(t):
            left = deadline - time.monotonic()
            if left <= 0:
                waiting = published.missing() or [f"{PUBLISHED_TOPIC} of t={t:.3f}"]
                self.get_logger().warning(
                    f"lockstep: data of t={t:.3f} did not all arrive (waiting for {waiting})"
                )
                return
            self._data.wait(timeout=left)

    def _on_published(self, msg: JointState) -> None:
        """The simulator's announcement: the newest stamp published on each topic."""
        if len(msg.name) != len(msg.position):
            self.get_logger().warning(
                f"{PUBLISHED_TOPIC}: {len(msg.name)} topics but {len(msg.position)} stamps; "
                "ignored",
                throttle_duration_sec=1.0,
            )
            return
        stamps = dict(zip(msg.name, msg.position, strict=True))
        with self._lock:
            assert self._published is not None
            self._published.announced(seconds(msg.header.stamp), stamps)
            unannounced = self._published.unannounced()
            self._data.notify_all()
        if unannounced and not self._unannounced_logged:
            self._unannounced_logged = True
            self.get_logger().warning(
                f"lockstep: {PUBLISHED_TOPIC} does not announce {unannounced}: their samples are "
                "not waited for"
            )

    # -- services -------------------------------------------------------------------------------

    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            self._serving = True
        response.success, response.message = True, "serving"
        return response

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            self._serving = False
        response.success, response.message = True, "stopped: requests go unanswered"
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        seed = int(self.get_parameter("seed").value)
        with self._lock:
            self.core.reset(seed, since=self._newest_seen)
            self._heartbeat_sent = -math.inf
        response.success, response.message = True, f"history cleared, sampler seeded with {seed}"
        return response

    # -- diagnostics ----------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        stats = self.core.stats.snapshot()
        with self._lock:
            history = self.core.history
            values = {
                "state": "serving" if self._serving else "stopped",
                "chunks": str(stats.chunks),
                "inference_p50_ms": f"{stats.inference_p50_s * 1e3:.2f}",
                "inference_p99_ms": f"{stats.inference_p99_s * 1e3:.2f}",
                "chunk_rate_hz": f"{stats.chunk_rate_hz:.2f}",
                "out_of_order_samples": str(history.out_of_order),
            }
            values.update({f"refused.{k}": str(v) for k, v in stats.refused.items()})
            values.update({f"gaps.{k}": str(v) for k, v in history.gaps.items() if v})
            values.update(
                {f"decode_errors.{k}": str(v) for k, v in self.decode_errors.items() if v}
            )
        array = diagnostic_array(
            "policy_runtime: policy_server",
            DiagnosticStatus.OK if self._serving else DiagnosticStatus.WARN,
            values["state"],
            str(self.params["bundle"]),
            values,
            self.get_clock().now().to_msg(),
        )
        self.pub_diagnostics.publish(array)

    def close(self) -> None:
        self._requests.put(None)
        self._worker.join(timeout=5.0)


def _bundle_and_config(bundle: str, config: str, deployment: str) -> tuple[Path, ServerConfig]:
    """The bundle and observation mapping from the parameters: ``bundle`` and ``config``, or
    a deployment file's (a bundle given beside a deployment replaces the deployment's)."""
    if deployment:
        if config:
            raise ValueError(
                "parameters 'config' and 'deployment': give one (a deployment maps the "
                "observations itself)"
            )
        from policy_runtime.deployment.config import DeploymentConfig

        cell = DeploymentConfig.load(deployment)
        path = Path(bundle) if bundle else cell.bundle
        if not path.exists():
            raise ValueError(f"deployment {deployment}: bundle {path} does not exist")
        return path, cell.server_config()
    for name, value in (("bundle", bundle), ("config", config)):
        if not value:
            raise ValueError(f"parameter '{name}' is required (or give 'deployment')")
        if not Path(value).exists():
            raise ValueError(f"parameter '{name}': {value} does not exist")
    return Path(bundle), ServerConfig.load(config)


def main() -> None:
    from policy_runtime.ros.params import run_nodes

    raise SystemExit(run_nodes(lambda: [PolicyServer()]))
