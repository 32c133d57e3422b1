"""The sim bridge's announcements in fast mode, which a lockstep policy server waits for: each
tick names the stamps it has published, and every frame it names arrives."""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="the ROS 2 Jazzy wheels are not installed")

from tests.ros_graph import NodeProcess, Watcher, wait_for

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CAMERA = "/camera/front/color/image_raw"


def test_fast_mode_announces_each_ticks_stamps_and_every_announced_frame_arrives(
    tmp_path: Path,
):
    """Each tick names its own stamp for the state topics and, for the camera, the newest
    frame due at 30 Hz (less than a camera period old; -inf before the first); every frame
    named arrives, and no frame arrives that was not named."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState

    from policy_runtime.ros import qos
    from policy_runtime.ros.messages import seconds

    node = NodeProcess(
        "prt-sim-bridge",
        {"realtime": False, "cameras": "[front]", "image_width": 64, "image_height": 48},
        tmp_path,
    )
    watch = Watcher("test_announcements")
    try:
        watch.keep(CAMERA, Image, qos.LOCKSTEP)
        wait_for(lambda: len(watch.received(CAMERA)) >= 1, 60, "a first frame")
        every = (
            QoSProfile(  # the latched profile, but every announcement kept (a server: the newest)
                depth=1,
                history=HistoryPolicy.KEEP_ALL,
                reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.TRANSIENT_LOCAL,
            )
        )
        watch.keep("/sim_bridge/published", JointState, every)
        wait_for(lambda: len(watch.received("/sim_bridge/published")) >= 200, 60, "ticks")
        announcements = watch.received("/sim_bridge/published")[:200]
        time.sleep(1.0)  # the frames still rendering
        frames = {round(seconds(m.header.stamp), 6) for m in watch.received(CAMERA)}
    finally:
        watch.close()
        assert node.stop() == 0, node.output()
    ticks = [seconds(m.header.stamp) for m in announcements]
    assert max(abs(b - a - 0.008) for a, b in itertools.pairwise(ticks)) < 1e-6  # none missed
    named = set()
    for msg in announcements:
        tick = seconds(msg.header.stamp)
        stamps = dict(zip(msg.name, msg.position, strict=True))
        for topic in ("/joint_states", "/tcp_pose_broadcaster/pose", "/sim_bridge/task_state"):
            assert abs(stamps[topic] - tick) < 1e-6, (topic, stamps[topic], tick)
        frame = stamps[CAMERA]
        assert stamps["/camera/front/color/camera_info"] == frame
        if frame > -math.inf:
            assert -1e-6 < tick - frame < 1.0 / 30.0, (tick, frame)
            named.add(round(frame, 6))
    assert len(named) >= 40  # 200 ticks at 125 Hz: 1.6 s of frames at 30 Hz
    first_received = min(frames)  # the image subscription started before the announcements'
    assert {f for f in named if f >= first_received} <= frames
    assert {f for f in frames if min(named) <= f <= max(named)} == named
