"""What a recording holds: the recorder's (and the bag import's) YAML config.

::

    task: push_t
    robot: ur5
    control_hz: 10                  # the policy's grid: one row per 1/control_hz seconds
    action_offset_steps: 1          # the recorded action is the target reached a step later
    max_gap_s: 0.3                  # a row whose sample is older than this flags the episode
    observations:                   # the policy's keys: the server's and deployment's entries
      ee_pose: {topic: /tcp_pose_broadcaster/pose, type: pose, rate_hz: 125}
      block_keypoints: {topic: /sim_bridge/task_state, type: joint_state,
                        name_prefix: block_keypoints/, shape: [16], rate_hz: 125}
      front_rgb: {topic: /camera/front/color/image_raw, type: image, shape: [96, 96, 3]}
    action:                         # concatenated in order into the ``action`` key
      - {topic: /teleop/target, type: pose}
      - {topic: /teleop/gripper, type: joint_state, names: [gripper]}
    grid_topic: /teleop/target      # the grid falls on this topic's stamps (see below)
    sim_bridge: /sim_bridge         # simulation: each episode's seed, success and score, and
                                    # the reset phase (the bridge's next episode)
    video: true                     # also an mp4 per camera topic, every frame, full size

``grid_topic``: without it the grid starts where every stream has a sample; with it, at the
first of that topic's samples from then on, so a command stream published once per period (the
teleop node's targets, stamped on whole periods) lands on the grid exactly: each row's action is
the command set at the row's time, not one up to a period older.

Observation entries are the policy server's (:class:`ObservationSource`), plus ``shape`` where
the message alone does not fix it (an image's stored size; a ``name_prefix`` key's length), so
the dataset's schema is known before the first message and ``--resume`` can check it up front.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from policy_runtime.data.schema import (
    ACTION_KEY,
    TIMESTAMP_KEY,
    DatasetSchema,
    FieldSpec,
)
from policy_runtime.serving.config import POSE_DIM, ObservationSource
from policy_runtime.validation import load_yaml_model

#: Per-episode values every recording stores (the simulator's datagen stores the first three).
EPISODE_KEYS = {
    "seed": FieldSpec(shape=(), dtype="int64", description="the sim's seed; -1 on a robot"),
    "success": FieldSpec(shape=(), dtype="bool", description="the sim's verdict or the operator's"),
    "score": FieldSpec(shape=(), dtype="float32", description="the sim's score; NaN on a robot"),
    "max_gap_s": FieldSpec(
        shape=(), dtype="float32", unit="s", description="oldest sample at a grid time"
    ),
    "gap_flagged": FieldSpec(shape=(), dtype="bool", description="max_gap_s over the limit"),
}


class RecordedSource(ObservationSource):
    """An observation source and the stored shape where the message does not fix it."""

    shape: tuple[int, ...] | None = None

    @model_validator(mode="after")
    def _shape_known(self) -> RecordedSource:
        if self.type == "image" and (self.shape is None or len(self.shape) != 3):
            raise ValueError("an image source needs shape: [height, width, 3] (the stored size)")
        if self.type == "image" and self.shape is not None and self.shape[2] != 3:
            raise ValueError(f"images are stored as (H, W, 3), got shape {list(self.shape)}")
        if self.name_prefix is not None and self.shape is None:
            raise ValueError("a name_prefix source needs shape: [n] (how many values)")
        return self

    @property
    def stored_shape(self) -> tuple[int, ...]:
        if self.shape is not None:
            return self.shape
        if self.type == "pose":
            return (POSE_DIM,)
        assert self.names is not None  # validated: names or name_prefix + shape
        return (len(self.names),)


class RecordingConfig(BaseModel):
    """See the module docs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str = ""
    robot: str = "ur5"
    control_hz: float = Field(gt=0)
    action_offset_steps: int = Field(default=1, ge=0)
    max_gap_s: float = Field(default=0.3, gt=0)
    #: A stream's row older than this many of its periods counts as a gap in the report.
    max_gap_periods: float = Field(default=2.5, gt=0)
    observations: dict[str, RecordedSource] = Field(min_length=1)
    action: list[RecordedSource] = Field(min_length=1)
    #: The grid starts on this topic's first sample once every stream has one (module docs).
    grid_topic: str | None = None
    #: The sim bridge's node name (simulation only): its ``~/episode`` status gives each
    #: episode's seed, success and score, and the reset phase starts its next episode.
    sim_bridge: str | None = None
    video: bool = False
    #: Seconds to wait for every stream's first sample after a start.
    start_timeout_s: float = Field(default=3.0, gt=0)
    #: Seconds to wait after a stop for every stream to reach the stop time.
    settle_s: float = Field(default=0.5, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> RecordingConfig:
        reserved = {ACTION_KEY, TIMESTAMP_KEY} & set(self.observations)
        if reserved:
            raise ValueError(f"observations may not be named {sorted(reserved)}")
        for i, part in enumerate(self.action):
            if part.type == "image":
                raise ValueError(f"action[{i}]: an action part is a pose or a joint_state")
        topics = {source.topic for source in self.streams().values()}
        if self.grid_topic is not None and self.grid_topic not in topics:
            raise ValueError(f"grid_topic {self.grid_topic} is none of the streams' topics")
        return self

    @classmethod
    def load(cls, path: Path | str) -> RecordingConfig:
        """The config in ``path``; ValueError naming the file and the field."""
        return load_yaml_model(cls, path, "recording config")

    @property
    def dt(self) -> float:
        return 1.0 / self.control_hz

    def streams(self) -> dict[str, RecordedSource]:
        """Every stream the recorder aligns: the observations, and ``action.<i>`` per part."""
        parts = {f"{ACTION_KEY}.{i}": part for i, part in enumerate(self.action)}
        return {**self.observations, **parts}

    def image_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: s.stored_shape for k, s in self.streams().items() if s.type == "image"}

    def camera_info_topics(self) -> dict[str, str]:
        """Each image key's ``camera_info`` topic (realsense-ros's sibling of ``image_raw``)."""
        return {
            key: source.topic.rsplit("/", 1)[0] + "/camera_info"
            for key, source in self.observations.items()
            if source.type == "image"
        }

    def dataset_schema(
        self, cameras: Mapping[str, CameraCalibration] | None = None
    ) -> DatasetSchema:
        """The dataset's schema, with each image key's camera (its ``camera_info``) when known.
        Streams, rates and cameras are part of it: appending data of another camera setup is
        refused."""
        keys: dict[str, FieldSpec] = {}
        for key, spec in self.observations.items():
            keys[key] = FieldSpec(
                shape=spec.stored_shape,
                dtype="uint8" if spec.type == "image" else "float32",
                unit=_UNITS[spec.type],
                frame="base_link" if spec.type == "pose" else "",
                description=f"{spec.type} from {spec.topic}",
            )
        action_dim = sum(part.stored_shape[0] for part in self.action)
        keys[ACTION_KEY] = FieldSpec(
            shape=(action_dim,),
            dtype="float32",
            description=" + ".join(part.topic for part in self.action),
        )
        keys[TIMESTAMP_KEY] = FieldSpec(shape=(), dtype="float64", unit="s")
        return DatasetSchema(
            keys=keys,
            episode_keys=EPISODE_KEYS,
            control_hz=self.control_hz,
            action_offset_steps=self.action_offset_steps,
            robot=self.robot,
            task=self.task,
            source="recorded (prt record, prt data from-bag)",
            provenance={
                "streams": {
                    key: {"topic": s.topic, "type": s.type, "rate_hz": s.rate_hz}
                    for key, s in self.streams().items()
                },
                "grid_topic": self.grid_topic,
                "cameras": {
                    key: camera.model_dump(mode="json")
                    for key, camera in sorted((cameras or {}).items())
                },
            },
        )


class CameraCalibration(BaseModel):
    """An image key's camera, from its ``camera_info``: the intrinsics of the published image
    (before the recorder's crop and resize) and its optical frame. The extrinsics come from
    hand-eye calibration (``prt calibrate``); None until a calibration names this frame."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frame_id: str
    width: int
    height: int
    k: tuple[float, ...] = Field(min_length=9, max_length=9)
    distortion_model: str
    d: tuple[float, ...]
    extrinsics: tuple[float, ...] | None = None

    @classmethod
    def from_message(cls, msg: Any) -> CameraCalibration:
        """A ``sensor_msgs/CameraInfo`` (rclpy's or rosbags', read by attribute)."""
        return cls(
            frame_id=msg.header.frame_id,
            width=int(msg.width),
            height=int(msg.height),
            k=tuple(float(v) for v in msg.k),
            distortion_model=msg.distortion_model,
            d=tuple(float(v) for v in msg.d),
        )


_UNITS = {"pose": "m, rot6d", "image": "", "joint_state": ""}
