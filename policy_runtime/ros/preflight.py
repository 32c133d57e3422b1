"""Pre-flight checks of a live robot graph against a deployment (``prt doctor --robot``).

A probe node listens to the graph for a few seconds, then every check says in one line what it
saw: the joint states fresh at the controller's rate with every UR joint, the robot program
running, the speed scaling, a subscriber on the position controller's command topic, each
camera at its rate with stamps that agree with this machine's clock, the bundle loading, each
of its observation topics present with the right type and a message that decodes to the key's
shape, and the TCP (forward kinematics of the measured joints with the deployment's TCP)
inside the workspace box. Stamps are compared with the system clock: the real robot's ROS time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64

from policy_runtime.deployment.config import DeploymentConfig
from policy_runtime.robots.ur5 import JOINT_NAMES
from policy_runtime.ros import qos
from policy_runtime.ros.executor_node import COMMAND_TOPIC
from policy_runtime.ros.probe import GraphProbe, Stream
from policy_runtime.serving.config import ObservationSource
from policy_runtime.serving.decode import NamePicker, pose_observation
from policy_runtime.serving.topics import image_pixels

__all__ = ["Check", "run_preflight"]

PROGRAM_TOPIC = "/io_and_status_controller/robot_program_running"
SCALING_TOPIC = "/speed_scaling_state_broadcaster/speed_scaling"
MESSAGE_TYPES = {
    "joint_state": "sensor_msgs/msg/JointState",
    "pose": "geometry_msgs/msg/PoseStamped",
    "image": "sensor_msgs/msg/Image",
}
#: A stream's measured rate may be this far (fraction) from the expected one.
RATE_TOLERANCE = 0.2
#: Stamps this far from this machine's clock (median, s) are a clock skew.
MAX_SKEW_S = 0.1


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def run_preflight(
    deployment_path: Path, duration_s: float = 3.0, discovery_s: float = 5.0
) -> list[Check]:
    """Every check of the module docs against the graph seen for ``duration_s`` seconds."""
    try:
        cell = DeploymentConfig.load(deployment_path)
    except ValueError as exc:
        return [Check("deployment", False, str(exc))]
    checks = [Check("deployment", True, f"{deployment_path}: {cell.robot.type}")]
    bundle_check, specs = _load_bundle(cell)
    sources = cell.server_config().observations
    probe = GraphProbe("prt_preflight")
    try:
        wanted = {"/joint_states"} | {sources[key].topic for key in specs if key in sources}
        wanted |= {cell.camera_topic(name) for name in cell.cameras}
        types = _discover(probe, wanted, discovery_s)
        probe.listen("/joint_states", JointState, qos.STREAM)
        probe.listen(PROGRAM_TOPIC, Bool, qos.LATCHED)
        probe.listen(SCALING_TOPIC, Float64, qos.STREAM)
        for name in cell.cameras:
            probe.listen(cell.camera_topic(name), Image, qos.SENSOR)
        watched = {
            source.topic: source.type
            for key, source in sources.items()
            if key in specs and MESSAGE_TYPES[source.type] in types.get(source.topic, [])
        }
        for topic, kind in watched.items():
            if topic not in probe.streams:
                message = {"joint_state": JointState, "pose": PoseStamped, "image": Image}[kind]
                probe.listen(topic, message, qos.SENSOR if kind == "image" else qos.STREAM)
        time.sleep(duration_s)
        subscribers = probe.node.count_subscribers(COMMAND_TOPIC)
        now = time.time()
        checks += [
            _joint_states(probe.stream("/joint_states"), cell, now),
            _program(probe.stream(PROGRAM_TOPIC)),
            _scaling(probe.stream(SCALING_TOPIC), cell),
            _command_topic(subscribers),
        ]
        for name, camera in cell.cameras.items():
            stream = probe.stream(cell.camera_topic(name))
            checks.append(_camera(name, cell.camera_topic(name), stream, camera.fps, now))
        checks.append(bundle_check)
        for key, shape in specs.items():
            source = sources.get(key)
            checks.append(_observation(key, shape, source, types, probe.stream, now))
        checks.append(_workspace(probe.stream("/joint_states"), cell))
    finally:
        probe.close()
    return checks


def _discover(probe: GraphProbe, wanted: set[str], timeout_s: float) -> dict[str, list[str]]:
    """The graph's topics and types once every ``wanted`` topic is seen (DDS discovery takes a
    moment), or as they are after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    time.sleep(0.5)
    types = probe.topic_types()
    while not wanted <= set(types) and time.monotonic() < deadline:
        time.sleep(0.1)
        types = probe.topic_types()
    return types


def _load_bundle(cell: DeploymentConfig) -> tuple[Check, dict[str, tuple[int, ...]]]:
    from policy_runtime.inference import load_policy

    try:
        runtime = load_policy(cell.bundle)
        cell.server_config().for_policy(runtime.specs)
    except (ValueError, FileNotFoundError) as exc:
        return Check("bundle", False, f"{cell.bundle}: {exc}"), {}
    specs = {k.key: tuple(k.shape) for k in runtime.specs.obs.keys}
    detail = f"{cell.bundle.name}: {runtime.specs.kind} policy, reads {sorted(specs)}"
    return Check("bundle", True, detail), specs


def _joint_states(stream: Stream, cell: DeploymentConfig, now: float) -> Check:
    name, expected = "joint_states", cell.robot.controller_hz
    msg = stream.newest
    if msg is None:
        return Check(name, False, "no /joint_states received (is the driver running?)")
    missing = sorted(set(JOINT_NAMES) - set(msg.name))
    if missing:
        return Check(name, False, f"/joint_states lacks joints {missing} (names: {msg.name})")
    problem = _timing_problem(stream, "/joint_states", expected, 5.0, now)
    if problem is not None:
        return Check(name, False, f"{problem} (a {cell.robot.type} driver runs {expected:g} Hz)")
    rate, skew = stream.rate(), stream.skew()
    return Check(name, True, f"{rate:.1f} Hz (expected {expected:g}), stamps {skew * 1e3:+.1f} ms")


def _timing_problem(
    stream: Stream, topic: str, expected_hz: float, stale_periods: float, now: float
) -> str | None:
    """Why a periodic stream is not fit (stale, off its rate, stamped off this machine's
    clock), or None."""
    age = now - stream.arrivals[-1]
    if age > stale_periods / expected_hz:
        return f"stale: the newest message on {topic} arrived {age * 1e3:.0f} ms ago"
    rate = stream.rate()
    if abs(rate - expected_hz) > RATE_TOLERANCE * expected_hz:
        return f"{rate:.1f} Hz on {topic}, expected {expected_hz:g}"
    skew = stream.skew()
    if not abs(skew) <= MAX_SKEW_S:
        return f"stamps on {topic} {skew * 1e3:+.0f} ms from this clock (clock skew?)"
    return None


def _program(stream: Stream) -> Check:
    msg = stream.newest
    if msg is None:
        return Check("program_running", False, f"nothing on {PROGRAM_TOPIC}")
    if not msg.data:
        return Check("program_running", False, "the robot program is not running (pendant)")
    return Check("program_running", True, "the robot program runs")


def _scaling(stream: Stream, cell: DeploymentConfig) -> Check:
    minimum = cell.executor.watchdog.min_speed_scaling_percent
    msg = stream.newest
    if msg is None:
        return Check("speed_scaling", False, f"nothing on {SCALING_TOPIC}")
    if not msg.data >= minimum:
        return Check(
            "speed_scaling", False, f"{msg.data:g}%: the executor holds below {minimum:g}%"
        )
    return Check("speed_scaling", True, f"{msg.data:g}% (holds below {minimum:g}%)")


def _command_topic(subscribers: int) -> Check:
    if subscribers == 0:
        return Check(
            "command_topic",
            False,
            f"nothing subscribes to {COMMAND_TOPIC}: activate forward_position_controller",
        )
    return Check("command_topic", True, f"{subscribers} subscriber(s) on {COMMAND_TOPIC}")


def _camera(name: str, topic: str, stream: Stream, fps: float, now: float) -> Check:
    label = f"camera {name}"
    if stream.newest is None:
        return Check(label, False, f"no frame on {topic}")
    problem = _timing_problem(stream, topic, fps, 3.0, now)
    if problem is not None:
        return Check(label, False, problem)
    rate, skew = stream.rate(), stream.skew()
    return Check(label, True, f"{rate:.1f} fps, capture to arrival {skew * 1e3:.1f} ms")


def _observation(
    key: str,
    shape: tuple[int, ...],
    source: ObservationSource | None,
    types: dict[str, list[str]],
    stream_of: Callable[[str], Stream],
    now: float,
) -> Check:
    label = f"observation {key}"
    if source is None:
        return Check(label, False, "the deployment maps it to no topic")
    wanted = MESSAGE_TYPES[source.type]
    if source.topic not in types:
        return Check(label, False, f"{source.topic} does not exist in the graph")
    if wanted not in types[source.topic]:
        return Check(label, False, f"{source.topic} is {types[source.topic]}, not {wanted}")
    stream = stream_of(source.topic)
    if stream.newest is None:
        return Check(label, False, f"{source.topic} exists but nothing arrived")
    try:
        got = _decoded_shape(source, stream.newest)
    except ValueError as exc:
        return Check(label, False, f"{source.topic}: {exc}")
    fits = got == shape if source.type != "image" else got[2:] == shape[2:]
    if not fits:
        return Check(label, False, f"{source.topic} gives {got}, the policy reads {shape}")
    age = now - stream.arrivals[-1]
    return Check(label, True, f"{source.topic}: {got}, newest {age * 1e3:.0f} ms ago")


def _decoded_shape(source: ObservationSource, msg: Any) -> tuple[int, ...]:
    if source.type == "joint_state":
        picker = NamePicker(source.names, source.name_prefix)
        return tuple(picker(msg.name, getattr(msg, source.field)).shape)
    if source.type == "pose":
        p, o = msg.pose.position, msg.pose.orientation
        return tuple(pose_observation((p.x, p.y, p.z), (o.x, o.y, o.z, o.w)).shape)
    return tuple(image_pixels(msg).shape)


def _workspace(stream: Stream, cell: DeploymentConfig) -> Check:
    msg = stream.newest
    if msg is None:
        return Check("workspace", False, "no joint states to place the TCP")
    try:
        q = NamePicker(JOINT_NAMES)(msg.name, msg.position)
    except ValueError as exc:
        return Check("workspace", False, f"/joint_states: {exc}")
    tcp = cell.kinematics().tcp_position(q)
    limits = cell.executor.limits
    low, high = np.asarray(limits.workspace_min_m), np.asarray(limits.workspace_max_m)
    where = ", ".join(f"{v:.3f}" for v in tcp)
    if np.all(tcp >= low) and np.all(tcp <= high):
        return Check("workspace", True, f"TCP ({where}) m inside the box")
    axes = [a for a, lo, hi, v in zip("xyz", low, high, tcp, strict=True) if not lo <= v <= hi]
    return Check("workspace", False, f"TCP ({where}) m outside the box on {', '.join(axes)}")
