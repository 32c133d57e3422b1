"""The RealSense camera: clock mapping, then the core through a real librealsense software device
(pixels, depth units, stamps, drops, stalls, removal, refusals), then ``prt-camera`` as a process
on realsense-ros's topics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from policy_runtime.camera import (
    CameraConfig,
    CameraFrame,
    CameraSnapshot,
    ClockOffset,
    FrameClock,
)
from tests.ros_graph import NodeProcess, Watcher, wait_for

rs = pytest.importorskip("pyrealsense2", reason="pyrealsense2 (the realsense extra) is missing")

from policy_runtime.camera.device import CameraError, DeviceHub  # noqa: E402
from policy_runtime.camera.software import (  # noqa: E402
    COLOR_COEFFS,
    SoftwareCamera,
    pattern_color,
)
from policy_runtime.camera.stream import Camera  # noqa: E402

W, H, FPS = 64, 48, 30
SERIAL = "cam-1"
#: ROS time minus system time, as under a simulated clock.
ROS_OFFSET_S = 123.25

# -- the clock ------------------------------------------------------------------------------


def test_hardware_clock_offset_converges_to_offset_plus_minimum_delay():
    rng = np.random.default_rng(0)
    true_offset = 1_700_000_000.0 - 52.5  # host seconds minus device seconds
    device = 52.5 + np.arange(600) / 30.0  # 20 s of frames at 30 Hz, device clock
    delays = 0.002 + rng.exponential(0.004, device.size)  # > 0, jittery, min ~2 ms
    arrivals = device + true_offset + delays
    estimate = ClockOffset(window_s=10.0)
    estimates = [estimate.update(d, a) for d, a in zip(device, arrivals, strict=True)]
    # The offset plus the smallest delay of the window (10 s: 300 frames).
    for i in (0, 100, 299, 450, 599):
        window = delays[max(0, i - 299) : i + 1]
        assert estimates[i] == pytest.approx(true_offset + window.min(), abs=1e-6)
    assert 0.002 <= estimates[-1] - true_offset < 0.0025
    # Stamps mapped with it keep the device's spacing; the arrivals' spacing jitters.
    clock = FrameClock(window_s=10.0)
    mapped = [
        clock.capture(d * 1000.0, "hardware_clock", a).system_s
        for d, a in zip(device, arrivals, strict=True)
    ]
    assert np.abs(np.diff(mapped[300:]) - 1 / 30.0).max() < 5e-4
    assert np.abs(np.diff(arrivals[300:]) - 1 / 30.0).max() > 1e-2


def test_a_device_clock_jump_restarts_the_window():
    estimate = ClockOffset(window_s=10.0, jump_s=1.0)
    for t in range(10):
        estimate.update(100.0 + t, 5000.0 + t + 0.003)
    assert estimate.value == pytest.approx(4900.003)
    # The device restarted: its clock reads 0 again; the old minimum must not survive.
    assert estimate.update(0.5, 5010.004) == pytest.approx(5009.504)


def test_system_time_stamps_map_to_ros_time_with_the_clocks_offset():
    clock = FrameClock(lambda: ROS_OFFSET_S)
    for domain in ("global_time", "system_time"):
        when = clock.capture(1_700_000_000_123.5, domain, arrival_s=0.0)
        assert when.system_s == pytest.approx(1_700_000_000.1235, abs=1e-6)
        assert when.ros_s == pytest.approx(1_700_000_000.1235 + ROS_OFFSET_S, abs=1e-6)
    with pytest.raises(ValueError, match="domain"):
        clock.capture(1.0, "sundial", 0.0)


# -- the core through a software device -------------------------------------------------------


class Frames:
    """Collects copies of the frames a camera hands out (their arrays die with the callback)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.frames: list[CameraFrame] = []

    def __call__(self, frame: CameraFrame) -> None:
        depth = None if frame.depth_mm is None else frame.depth_mm.copy()
        copy = CameraFrame(
            frame.color.copy(),
            depth,
            frame.frame_number,
            frame.capture_s,
            frame.stamp_s,
            frame.received_s,
            frame.intrinsics,
        )
        with self.lock:
            self.frames.append(copy)

    def all(self) -> list[CameraFrame]:
        with self.lock:
            return list(self.frames)


class Rig:
    """A hub, a software camera of the config's size in it, and a :class:`Camera` on it
    collecting frames."""

    def __init__(self, config: CameraConfig, **software: Any) -> None:
        self.hub = DeviceHub.software_only()
        self.software = SoftwareCamera(
            SERIAL, width=config.width, height=config.height, fps=config.fps, **software
        )
        self.hub.add(self.software.device)
        self.frames = Frames()
        self.camera = Camera(self.hub, config, self.frames, ros_minus_system=lambda: ROS_OFFSET_S)
        self.camera.start()
        self.next_number = 1

    def inject(self, count: int, skip: tuple[int, ...] = (), **content: Any) -> list[float]:
        """``count`` frames at the camera's rate (the syncer pairs colour and depth by time);
        their stamps (ms, global time) by frame number - 1."""
        stamps = []
        for _ in range(count):
            number = self.next_number
            self.next_number += 1
            stamps.append(time.time() * 1000.0)
            if number not in skip:
                self.software.inject(number, stamps[-1], **content)
            time.sleep(1.0 / FPS)
        return stamps

    def published(self, count: int) -> list[CameraFrame]:
        wait_for(lambda: len(self.frames.all()) >= count, 5, f"{count} frames")
        return self.frames.all()

    def snapshot(self) -> CameraSnapshot:
        return self.camera.stats.snapshot()

    def close(self) -> None:
        self.camera.close()
        self.software.stop()


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    """``make_rig(serial=..., width=..., ...CameraConfig fields, **SoftwareCamera options)``."""
    rigs: list[Rig] = []

    def make(software: dict[str, Any] | None = None, **config: Any) -> Rig:
        fields = {"serial": SERIAL, "width": W, "height": H, "fps": FPS, **config}
        rigs.append(Rig(CameraConfig(**fields), **(software or {})))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()


def test_pixels_stamps_and_intrinsics_come_back(make_rig: Callable[..., Rig]):
    rig = make_rig()
    stamps = rig.inject(6)
    frames = rig.published(5)
    for frame in frames:
        np.testing.assert_array_equal(frame.color, pattern_color(W, H, frame.frame_number))
        injected = stamps[frame.frame_number - 1] / 1000.0
        assert frame.capture_s == pytest.approx(injected, abs=1e-6)
        assert frame.stamp_s == pytest.approx(injected + ROS_OFFSET_S, abs=1e-6)
    intrinsics = frames[-1].intrinsics
    assert (intrinsics.width, intrinsics.height) == (W, H)
    assert (intrinsics.fx, intrinsics.fy) == pytest.approx((0.71 * W, 0.71 * W + 0.75))
    assert (intrinsics.ppx, intrinsics.ppy) == pytest.approx((W / 2 + 1.0, H / 2 - 2.75))
    assert intrinsics.model == "brown_conrady"
    assert intrinsics.coeffs == pytest.approx(COLOR_COEFFS, rel=1e-6)  # float32 in librealsense
    snapshot = rig.snapshot()
    assert (snapshot.state, snapshot.serial, snapshot.dropped) == ("streaming", SERIAL, 0)
    assert snapshot.published == len(frames) and len(snapshot.latency_s) == len(frames)
    assert all(0 <= latency < 1.0 for latency in snapshot.latency_s)


@pytest.mark.parametrize(
    ("units_m", "raw", "mm"),
    [
        # 1.2345 m in 0.1 mm units. librealsense holds the unit as a float32, 9.99999975e-05 m,
        # so the depth is 1234.49997 mm, and the nearest millimetre is 1234 (no tie to break).
        (0.0001, 12345, 1234),
        (0.001, 1234, 1234),  # millimetres already: passed on unchanged
    ],
)
def test_depth_is_published_in_millimetres(
    make_rig: Callable[..., Rig], units_m: float, raw: int, mm: int
):
    rig = make_rig({"depth_units_m": units_m, "baseline_m": 0.0})
    depth = np.full((H, W), raw, np.uint16)
    depth[:, :8] = 0  # no depth stays no depth
    rig.inject(4, depth=depth)
    frames = [f for f in rig.published(3) if f.depth_mm is not None]
    aligned = frames[-1].depth_mm
    assert aligned is not None and aligned.dtype == np.uint16 and aligned.shape == (H, W)
    # Aligned through the colour lens's distortion, a rim of pixels has no depth; the rest has
    # the injected distance.
    values, counts = np.unique(aligned, return_counts=True)
    assert set(values.tolist()) <= {0, mm}
    assert counts[values == mm].sum() > 0.7 * W * H
    assert (aligned[:, :4] == 0).all()


def test_depth_is_aligned_with_the_extrinsics(make_rig: Callable[..., Rig]):
    """A half plane at 0.5 m seen by a colour camera 5 cm along x: its edge moves by
    fx * baseline / depth pixels, as a pinhole model says."""
    width, height, baseline = 640, 480, 0.05
    rig = make_rig({"baseline_m": baseline}, width=width, height=height)
    depth = np.zeros((height, width), np.uint16)
    depth[:, : width // 2] = 500  # mm
    rig.inject(4, depth=depth)
    frames = [f for f in rig.published(3) if f.depth_mm is not None]
    row = frames[-1].depth_mm[height // 2]  # type: ignore[index]
    edge = int(np.flatnonzero(row)[-1]) + 1
    expected = width // 2 + rig.software.intrinsics.fx * baseline / 0.5  # 45.4 px further
    assert abs(edge - expected) <= 1.5, (edge, expected)


def test_gaps_in_frame_numbers_count_as_dropped(make_rig: Callable[..., Rig]):
    rig = make_rig()
    rig.inject(10, skip=(5, 6))
    wait_for(lambda: any(f.frame_number == 10 for f in rig.frames.all()), 5, "frame 10")
    snapshot = rig.snapshot()
    assert snapshot.dropped - snapshot.skipped == 2
    assert {5, 6}.isdisjoint(f.frame_number for f in rig.frames.all())


def test_a_stalled_device_is_reopened_and_streams_again(make_rig: Callable[..., Rig]):
    rig = make_rig(frame_timeout_s=0.3, reconnect_period_s=0.1)
    rig.inject(3)
    rig.published(2)
    # Nothing for longer than frame_timeout_s: closed, then opened again.
    wait_for(lambda: rig.snapshot().reconnects >= 1, 5, "a reconnect")
    assert rig.snapshot().stalls >= 1
    before = len(rig.frames.all())
    rig.inject(5)
    rig.published(before + 3)
    assert rig.snapshot().state == "streaming"


def test_a_removed_device_is_waited_for_and_reopened(make_rig: Callable[..., Rig]):
    rig = make_rig(reconnect_period_s=0.1)
    rig.software.start()
    rig.published(3)
    rig.hub.remove(rig.software.device)
    wait_for(lambda: rig.snapshot().state == "error", 5, "the removal")
    snapshot = rig.snapshot()
    assert (snapshot.removals, snapshot.reconnects) == (1, 0)
    assert f"camera {SERIAL}: not connected" in snapshot.problem
    before = len(rig.frames.all())
    rig.hub.add(rig.software.device)
    rig.published(before + 3)
    snapshot = rig.snapshot()
    assert (snapshot.state, snapshot.reconnects) == ("streaming", 1)


def test_options_are_set_in_the_sensors_units(make_rig: Callable[..., Rig]):
    rig = make_rig(
        exposure_us=20000.0, white_balance_k=4604.0, laser_power_mw=100.0, sync_mode="slave"
    )
    color, depth = rig.software.color_sensor, rig.software.depth_sensor
    assert color.get_option(rs.option.enable_auto_exposure) == 0
    assert color.get_option(rs.option.exposure) == 200  # the RGB sensor counts 100 us
    assert color.get_option(rs.option.enable_auto_white_balance) == 0
    assert color.get_option(rs.option.white_balance) == 4600  # steps of 10 K
    assert depth.get_option(rs.option.laser_power) == 90  # steps of 30 mW
    assert depth.get_option(rs.option.inter_cam_sync_mode) == 2


@pytest.mark.parametrize(
    ("config", "expected", "fields"),
    [
        (
            CameraConfig(serial="nope"),
            [f"camera nope: not connected (connected: {SERIAL})"],
            ("serial",),
        ),
        (
            CameraConfig(serial=SERIAL, width=1920, height=1080),
            [f"camera {SERIAL}", "1920x1080 @ 30", "supported: 64x48 @ 30, 320x240 @ 15"],
            ("width", "height", "fps"),
        ),
        (
            CameraConfig(serial=SERIAL, width=W, height=H, exposure_us=2e6),
            [f"camera {SERIAL}", "option exposure = 20000", "range [1, 10000]"],
            ("exposure_us",),
        ),
        (
            CameraConfig(serial=SERIAL, width=W, height=H, laser_power_mw=500.0),
            ["option laser_power = 500", "range [0, 360]"],
            ("laser_power_mw",),
        ),
    ],
)
def test_bad_configurations_are_refused_by_name(
    config: CameraConfig, expected: list[str], fields: tuple[str, ...]
):
    hub = DeviceHub.software_only()
    software = SoftwareCamera(SERIAL, width=W, height=H, fps=FPS, modes=[(320, 240, 15)])
    hub.add(software.device)
    camera = Camera(hub, config, Frames())
    with pytest.raises(CameraError) as refused:
        camera.start()
    for text in expected:
        assert text in str(refused.value)
    assert refused.value.fields == fields


def test_several_devices_need_a_serial_and_a_busy_one_is_refused():
    hub = DeviceHub.software_only()
    for serial in ("a-1", "b-2"):
        hub.add(SoftwareCamera(serial, width=W, height=H).device)
    with pytest.raises(CameraError, match=r"2 RealSense devices connected \(a-1, b-2\)"):
        Camera(hub, CameraConfig(width=W, height=H), Frames()).start()
    first = Camera(hub, CameraConfig(serial="a-1", width=W, height=H), Frames())
    first.start()
    try:
        with pytest.raises(CameraError, match="camera a-1: cannot open") as busy:
            Camera(hub, CameraConfig(serial="a-1", width=W, height=H), Frames()).start()
        assert busy.value.transient
    finally:
        first.close()


# -- the node -------------------------------------------------------------------------------


@pytest.mark.ros
def test_camera_info_maps_distortion_models_like_realsense_ros():
    pytest.importorskip("rclpy")
    from policy_runtime.camera import Intrinsics
    from policy_runtime.ros.camera_node import camera_info

    coeffs = (0.1, -0.2, 0.003, -0.004, 0.05)
    base = dict(width=640, height=480, fx=600.0, fy=601.0, ppx=320.5, ppy=240.5, coeffs=coeffs)
    for model, ros_model, d in [
        ("brown_conrady", "plumb_bob", coeffs),
        ("inverse_brown_conrady", "plumb_bob", coeffs),
        ("kannala_brandt4", "equidistant", coeffs[:4]),
        ("none", "plumb_bob", coeffs),
    ]:
        info = camera_info(Intrinsics(model=model, **base))  # type: ignore[arg-type]
        assert (info.distortion_model, list(info.d)) == (ros_model, list(d))
    assert list(info.k) == [600.0, 0.0, 320.5, 0.0, 601.0, 240.5, 0.0, 0.0, 1.0]
    assert list(info.p) == [600.0, 0.0, 320.5, 0.0, 0.0, 601.0, 240.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert list(info.r) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


NODE_W, NODE_H = 160, 120


@pytest.mark.ros
def test_prt_camera_publishes_realsense_ros_topics(tmp_path: Path):
    pytest.importorskip("rclpy")
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from sensor_msgs.msg import CameraInfo, Image

    from policy_runtime.ros import qos

    node = NodeProcess(
        "prt-camera",
        {"device": "test_pattern", "camera_name": "front", "width": NODE_W, "height": NODE_H},
        tmp_path,
    )
    watch = Watcher()
    try:
        base = "/camera/front"
        topics = {
            "color": (f"{base}/color/image_raw", Image),
            "color_info": (f"{base}/color/camera_info", CameraInfo),
            "depth": (f"{base}/aligned_depth_to_color/image_raw", Image),
            "depth_info": (f"{base}/aligned_depth_to_color/camera_info", CameraInfo),
        }
        for key, (topic, msg_type) in topics.items():
            watch.keep(topic, msg_type, qos.SENSOR, key=key)
        watch.keep("/diagnostics", DiagnosticArray, qos.STREAM)
        wait_for(lambda: len(watch.received("depth_info")) >= 5, 60, "camera frames")
        wait_for(lambda: len(watch.received("/diagnostics")) >= 1, 10, "diagnostics")
        color = watch.received("color")[-1]
        received_at = time.time()
        assert (color.encoding, color.width, color.height) == ("rgb8", NODE_W, NODE_H)
        assert color.step == 3 * NODE_W and len(color.data) == 3 * NODE_W * NODE_H
        assert abs(color.header.stamp.sec + color.header.stamp.nanosec * 1e-9 - received_at) < 1
        depth = watch.received("depth")[-1]
        assert (depth.encoding, depth.step) == ("16UC1", 2 * NODE_W)
        mm = np.frombuffer(bytes(depth.data), np.uint16).reshape(NODE_H, NODE_W)
        assert 1000 <= np.median(mm[mm > 0]) <= 1500  # the pattern's plane, 1.0 to 1.5 m
        for key in topics:
            assert watch.received(key)[-1].header.frame_id == "front_color_optical_frame"
        fx = 0.71 * NODE_W
        expected_k = [fx, 0, (NODE_W - 1) / 2 + 1.5, 0, fx + 0.75, (NODE_H - 1) / 2 - 2.25, 0, 0, 1]
        for key in ("color_info", "depth_info"):
            info = watch.received(key)[-1]
            assert (info.width, info.height) == (NODE_W, NODE_H)
            np.testing.assert_allclose(info.k, expected_k, rtol=1e-6)
            np.testing.assert_allclose(
                info.p, [*expected_k[:3], 0, *expected_k[3:6], 0, 0, 0, 1, 0]
            )
            assert info.distortion_model == "plumb_bob"
            np.testing.assert_allclose(info.d, COLOR_COEFFS, rtol=1e-6)
        status = watch.received("/diagnostics")[-1].status[0]
        values = {kv.key: kv.value for kv in status.values}
        assert status.name == "policy_runtime: camera front"
        assert status.level == DiagnosticStatus.OK, status.message
        assert values["serial"] == "test-pattern" and int(values["frames_published"]) > 0
        assert "capture_to_publish_p50_ms" in values
        assert "auto exposure changes the images" in node.output()
    finally:
        watch.close()
        assert node.stop() == 0, node.output()


@pytest.mark.ros
@pytest.mark.parametrize(
    ("params", "named"),
    [({"fps": 0}, "fps"), ({"exposure_us": 2e6}, "exposure_us"), ({"device": "kinect"}, "device")],
)
def test_prt_camera_refuses_bad_parameters_by_name(tmp_path: Path, params: dict, named: str):
    pytest.importorskip("rclpy")
    node = NodeProcess("prt-camera", {"device": "test_pattern", **params}, tmp_path)
    assert node.process.wait(timeout=60) == 2, node.output()
    assert f"parameter '{named}' of node camera" in node.output()


@pytest.mark.ros
def test_prt_camera_publishes_its_calibration_on_tf_static(tmp_path: Path):
    """A deployment camera's calibration: on /tf_static where tf2_msgs imports, else said once;
    a calibration not written yet is a warning (the camera runs while being calibrated);
    another camera's calibration stops the node."""
    pytest.importorskip("rclpy")
    import yaml
    from sensor_msgs.msg import Image

    from calibration.intrinsics import CameraIntrinsics
    from calibration.result import CameraCalibration
    from policy_runtime.ros import qos
    from tests.ros_graph import BUNDLE

    pose = np.array([[0, -1, 0, 0.9], [-1, 0, 0, 0.1], [0, 0, -1, 0.8], [0, 0, 0, 1.0]])
    intrinsics = CameraIntrinsics(width=NODE_W, height=NODE_H, fx=120.0, fy=120.0, cx=80, cy=60)
    CameraCalibration.from_transform(
        "front", pose, intrinsics, "park", "eye_to_base", 20, np.array([0.3]), np.array([0.02])
    ).save(tmp_path / "front.yaml")
    device = {"width": NODE_W, "height": NODE_H, "depth": False}
    cell = {
        "robot": {"type": "ur5"},
        "bundle": str(BUNDLE),
        "cameras": {
            "front": {"serial": "front-sw", "calibration": "front.yaml", **device},
            "wrist": {"serial": "wrist-sw", "calibration": "calibration/wrist.yaml", **device},
            "side": {"serial": "side-sw", "calibration": "front.yaml", **device},
        },
    }
    deployment = tmp_path / "deploy.yaml"
    deployment.write_text(yaml.safe_dump(cell))
    nodes = {
        name: NodeProcess(
            "prt-camera",
            {"camera_name": name, "device": "test_pattern", "deployment": deployment},
            tmp_path,
        )
        for name in ("front", "wrist", "side")
    }
    watch = Watcher()
    try:
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            TFMessage = None
        else:
            watch.keep("/tf_static", TFMessage, qos.LATCHED)
        for name in ("front", "wrist"):
            watch.keep(f"/camera/{name}/color/image_raw", Image, qos.SENSOR, key=name)
        assert nodes["side"].process.wait(timeout=60) == 2, nodes["side"].output()
        assert (
            f"cameras.side.calibration {tmp_path / 'front.yaml'} calibrates "
            "front_color_optical_frame, not this camera's side_color_optical_frame"
        ) in nodes["side"].output()
        for name in ("front", "wrist"):
            wait_for(lambda name=name: len(watch.received(name)) >= 2, 60, f"{name} frames")
        assert (
            f"cameras.wrist.calibration {tmp_path / 'calibration' / 'wrist.yaml'} does not "
            "exist (yet): no static transform of wrist_color_optical_frame"
        ) in nodes["wrist"].output()
        if TFMessage is None:
            assert (
                "tf2_msgs is not importable (ROS 2 from the pip wheels): no /tf_static; "
                f"front_color_optical_frame in base_link is in {tmp_path / 'front.yaml'}"
            ) in nodes["front"].output()
        else:
            wait_for(lambda: bool(watch.received("/tf_static")), 10, "/tf_static")
            (transform,) = watch.received("/tf_static")[-1].transforms
            assert transform.header.frame_id == "base_link"
            assert transform.child_frame_id == "front_color_optical_frame"
            t, r = transform.transform.translation, transform.transform.rotation
            assert (t.x, t.y, t.z) == pytest.approx((0.9, 0.1, 0.8))
            assert (r.x, r.y, r.z, r.w) == pytest.approx((0.5**0.5, -(0.5**0.5), 0.0, 0.0))
    finally:
        watch.close()
        for node in nodes.values():
            node.stop()
