"""rosbag2 (MCAP, sqlite3) to dataset episodes: the same episode as the live recorder's.

The messages are built and serialized with ``rosbags``' Jazzy typestore; the live test
publishes those very bytes to the recorder node, so both sides hold the same messages.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from typer.testing import CliRunner

from policy_runtime.alignment import newest_not_after
from policy_runtime.cli.main import app
from policy_runtime.data import EpisodeDataset
from policy_runtime.recording.bag import convert_bag
from policy_runtime.recording.config import RecordingConfig

TS = get_typestore(Stores.ROS2_JAZZY)
TYPES = TS.types
SEC = 1_000_000_000
MS = 1_000_000

KEYPOINTS = "/sim_bridge/task_state"
EE_POSE = "/tcp_pose_broadcaster/pose"
IMAGE = "/camera/front/color/image_raw"
CAMERA_INFO = "/camera/front/color/camera_info"
TARGET = "/teleop/target"
GRIPPER = "/teleop/gripper"
SPLIT = "/record/active"

CONFIG: dict[str, Any] = {
    "task": "bag_test",
    "control_hz": 10,
    "observations": {
        "block_keypoints": {
            "topic": KEYPOINTS,
            "type": "joint_state",
            "name_prefix": "block_keypoints/",
            "shape": [4],
            "rate_hz": 100,
        },
        "ee_pose": {"topic": EE_POSE, "type": "pose", "rate_hz": 100},
        "front_rgb": {"topic": IMAGE, "type": "image", "shape": [32, 32, 3], "rate_hz": 30},
    },
    "action": [
        {"topic": TARGET, "type": "pose", "rate_hz": 100},
        {"topic": GRIPPER, "type": "joint_state", "names": ["gripper"], "rate_hz": 50},
    ],
}
STREAM_TOPICS = (KEYPOINTS, EE_POSE, IMAGE, TARGET, GRIPPER)


@dataclass(frozen=True)
class Entry:
    """A serialized message and its log time (its header stamp, for the streams)."""

    log_ns: int
    topic: str
    msgtype: str
    data: bytes


def _serialized(msg: Any) -> bytes:
    return bytes(TS.serialize_cdr(msg, msg.__msgtype__))


def _header(ns: int, frame_id: str = "") -> Any:
    stamp = TYPES["builtin_interfaces/msg/Time"](sec=ns // SEC, nanosec=ns % SEC)
    return TYPES["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def _joint_state(ns: int, names: list[str], positions: Any) -> Any:
    return TYPES["sensor_msgs/msg/JointState"](
        header=_header(ns),
        name=names,
        position=np.asarray(positions, dtype=np.float64),
        velocity=np.zeros(0),
        effort=np.zeros(0),
    )


def _pose(ns: int, i: int, scale: float) -> Any:
    angle = 0.01 * i * scale
    pose = TYPES["geometry_msgs/msg/Pose"](
        position=TYPES["geometry_msgs/msg/Point"](x=0.4 + 0.001 * i, y=-0.1 * scale, z=0.3),
        orientation=TYPES["geometry_msgs/msg/Quaternion"](
            x=0.0, y=0.0, z=float(np.sin(angle / 2)), w=float(np.cos(angle / 2))
        ),
    )
    return TYPES["geometry_msgs/msg/PoseStamped"](header=_header(ns, "base_link"), pose=pose)


def _image(ns: int, i: int) -> Any:
    pixels = np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return TYPES["sensor_msgs/msg/Image"](
        header=_header(ns, "front_optical"),
        height=48,
        width=64,
        encoding="rgb8",
        is_bigendian=0,
        step=64 * 3,
        data=pixels.reshape(-1),
    )


def camera_info(ns: int) -> Entry:
    roi = TYPES["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    msg = TYPES["sensor_msgs/msg/CameraInfo"](
        header=_header(ns, "front_optical"),
        height=48,
        width=64,
        distortion_model="plumb_bob",
        d=np.array([0.1, -0.05, 0.0, 0.0, 0.01]),
        k=np.array([50.0, 0.0, 32.0, 0.0, 50.0, 24.0, 0.0, 0.0, 1.0]),
        r=np.eye(3).reshape(-1),
        p=np.array([50.0, 0.0, 32.0, 0.0, 0.0, 50.0, 24.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )
    return Entry(ns, CAMERA_INFO, msg.__msgtype__, _serialized(msg))


def split(ns: int, active: bool) -> Entry:
    msg = TYPES["std_msgs/msg/Bool"](data=active)
    return Entry(ns, SPLIT, msg.__msgtype__, _serialized(msg))


def streams(t0_ns: int, seconds: float = 3.0, skip: tuple[str, ...] = ()) -> list[Entry]:
    """Every stream's messages from ``t0_ns`` on for ``seconds``, each at its rate and phase,
    in stamp order: values encode the stream and the index, so a row shows which came."""
    names = [f"block_keypoints/{j}" for j in range(4)] + ["block_pose/theta"]
    makers = {  # topic: (period, phase, message i at stamp ns)
        KEYPOINTS: (10 * MS, 0, lambda ns, i: _joint_state(ns, names, i + np.arange(5) / 10)),
        EE_POSE: (10 * MS, 2 * MS, lambda ns, i: _pose(ns, i, 1.0)),
        IMAGE: (33_333_333, 5 * MS, _image),
        TARGET: (10 * MS, 7 * MS, lambda ns, i: _pose(ns, i, -1.0)),
        GRIPPER: (20 * MS, 3 * MS, lambda ns, i: _joint_state(ns, ["gripper"], [i / 100])),
    }
    entries = []
    for topic, (period, phase, make) in makers.items():
        if topic in skip:
            continue
        for i in range(int(seconds * SEC) // period):
            ns = t0_ns + phase + i * period
            msg = make(ns, i)
            entries.append(Entry(ns, topic, msg.__msgtype__, _serialized(msg)))
    return sorted(entries, key=lambda e: (e.log_ns, STREAM_TOPICS.index(e.topic)))


def write_bag(path: Path, entries: list[Entry], plugin: StoragePlugin = StoragePlugin.MCAP) -> Path:
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections: dict[str, Any] = {}
        for entry in sorted(entries, key=lambda e: e.log_ns):
            if entry.topic not in connections:
                connections[entry.topic] = writer.add_connection(
                    entry.topic, entry.msgtype, typestore=TS
                )
            writer.write(connections[entry.topic], entry.log_ns, entry.data)
    return path


def episodes(store: Path) -> list[dict[str, np.ndarray]]:
    ds = EpisodeDataset.open(store)
    return [ds.episode(i) for i in range(ds.n_episodes)]


@pytest.fixture
def config() -> RecordingConfig:
    return RecordingConfig.model_validate(CONFIG)


def test_a_sqlite3_bag_is_one_episode_on_the_newest_not_after_grid(tmp_path, config):
    t0 = 1000 * SEC
    entries = streams(t0)
    bag = write_bag(tmp_path / "bag", [camera_info(t0 - 50 * MS), *entries], StoragePlugin.SQLITE3)
    assert [f.suffix for f in bag.iterdir() if f.name != "metadata.yaml"] == [".db3"]
    reports = convert_bag(bag, config, tmp_path / "out.zarr")

    assert [r.index for r in reports] == [0] and not reports[0].flagged
    (episode,) = episodes(tmp_path / "out.zarr")
    stamps = {
        topic: np.array([e.log_ns for e in entries if e.topic == topic]) for topic in STREAM_TOPICS
    }
    first = max(s[0] for s in stamps.values())  # the grid starts where every stream has one
    last = min(s[-1] for s in stamps.values())  # and ends at the newest time all reached
    grid_ns = first + np.arange(int((last - first) // (100 * MS)) + 1) * 100 * MS
    np.testing.assert_allclose(episode["timestamp"], grid_ns * 1e-9, rtol=0, atol=1e-6)
    assert reports[0].length == len(grid_ns) == 30
    # The gripper's i-th message holds i / 100: each row is the newest message not after it.
    picked = newest_not_after(stamps[GRIPPER], grid_ns)
    np.testing.assert_allclose(episode["action"][:, -1], picked / 100, rtol=1e-6)
    picked = newest_not_after(stamps[KEYPOINTS], grid_ns)
    np.testing.assert_allclose(episode["block_keypoints"][:, 0], picked, rtol=1e-6)
    assert episode["front_rgb"].shape == (30, 32, 32, 3)
    cameras = EpisodeDataset.open(tmp_path / "out.zarr").schema.provenance["cameras"]
    assert cameras["front_rgb"]["k"][0] == 50.0 and cameras["front_rgb"]["frame_id"] == (
        "front_optical"
    )


def test_a_split_gap_cuts_two_bursts_into_two_episodes(tmp_path, config):
    t0, t1 = 1000 * SEC, 1005 * SEC
    entries = [camera_info(t0), *streams(t0, 1.5), *streams(t1, 1.5)]
    bag = write_bag(tmp_path / "bag", entries)

    reports = convert_bag(bag, config, tmp_path / "split.zarr", split_gap_s=1.0)
    assert [r.index for r in reports] == [0, 1]
    assert not any(r.flagged for r in reports)
    first, second = episodes(tmp_path / "split.zarr")
    assert first["timestamp"][-1] < 1001.5 and second["timestamp"][0] >= 1005.007
    # Without a split the pause is one long gap inside a single, flagged episode.
    (whole,) = convert_bag(bag, config, tmp_path / "whole.zarr")
    assert whole.flagged and whole.max_gap_s > 3.0


def test_a_split_topic_bounds_episodes_and_resume_appends(tmp_path, config):
    t0 = 1000 * SEC
    entries = [camera_info(t0), *streams(t0, 4.0)]
    marks = [split(t0 + 500 * MS, True), split(t0 + 1500 * MS, False)]
    marks += [split(t0 + 2000 * MS, True), split(t0 + 2000 * MS + 1, True)]  # a repeat: no-op
    bag = write_bag(tmp_path / "bag", [*entries, *marks, split(t0 + 3500 * MS, False)])
    out = tmp_path / "out.zarr"

    reports = convert_bag(bag, config, out, split_topic=SPLIT)
    assert [r.index for r in reports] == [0, 1] and [r.length for r in reports] == [11, 16]
    first, second = episodes(out)
    assert first["timestamp"][0] == pytest.approx(1000.5) and first["timestamp"][
        -1
    ] == pytest.approx(1001.5)
    assert second["timestamp"][0] == pytest.approx(1002.0)
    with pytest.raises(ValueError, match="exists: pass resume"):
        convert_bag(bag, config, out, split_topic=SPLIT)
    convert_bag(bag, config, out, split_topic=SPLIT, resume=True)
    assert EpisodeDataset.open(out).n_episodes == 4


def test_bad_input_is_named(tmp_path, config):
    t0 = 1000 * SEC
    bag = write_bag(tmp_path / "bag", [camera_info(t0), *streams(t0, 0.5, skip=(GRIPPER,))])
    with pytest.raises(ValueError, match=r"has no topic /teleop/gripper; its topics: .*"):
        convert_bag(bag, config, tmp_path / "out.zarr")
    with pytest.raises(ValueError, match=r"no topic /record/active"):
        convert_bag(bag, config, tmp_path / "out.zarr", split_topic=SPLIT)
    with pytest.raises(FileNotFoundError, match="nope"):
        convert_bag(tmp_path / "nope", config, tmp_path / "out.zarr")
    with pytest.raises(ValueError, match="not both"):
        convert_bag(bag, config, tmp_path / "out.zarr", split_topic=SPLIT, split_gap_s=1.0)
    assert not (tmp_path / "out.zarr").exists()  # nothing written on bad input


def test_prt_data_from_bag(tmp_path):
    t0 = 1000 * SEC
    bag = write_bag(tmp_path / "bag", [camera_info(t0), *streams(t0, 1.0)])
    config = tmp_path / "record.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    runner = CliRunner()
    args = ["data", "from-bag", str(bag), "--config", str(config), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "episode 0: 10 rows, 0.9 s, max gap 7 ms" in result.output
    result = runner.invoke(app, [*args, "--split-topic", SPLIT, "--resume"])
    assert result.exit_code == 1 and "no topic /record/active" in result.output


@pytest.mark.ros
def test_a_bag_converts_to_the_same_episode_as_the_live_recording(tmp_path, config, monkeypatch):
    """The recorder node, in its own process, records the messages live; the same messages in
    an MCAP bag convert to identical arrays."""
    pytest.importorskip("rclpy", reason="the ROS 2 Jazzy wheels are not installed")
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from std_srvs.srv import Trigger

    from tests.ros_graph import NodeProcess, Watcher, call, wait_for

    config_path = tmp_path / "record.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    live = tmp_path / "live.zarr"
    monkeypatch.setenv("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")  # this process's and the node's
    recorder = NodeProcess("prt-recorder", {"config": config_path, "output": live}, tmp_path)
    watcher = Watcher("bag_test_publisher")
    info = camera_info(1 * SEC)
    try:
        node = watcher.node
        # Reliable and deep: the test publishes every message once; the recorder subscribes
        # to images best effort (and a reliable publisher serves it).
        profile = QoSProfile(
            depth=1000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
        )
        kinds = {KEYPOINTS: JointState, EE_POSE: PoseStamped, IMAGE: Image, TARGET: PoseStamped}
        kinds.update({GRIPPER: JointState, CAMERA_INFO: CameraInfo})
        publishers = {t: node.create_publisher(k, t, profile) for t, k in kinds.items()}
        try:
            matched = lambda: all(p.get_subscription_count() for p in publishers.values())  # noqa: E731
            wait_for(matched, 30.0, "the recorder's subscriptions")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the recorder said: {recorder.output()}") from None
        start, stop, quit_ = (
            node.create_client(Trigger, f"/recorder/{name}") for name in ("start", "stop", "quit")
        )
        deadline = time.monotonic() + 30.0
        while True:  # the store opens once the camera_info came: until then start says not ready
            publishers[CAMERA_INFO].publish(info.data)
            answer = call(watcher, start, Trigger.Request(), timeout=30.0)
            if answer.success:
                break
            assert time.monotonic() < deadline, f"{answer.message}: {recorder.output()}"
            time.sleep(0.2)
        # Stamped on the recorder's clock (system time), after its start: published in real
        # time, each message when its stamp comes.
        t_base = time.time_ns() + 300 * MS
        entries = streams(t_base)
        for entry in entries:
            delay = (entry.log_ns - time.time_ns()) * 1e-9
            if delay > 0:
                time.sleep(delay)
            publishers[entry.topic].publish(entry.data)
        time.sleep(0.05)
        stopped = call(watcher, stop, Trigger.Request(), timeout=60.0)
        assert stopped.success, stopped.message
        assert call(watcher, quit_, Trigger.Request()).success
        recorder.process.wait(timeout=30.0)
    finally:
        watcher.close()
        recorder.stop()
    assert recorder.process.returncode == 0, recorder.output()

    marks = [split(t_base - 100 * MS, True), split(entries[-1].log_ns + 100 * MS, False)]
    info = dataclasses.replace(info, log_ns=t_base - 200 * MS)  # the same message, logged early
    bag = write_bag(tmp_path / "bag", [info, *marks, *entries])
    (report,) = convert_bag(bag, config, tmp_path / "bag.zarr", split_topic=SPLIT)

    live_ds, bag_ds = EpisodeDataset.open(live), EpisodeDataset.open(tmp_path / "bag.zarr")
    assert live_ds.n_episodes == bag_ds.n_episodes == 1
    assert live_ds.schema == bag_ds.schema
    (from_live,), (from_bag,) = episodes(live), episodes(tmp_path / "bag.zarr")
    assert sorted(from_live) == sorted(from_bag)
    assert report.length == len(from_live["timestamp"]) >= 28, stopped.message
    for key in from_bag:
        np.testing.assert_array_equal(from_live[key], from_bag[key], err_msg=key)
    for key in live_ds.schema.episode_keys:
        np.testing.assert_array_equal(
            live_ds.episode_info(key), bag_ds.episode_info(key), err_msg=key
        )
