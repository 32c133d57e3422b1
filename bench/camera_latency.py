"""The camera node's latency, per frame, through librealsense's software device, in one run.

    python -m bench.camera_latency [--seconds 20] [--width 640 --height 480 --fps 30]

The camera node runs here on the test pattern (colour rgb8 + aligned depth), its frames stamped
in the ``global_time`` domain with the instant they are injected: the capture. For each frame:
capture -> the camera's frame thread (librealsense's sensor queues, the syncer), capture -> its
images and camera infos published (align, depth to millimetres, the messages), and capture ->
receipt by a subscriber in another process (reliable, the shipped Fast DDS profile
config/fastdds_shm.xml), colour and depth. All on the host's system clock.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "config" / "fastdds_shm.xml"
BASE = "/camera/bench"


def _subscriber() -> None:
    """Print ``{"color": [[stamp ns, receipt s], ...], "depth": [...]}`` when interrupted."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import Image

    from policy_runtime.ros import qos

    rclpy.init()
    node = rclpy.create_node("bench_camera_subscriber")
    received: dict[str, list[tuple[int, float]]] = {"color": [], "depth": []}

    def keep(key: str) -> object:
        def on_image(msg: Image) -> None:
            now = time.time()
            received[key].append((msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, now))

        return on_image

    node.create_subscription(Image, f"{BASE}/color/image_raw", keep("color"), qos.STREAM)
    node.create_subscription(
        Image, f"{BASE}/aligned_depth_to_color/image_raw", keep("depth"), qos.STREAM
    )
    with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
        rclpy.spin(node)
    print(json.dumps(received), flush=True)


def _quantiles(values_s: list[float]) -> tuple[str, str, str]:
    ms = np.asarray(values_s) * 1e3
    if ms.size == 0:
        return ("-", "-", "-")
    p50, p99 = np.quantile(ms, (0.5, 0.99))
    return (f"{p50:.2f}", f"{p99:.2f}", f"{ms.max():.2f}")


def run(seconds: float, width: int, height: int, fps: int) -> Table:
    import rclpy
    from rclpy.parameter import Parameter

    from policy_runtime.camera import CameraFrame
    from policy_runtime.ros.camera_node import CameraNode

    subscriber = subprocess.Popen(
        [sys.executable, "-m", "bench.camera_latency", "--subscriber"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env=os.environ.copy(),
    )  # fmt: skip
    rclpy.init()
    overrides = {"device": "test_pattern", "camera_name": "bench", "width": width}
    overrides |= {"height": height, "fps": fps, "exposure_us": 10000.0, "white_balance_k": 4600.0}
    node = CameraNode(parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    records: list[tuple[float, float, float, float]] = []  # capture, thread, published, stamp
    recording = threading.Event()
    publish = node.camera.on_frame

    def timed(frame: CameraFrame) -> None:
        publish(frame)
        if recording.is_set():
            records.append((frame.capture_s, frame.received_s, time.time(), frame.stamp_s))

    node.camera.on_frame = timed
    deadline = time.monotonic() + 30
    while node.pub_color.get_subscription_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # discovery of the depth topic, warm-up
    recording.set()
    time.sleep(seconds)
    recording.clear()
    time.sleep(1.0)  # the last frames in flight
    subscriber.send_signal(signal.SIGINT)
    out, _ = subscriber.communicate(timeout=30)
    snapshot = node.camera.stats.snapshot()
    node.close()
    node.destroy_node()
    rclpy.shutdown()

    received = json.loads(out.strip().splitlines()[-1])
    # By the stamp in nanoseconds, exactly as the messages carry it.
    capture = {round(stamp * 1e9): cap for cap, _, _, stamp in records}
    table = Table(
        title=f"prt-camera, test pattern {width}x{height} rgb8 + aligned depth @ {fps} Hz, "
        f"{seconds:g} s (ms, host clock)"
    )
    for column in ("capture ->", "p50", "p99", "max", "frames"):
        table.add_column(column, justify="left" if column == "capture ->" else "right")
    sent = len(records)
    table.add_row(
        "frame thread (librealsense)", *_quantiles([r[1] - r[0] for r in records]), str(sent)
    )
    table.add_row("published (in the node)", *_quantiles([r[2] - r[0] for r in records]), str(sent))
    for key in ("color", "depth"):
        latencies = [t - capture[ns] for ns, t in received[key] if ns in capture]
        table.add_row(
            f"{key} received (other process)", *_quantiles(latencies), f"{len(latencies)}/{sent}"
        )
    table.caption = (
        f"frames: received/sent; the node: {snapshot.dropped} dropped "
        f"({snapshot.skipped} skipped), {snapshot.stalls} stalls"
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--subscriber", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(PROFILE))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.subscriber:
        _subscriber()
        return
    Console().print(run(args.seconds, args.width, args.height, args.fps))


if __name__ == "__main__":
    main()
