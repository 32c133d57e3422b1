"""``prt-object-state`` as a process over real DDS: push_t's marked block rendered by the sim
from the front camera (the arm parked out of view) is published as the camera's images with
chosen stamps; the node's JointState carries the block's keypoints in base_link within 3 mm of
the simulator's, stamped with the image's stamp; frames without the block publish nothing and
are counted on /diagnostics. Then what the node refuses at start, and a deployment without
object_state (the node exits 0: a launch file carries on)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytest.importorskip("rclpy", reason="the ROS 2 Jazzy wheels are not installed")
pytest.importorskip("cv2", reason="OpenCV (the calibration extra) is missing")

from calibration.intrinsics import CameraIntrinsics
from calibration.result import CameraCalibration
from tests.ros_graph import BUNDLE, NodeProcess, Watcher, wait_for
from tests.test_markers import PARKED_Q, mujoco_forward

pytestmark = [pytest.mark.ros, pytest.mark.slow]

WIDTH, HEIGHT = 640, 480
KEY = "block_keypoints"
TOPIC = f"/perception/{KEY}"
IMAGE_TOPIC = "/camera/front/color/image_raw"
FRAME = "front_color_optical_frame"
SEEDS = (0, 1, 2)
MAX_KEYPOINT_MM = 3.0


def _status(watcher: Watcher) -> tuple[Any, dict[str, str]] | None:
    """The newest object state status on /diagnostics and its values."""
    for msg in reversed(watcher.received("/diagnostics")):
        for status in msg.status:
            if status.name == f"policy_runtime: object_state {KEY} (front)":
                return status, {kv.key: kv.value for kv in status.values}
    return None


@pytest.fixture(scope="module")
def scene() -> dict[str, Any]:
    """The front camera's true calibration, the block's object model, and images: the block
    at a few of push_t's random poses with the simulator's keypoints; the block out of view."""
    from sim_bridge import gl

    gl.configure_headless_rendering()
    from sim_bridge.env import make_env
    from sim_bridge.tasks import push_t

    env = make_env("push_t", cameras=(), block_marker=True)
    try:
        k = env.cell.camera_intrinsics("front", WIDTH, HEIGHT)
        base_from_camera = np.linalg.inv(env.cell.body_pose("base_link")) @ env.cell.camera_pose(
            "front"
        )
        calibration = CameraCalibration.from_transform(
            "front",
            base_from_camera,
            CameraIntrinsics.from_matrix(k, WIDTH, HEIGHT),
            "sim_truth",
            "eye_to_base",
            20,
            np.array([0.0]),
            np.array([0.0]),
        )
        views = []
        for seed in SEEDS:
            env.reset(seed)
            pose = push_t.block_pose(env)
            env.cell.reset(PARKED_Q)
            env.place_free_body(
                "t_block", np.array([pose[0], pose[1], push_t.THICKNESS / 2]), pose[2]
            )
            mujoco_forward(env)
            truth = env.task.observation(env)[KEY].reshape(-1, 2).astype(np.float64)
            views.append((env.render("front", WIDTH, HEIGHT), truth))
        env.place_free_body("t_block", np.array([3.0, 3.0, push_t.THICKNESS / 2]), 0.0)
        mujoco_forward(env)
        out_of_view = env.render("front", WIDTH, HEIGHT)
    finally:
        env.close()
    return {
        "calibration": calibration,
        "model": push_t.marker_model().model_dump(mode="json"),
        "views": views,
        "out_of_view": out_of_view,
    }


def _deployment(
    tmp_path: Path,
    scene: dict[str, Any],
    object_state: bool = True,
    calibration: CameraCalibration | None = None,
    write_calibration: bool = True,
    write_object: bool = True,
) -> Path:
    calibration = calibration or scene["calibration"]
    if write_calibration:
        calibration.save(tmp_path / "front.yaml")
    if write_object:
        (tmp_path / "block.yaml").write_text(yaml.safe_dump(scene["model"]))
    cell: dict[str, Any] = {
        "robot": {"type": "ur5"},
        "bundle": str(BUNDLE),
        "cameras": {"front": {"serial": "front-sim", "calibration": "front.yaml"}},
        "observations": {
            "ee_pose": {"topic": "/tcp_pose_broadcaster/pose", "type": "pose", "rate_hz": 125}
        },
    }
    if object_state:
        cell["object_state"] = {KEY: {"cameras": ["front"], "object": "block.yaml"}}
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump(cell))
    return path


def test_the_node_publishes_the_blocks_keypoints_with_the_images_stamps(
    tmp_path: Path, scene: dict[str, Any]
) -> None:
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from sensor_msgs.msg import Image, JointState

    from policy_runtime.ros import qos
    from policy_runtime.ros.messages import image_to_msg, seconds

    node = NodeProcess(
        "prt-object-state",
        {
            "deployment": _deployment(tmp_path, scene),
            "lost_warn_frames": 2,
            "log_period_s": 60.0,
            "diagnostics_period_s": 0.2,
        },
        tmp_path,
    )
    watcher = Watcher()
    try:
        watcher.keep(TOPIC, JointState, qos.STREAM)
        watcher.keep("/diagnostics", DiagnosticArray, qos.STREAM)
        camera = watcher.node.create_publisher(Image, IMAGE_TOPIC, qos.SENSOR_PUBLISH)
        wait_for(lambda: camera.get_subscription_count() > 0, 60, f"{node.output()}")

        def estimate_of(stamp: float) -> list[Any]:
            return [m for m in watcher.received(TOPIC) if seconds(m.header.stamp) == stamp]

        def processed() -> int:
            got = _status(watcher)
            if got is None:
                return 0
            values = got[1]
            return int(values["tracked"]) + sum(
                int(v) for k, v in values.items() if k.startswith("lost.")
            )

        def publish(image: np.ndarray, stamp: float, done: Any) -> None:
            """Publish until ``done()``: best effort (the node's QoS) may drop a frame."""
            for _ in range(5):
                camera.publish(image_to_msg(image, stamp, FRAME, "rgb8"))
                try:
                    wait_for(done, 3.0, f"frame {stamp}")
                    return
                except AssertionError:
                    continue
            raise AssertionError(f"frame {stamp} never processed:\n{node.output()}")

        # The block at a few poses: one estimate each, stamped with its image.
        for index, (image, truth) in enumerate(scene["views"]):
            stamp = 1000.0 + 0.25 * index
            publish(image, stamp, lambda stamp=stamp: bool(estimate_of(stamp)))
            msg = estimate_of(stamp)[0]
            n = truth.size
            assert msg.header.frame_id == "base_link"
            assert list(msg.name) == [
                *(f"{KEY}/{i}" for i in range(n)),
                f"{KEY}.confidence",
                f"{KEY}.latency_s",
            ]
            keypoints = np.asarray(msg.position[:n]).reshape(-1, 2)
            error_mm = np.linalg.norm(keypoints - truth, axis=1).max() * 1e3
            assert error_mm <= MAX_KEYPOINT_MM, (index, error_mm)
            confidence, latency = msg.position[n], msg.position[n + 1]
            assert 0.0 < confidence <= 1.0
            assert latency > 0.0  # now (the wall clock) minus a stamp in 1970
        stamps = {seconds(m.header.stamp) for m in watcher.received(TOPIC)}
        assert stamps == {1000.0, 1000.25, 1000.5}

        # Frames without the block: the block out of view, then a plain grey image (each once
        # the node's diagnostics count the frame before it).
        wait_for(lambda: processed() == len(scene["views"]), 5, "the diagnostics to catch up")
        grey = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
        for index, image in enumerate((scene["out_of_view"], grey)):
            before = processed()
            publish(image, 2000.0 + index, lambda before=before: processed() > before)

        def level() -> bytes | None:
            got = _status(watcher)
            return None if got is None else got[0].level

        wait_for(lambda: level() == DiagnosticStatus.WARN, 5, "WARN after two lost frames")
        status, values = _status(watcher)  # type: ignore[misc]
        assert status.message.startswith("lost: not_visible")
        assert int(values["lost.not_visible"]) >= 2
        assert values["last_problem"].startswith("not_visible")
        # Tracked again: the lost frames published nothing before this estimate.
        image, _ = scene["views"][0]
        publish(image, 3000.0, lambda: bool(estimate_of(3000.0)))
        stamps = {seconds(m.header.stamp) for m in watcher.received(TOPIC)}
        assert stamps == {1000.0, 1000.25, 1000.5, 3000.0}
        wait_for(lambda: level() == DiagnosticStatus.OK, 5, "OK once tracked again")
        status, values = _status(watcher)  # type: ignore[misc]
        assert int(values["estimates"]) == 4 and int(values["tracked"]) == 4
        assert 0.0 < float(values["confidence"]) <= 1.0
        assert float(values["latency_p50_ms"]) > 0 and "processing_p99_ms" in values
        assert {"skipped", "estimate_rate_hz", "lost.low_confidence"} <= set(values)
        output = node.output()
        assert "frame(s) lost, nothing published for them" in output
        assert output.count("nothing published for them") == 1  # one line per log_period_s
        assert "tracking again (1 more frame(s) lost before this one)" in output
    finally:
        watcher.close()
        assert node.stop() == 0, node.output()


def _tool_calibration(scene: dict[str, Any]) -> CameraCalibration:
    truth = scene["calibration"]
    return CameraCalibration.from_transform(
        "front",
        truth.parent_from_optical,
        truth.intrinsics,
        "park",
        "eye_in_hand",
        20,
        np.array([0.0]),
        np.array([0.0]),
    )


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("no_calibration", r"cameras.front.calibration .*front.yaml does not exist"),
        ("tool0", r"front.yaml places the camera on tool0 \(eye_in_hand\)"),
        ("no_object", r"object_state.block_keypoints.object .*block.yaml does not exist"),
    ],
)
def test_a_bad_configuration_stops_the_node_naming_the_file(
    tmp_path: Path, scene: dict[str, Any], case: str, named: str
) -> None:
    deployment = _deployment(
        tmp_path,
        scene,
        calibration=_tool_calibration(scene) if case == "tool0" else None,
        write_calibration=case != "no_calibration",
        write_object=case != "no_object",
    )
    node = NodeProcess("prt-object-state", {"deployment": deployment}, tmp_path)
    try:
        assert node.process.wait(timeout=60) == 2, node.output()
    finally:
        node.stop()
    assert re.search(named, node.output()), node.output()


def test_a_deployment_without_object_state_exits_cleanly(
    tmp_path: Path, scene: dict[str, Any]
) -> None:
    start = time.monotonic()
    deployment = _deployment(tmp_path, scene, object_state=False)
    node = NodeProcess("prt-object-state", {"deployment": deployment}, tmp_path)
    try:
        assert node.process.wait(timeout=60) == 0, node.output()
    finally:
        node.stop()
    assert "has no object_state entries: nothing to track" in node.output()
    assert time.monotonic() - start < 30
