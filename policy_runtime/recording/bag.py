"""rosbag2 recordings (MCAP or sqlite3) to dataset episodes, without a ROS install.

``ros2 bag record`` is the robust way to capture a session (nothing to decide while recording,
every message kept); this turns such a bag into the same episodes the live recorder
(:mod:`policy_runtime.ros.recorder_node`) would have written from the same messages. To make
that hold by construction, a bag's messages take the live recorder's path: each topic's
:class:`~policy_runtime.serving.topics.TopicReader` decodes them (messages are read by
attribute, so ``rosbags``' messages work like rclpy's) and an
:class:`~policy_runtime.recording.episode.EpisodeRecorder` aligns and writes them. Messages are
fed in the bag's log-time order, the order the live recorder received them in, and are stamped
with ``header.stamp``, as live: the log time never becomes a sample's time.

The schema's camera intrinsics come from the first ``camera_info`` of each image key, read
ahead of the images (a camera may publish its first ``camera_info`` after its first frame).

Episode boundaries, one of:

- ``split_topic``: a ``std_msgs/msg/Bool`` topic; True starts an episode, False stops it (a
  repeated value changes nothing). A Bool has no header, so the boundary time is the message's
  *log time*, which is then compared with header stamps: the recorder's clock and the bag's
  log time must be the same clock. That holds for ``ros2 bag record`` on the machine of the
  publishers, all on system time (not with ``use_sim_time`` on one side only). A stop waits
  like the live recorder's: until every stream has reached the stop time or ``settle_s`` of log
  time has passed, so late frames still make the last rows.
- ``split_gap_s``: a pause longer than this in *every* stream's stamps ends an episode (at the
  newest time every stream reached) and the next sample starts one; the samples of the previous
  burst never seed the next episode.
- neither: the whole bag is one episode.

An episode still open when the bag ends is saved up to the newest time every stream reached.
Every episode gets :class:`~policy_runtime.recording.episode.EpisodeInfo`'s defaults (a success,
seed -1, score NaN): a bag carries no verdict.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Connection
from rosbags.typesys import Stores, get_typestore

from policy_runtime.data.writer import DatasetWriter
from policy_runtime.recording.config import CameraCalibration, RecordingConfig
from policy_runtime.recording.episode import (
    EpisodeInfo,
    EpisodeRecorder,
    EpisodeReport,
    RecordingError,
)
from policy_runtime.serving.topics import TopicReader, image_pixels, message_stamp, readers

__all__ = ["convert_bag"]

logger = logging.getLogger(__name__)

#: The message type each source type is read from (as the live recorder subscribes).
MESSAGE_TYPES = {
    "joint_state": "sensor_msgs/msg/JointState",
    "pose": "geometry_msgs/msg/PoseStamped",
    "image": "sensor_msgs/msg/Image",
}
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
SPLIT_TYPE = "std_msgs/msg/Bool"


def convert_bag(
    bag: Path,
    config: RecordingConfig,
    out: Path,
    split_topic: str | None = None,
    split_gap_s: float | None = None,
    resume: bool = False,
    warn: Callable[[str], None] | None = None,
) -> list[EpisodeReport]:
    """Append the episodes of the rosbag2 ``bag`` (a directory with ``metadata.yaml``, or one
    ``.mcap`` / ``.db3`` file) to the dataset store ``out``; the saved episodes' reports.

    Bad input raises before anything is written: FileNotFoundError for a missing bag,
    ValueError for a store that exists without ``resume``, a bag that does not read, a
    topic missing from the bag or of another type (each named, with the bag's topics), a
    schema that differs from the resumed store's, and both split options at once. A message
    that does not deserialize raises ValueError where it is (the episodes saved before it
    stay). An episode that cannot be saved (a stream silent in it, or shorter than one grid
    period) is skipped and ``warn`` (default: this module's logger) says why; the others are
    still saved.
    """
    bag, out = Path(bag), Path(out)
    if split_topic is not None and split_gap_s is not None:
        raise ValueError("give a split topic or a split gap, not both")
    if split_gap_s is not None and not split_gap_s > 0:
        raise ValueError(f"the split gap must be > 0 s, got {split_gap_s}")
    if not bag.exists():
        raise FileNotFoundError(f"bag {bag} does not exist")
    if bag.suffix == ".bag":  # rosbags reads any path ending in .bag as ROS 1
        raise ValueError(
            f"{bag}: a ROS 1 bag? convert it with rosbags-convert first"
            if bag.is_file()
            else f"{bag}: rename the rosbag2 directory (a name ending in .bag reads as ROS 1)"
        )
    if bag.is_dir() and not (bag / "metadata.yaml").exists():
        raise ValueError(f"{bag} is not a rosbag2 directory: it has no metadata.yaml")
    if out.exists() and not resume:
        raise ValueError(f"{out} exists: pass resume to append to it")
    topic_readers = readers(config.streams(), config.image_shapes())
    expected = {topic: MESSAGE_TYPES[reader.kind] for topic, reader in topic_readers.items()}
    info_topics = config.camera_info_topics()
    for topic in info_topics.values():
        expected[topic] = CAMERA_INFO
    if split_topic is not None:
        if split_topic in expected:
            raise ValueError(f"split topic {split_topic} is also a stream of the config")
        expected[split_topic] = SPLIT_TYPE

    try:
        reader = AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_JAZZY))
        reader.open()
    except AnyReaderError as exc:
        raise ValueError(f"{bag} does not read as a rosbag2: {exc}") from None
    try:
        connections = _connections(reader, bag, expected)
        cameras = _cameras(reader, bag, connections, info_topics)
        with DatasetWriter(out, config.dataset_schema(cameras)) as writer:
            episodes = _Episodes(
                writer, config, split_topic is None, split_gap_s, warn or logger.warning
            )
            try:
                fed = [c for c in connections if c.msgtype != CAMERA_INFO]
                for connection, log_ns, raw in reader.messages(fed):
                    msg = _deserialize(reader, bag, connection, log_ns, raw)
                    if connection.topic == split_topic:
                        episodes.boundary(bool(msg.data), log_ns * 1e-9)
                    else:
                        episodes.sample(topic_readers[connection.topic], msg, log_ns * 1e-9)
                episodes.end()
            finally:
                episodes.recorder.discard()  # a failure midway: the episode in progress goes
            return episodes.reports
    finally:
        reader.close()


class _Episodes:
    """The live session's episode flow, driven by the bag's messages instead of an operator."""

    def __init__(
        self,
        writer: DatasetWriter,
        config: RecordingConfig,
        by_stamps: bool,
        split_gap_s: float | None,
        warn: Callable[[str], None],
    ) -> None:
        self.writer, self.config, self.warn = writer, config, warn
        self.recorder = EpisodeRecorder(writer, config)
        self.reports: list[EpisodeReport] = []
        #: Split by gaps (or the whole bag as one episode) rather than by a split topic.
        self.by_stamps = by_stamps
        self.split_gap_s = split_gap_s
        #: The newest stamp of any stream so far (gap splitting).
        self.latest = -math.inf
        #: A stop waiting for the streams to reach its time (split topic).
        self.stop_at: float | None = None

    def boundary(self, recording: bool, log_t: float) -> None:
        """A split-topic message at log time ``log_t`` (see the module docs)."""
        self._settle(log_t)
        if recording:
            if self.stop_at is not None:  # started again before the stop settled
                self._finish(self.stop_at)
            if not self.recorder.recording:
                self.recorder.start(log_t)
        elif self.recorder.recording and self.stop_at is None:
            self.stop_at = log_t

    def sample(self, reader: TopicReader, msg: Any, log_t: float) -> None:
        self._settle(log_t)
        t = message_stamp(msg)
        if t <= 0.0:
            return  # ROS time 0: no clock yet, never a stamp (as live)
        if self.by_stamps:
            gap = self.split_gap_s
            if self.recorder.recording and gap is not None and t > self.latest + gap:
                self._finish(math.inf)
                # A fresh recorder: the previous burst's samples must not seed the next episode.
                self.recorder = EpisodeRecorder(self.writer, self.config)
            if not self.recorder.recording:
                self.recorder.start(t)
            self.latest = max(self.latest, t)
        for key, decode in reader.read(msg):
            self.recorder.add(key, t, decode)
        if self.config.video and reader.kind == "image":
            with contextlib.suppress(ValueError):  # counted by the sample's decode
                self.recorder.add_frame(reader.topic, t, image_pixels(msg))
        if self.stop_at is not None and self.recorder.covers(self.stop_at):
            self._finish(self.stop_at)

    def end(self) -> None:
        """The bag ended: save what is open."""
        if self.stop_at is not None:
            self._finish(self.stop_at)
        elif self.recorder.recording:
            self._finish(math.inf)

    def _settle(self, log_t: float) -> None:
        """Save a pending stop once ``settle_s`` of log time has passed (the live wait)."""
        if self.stop_at is not None and log_t > self.stop_at + self.config.settle_s:
            self._finish(self.stop_at)

    def _finish(self, t_end: float) -> None:
        self.stop_at = None
        try:
            self.reports.append(self.recorder.finish(t_end, EpisodeInfo()))
        except RecordingError as exc:  # finish discarded it; the bag's other episodes go on
            start = self.recorder.t_start
            when = "" if start is None else f" started at {start:.3f} s"
            self.warn(f"episode{when}: {exc}")


def _connections(reader: AnyReader, bag: Path, expected: dict[str, str]) -> list[Connection]:
    """The bag's connections of the ``expected`` topics; ValueError naming every missing or
    mistyped topic."""
    found: dict[str, set[str]] = {}
    for connection in reader.connections:
        found.setdefault(connection.topic, set()).add(connection.msgtype)
    missing = sorted(topic for topic in expected if topic not in found)
    if missing:
        have = ", ".join(f"{t} ({', '.join(sorted(found[t]))})" for t in sorted(found))
        raise ValueError(f"{bag} has no topic {', '.join(missing)}; its topics: {have or 'none'}")
    mistyped = [
        f"{topic} is {', '.join(sorted(found[topic]))}, not {msgtype}"
        for topic, msgtype in sorted(expected.items())
        if found[topic] != {msgtype}
    ]
    if mistyped:
        raise ValueError(f"{bag}: {'; '.join(mistyped)}")
    return [c for c in reader.connections if c.topic in expected]


def _cameras(
    reader: AnyReader, bag: Path, connections: Iterable[Connection], info_topics: dict[str, str]
) -> dict[str, CameraCalibration]:
    """Each image key's camera from the first ``camera_info`` on its topic (a pass over the
    ``camera_info`` connections only, stopping once every camera is known)."""
    keys_of: dict[str, list[str]] = {}
    for key, topic in info_topics.items():
        keys_of.setdefault(topic, []).append(key)
    wanted = [c for c in connections if c.topic in keys_of]
    cameras: dict[str, CameraCalibration] = {}
    if wanted:
        messages = reader.messages(wanted)
        for connection, log_ns, raw in messages:
            msg = _deserialize(reader, bag, connection, log_ns, raw)
            for key in keys_of[connection.topic]:
                cameras.setdefault(key, CameraCalibration.from_message(msg))
            if len(cameras) == len(info_topics):
                break
        messages.close()
    silent = sorted({info_topics[k] for k in info_topics if k not in cameras})
    if silent:
        raise ValueError(f"{bag} has no message on {', '.join(silent)} (the cameras' intrinsics)")
    return cameras


def _deserialize(
    reader: AnyReader, bag: Path, connection: Connection, log_ns: int, raw: bytes
) -> Any:
    try:
        return reader.deserialize(raw, connection.msgtype)
    except AnyReaderError as exc:
        raise ValueError(
            f"{bag}: a {connection.msgtype} on {connection.topic} at log time "
            f"{log_ns * 1e-9:.3f} s does not deserialize: {exc}"
        ) from None
