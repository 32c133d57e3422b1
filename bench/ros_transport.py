"""The ROS 2 layer's costs, side by side with what they add to, in one run.

    python -m bench.ros_transport [--seconds 20] [--frames 150]

1. Latency: the bundled policy's prediction on the bare runtime, against the executor's
   request-to-chunk round trip through ROS 2 (composed in one process, and server and executor
   in two) and its observation-to-chunk latency (real time, wall clock): what ROS adds.
2. Images: 640x480 rgb8 at 30 Hz from one process to another, with Fast DDS's default
   transports and with the shipped profile (config/fastdds_shm.xml), to a best-effort and a
   reliable subscriber: frames delivered and latency.
3. Executor tick jitter with rclpy in the loop, at 125 Hz (UR5 CB3) and 500 Hz (e-series),
   driven by the sim bridge in real time (the driver here): the driver's own joint-state period
   error, the period error of the commands the executor publishes, the executor's cost per
   tick, and the joint-states-to-command round trip.
4. The simulated graph's real-time factor in fast mode (the bridge in lockstep with the
   executor and the policy) with no camera and with two 640x480 cameras with depth at 30 Hz.

Figures are medians and p99s of one run on this machine; the README quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUNDLE = ROOT / "bundles" / "push_t_drifting"
PROFILE = ROOT / "config" / "fastdds_shm.xml"
LAUNCH = ROOT / "launch" / "sim.launch.yaml"
IMAGE_TOPIC = "/bench/image"


# -- images across processes ----------------------------------------------------------------------


def _image_publisher(frames: int) -> None:
    import rclpy
    from sensor_msgs.msg import Image

    from policy_runtime.ros import qos

    rclpy.init()
    node = rclpy.create_node("bench_image_publisher")
    publisher = node.create_publisher(Image, IMAGE_TOPIC, qos.SENSOR_PUBLISH)
    deadline = time.monotonic() + 20
    while publisher.get_subscription_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1.0)
    pixels = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8).tobytes()
    start = time.monotonic()
    for i in range(frames):
        msg = Image(height=480, width=640, encoding="rgb8", step=1920, data=pixels)
        now = time.time()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
        msg.header.frame_id = str(i)
        publisher.publish(msg)
        next_frame = start + (i + 1) / 30.0
        time.sleep(max(0.0, next_frame - time.monotonic()))
    time.sleep(2.0)
    node.destroy_node()
    rclpy.shutdown()


def _image_subscriber(reliable: bool, seconds: float) -> None:
    import rclpy
    from sensor_msgs.msg import Image

    from policy_runtime.ros import qos

    rclpy.init()
    node = rclpy.create_node("bench_image_subscriber")
    latencies: list[float] = []

    def on_image(msg: Image) -> None:
        sent = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        latencies.append(time.time() - sent)

    node.create_subscription(Image, IMAGE_TOPIC, on_image, qos.STREAM if reliable else qos.SENSOR)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(json.dumps(latencies), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def image_delivery(frames: int, profile: bool, reliable: bool) -> tuple[float, float, float]:
    """Frames delivered (fraction) and latency p50, p99 (ms)."""
    env = dict(os.environ)
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    if profile:
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    me = [sys.executable, "-m", "bench.ros_transport"]
    seconds = frames / 30.0 + 8.0
    subscriber = subprocess.Popen(
        [*me, "--role", "subscriber", "--reliable", str(reliable), "--seconds", str(seconds)],
        stdout=subprocess.PIPE, env=env, cwd=ROOT, text=True,
    )  # fmt: skip
    publisher = subprocess.Popen(
        [*me, "--role", "publisher", "--frames", str(frames)], env=env, cwd=ROOT
    )
    out, _ = subscriber.communicate(timeout=seconds + 30)
    publisher.wait(timeout=30)
    latencies = np.asarray(json.loads(out.strip().splitlines()[-1])) * 1e3
    if latencies.size == 0:
        return 0.0, float("nan"), float("nan")
    return latencies.size / frames, float(np.median(latencies)), float(np.quantile(latencies, 0.99))


# -- graphs: latency, jitter, real-time factor -----------------------------------------------------


class Diagnostics:
    """The latest /diagnostics status of each node."""

    def __init__(self) -> None:
        import threading

        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray

        from policy_runtime.ros import qos

        rclpy.init()
        self.node = rclpy.create_node("bench_diagnostics")
        self.latest: dict[str, dict[str, str]] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on, qos.STREAM)
        self._running = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        import rclpy

        while self._running:
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def _on(self, msg: Any) -> None:
        for status in msg.status:
            self.latest[status.name] = {kv.key: kv.value for kv in status.values}

    def clear(self) -> None:
        self.latest = {}

    def close(self) -> None:
        import rclpy

        self._running = False
        self._thread.join()
        self.node.destroy_node()
        rclpy.shutdown()


def run_graph(diagnostics: Diagnostics, seconds: float, **arguments: str) -> dict[str, dict]:
    """``prt launch sim.launch.yaml`` with ``arguments`` for ``seconds``; the last diagnostics."""
    args = [f"{k}:={v}" for k, v in arguments.items()]
    launch = subprocess.Popen(
        [str(BIN / "prt"), "launch", str(LAUNCH), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    diagnostics.clear()
    time.sleep(seconds)
    latest = {k: dict(v) for k, v in diagnostics.latest.items()}
    launch.send_signal(signal.SIGINT)
    launch.wait(timeout=30)
    time.sleep(1.0)
    return latest


def bare_inference(repeats: int = 300) -> tuple[float, float]:
    """The bundle's prediction on onnxruntime, no ROS: p50, p99 (ms)."""
    from policy_runtime.inference import RuntimeOptions, load_policy

    runtime = load_policy(BUNDLE, options=RuntimeOptions(intra_op_threads=1, inter_op_threads=1))
    rng = np.random.default_rng(0)
    obs = {
        k.key: rng.normal(size=(runtime.n_obs_steps, *k.shape)).astype(np.float32)
        for k in runtime.specs.obs.keys
    }
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runtime.predict(obs, rng)
        times.append(time.perf_counter() - start)
    values = np.asarray(times) * 1e3
    return float(np.median(values)), float(np.quantile(values, 0.99))


def _ms(status: dict[str, str], name: str) -> str:
    return f"{status.get(name + '_p50_ms', '?')} / {status.get(name + '_p99_ms', '?')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("publisher", "subscriber"), help=argparse.SUPPRESS)
    parser.add_argument("--reliable", default="False", help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    if args.role == "publisher":
        _image_publisher(args.frames)
        return
    if args.role == "subscriber":
        _image_subscriber(args.reliable == "True", args.seconds)
        return

    from sim_bridge.gl import configure_headless_rendering

    configure_headless_rendering()
    console = Console()
    os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(PROFILE)

    latency = Table(title="1. observation to chunk (ms, p50 / p99), bundled policy")
    latency.add_column("path")
    latency.add_column("request -> chunk")
    latency.add_column("observation -> chunk")
    latency.add_column("added to the bare runtime (p50)")
    p50, p99 = bare_inference()
    latency.add_row("bare runtime (predict)", f"{p50:.2f} / {p99:.2f}", "-", "-")
    diagnostics = Diagnostics()
    base = {"cameras": "[]", "realtime": "true"}
    for composed in ("true", "false"):
        status = run_graph(diagnostics, args.seconds, composed=composed, **base)
        executor = status.get("policy_runtime: executor", {})
        added = float(executor.get("request_to_chunk_p50_ms", "nan")) - p50
        name = "ROS 2, composed" if composed == "true" else "ROS 2, two processes"
        latency.add_row(
            name, _ms(executor, "request_to_chunk"), _ms(executor, "obs_to_chunk"), f"{added:.2f}"
        )
    console.print(latency)

    images = Table(title=f"2. 640x480 rgb8 at 30 Hz across processes, {args.frames} frames")
    for column in ("transport", "subscriber", "delivered", "latency p50 / p99 (ms)"):
        images.add_column(column)
    for profile in (False, True):
        for reliable in (False, True):
            delivered, l50, l99 = image_delivery(args.frames, profile, reliable)
            images.add_row(
                "shipped profile (SHM 32 MB + UDP)" if profile else "Fast DDS defaults",
                "reliable" if reliable else "best effort",
                f"{delivered:.1%}",
                f"{l50:.1f} / {l99:.1f}",
            )
    console.print(images)

    jitter = Table(title="3. executor ticks with rclpy in the loop, real time (ms, p50 / p99)")
    for column in (
        "controller", "driver: joint-state period error", "executor: command period error",
        "executor: tick cost", "joint states -> command", "driver late ticks",
    ):  # fmt: skip
        jitter.add_column(column)
    for hz, config in (("125.0", "executor_ur5.yaml"), ("500.0", "executor_ur5e.yaml")):
        status = run_graph(
            diagnostics, args.seconds, controller_hz=hz,
            executor_config=str(ROOT / "config" / config), **base,
        )  # fmt: skip
        executor = status.get("policy_runtime: executor", {})
        bridge = status.get("sim_bridge: cell", {})
        jitter.add_row(
            f"{hz.split('.')[0]} Hz", _ms(bridge, "period_error"), _ms(executor, "jitter"),
            _ms(executor, "tick_cost"), _ms(bridge, "command_latency"),
            bridge.get("late_ticks", "?"),
        )  # fmt: skip
    console.print(jitter)

    rtf = Table(title="4. simulated graph's real-time factor, fast mode (lockstep)")
    rtf.add_column("cameras")
    rtf.add_column("real-time factor")
    for cameras in ("[]", "[front, wrist]"):
        status = run_graph(diagnostics, args.seconds, realtime="false", cameras=cameras)
        rtf.add_row(
            "none" if cameras == "[]" else "front + wrist, 640x480, depth, 30 Hz",
            status.get("sim_bridge: cell", {}).get("real_time_factor", "?"),
        )
    console.print(rtf)
    diagnostics.close()


if __name__ == "__main__":
    main()
