"""Where each of a bundle's observation keys comes from: the policy server's YAML config.

::

    observations:
      ee_pose:            # the key in the bundle's manifest
        topic: /tcp_pose_broadcaster/pose
        type: pose        # geometry_msgs/PoseStamped -> position + 6D rotation (9,)
        rate_hz: 125
      block_keypoints:
        topic: /sim_bridge/task_state
        type: joint_state # sensor_msgs/JointState, values picked by name
        name_prefix: block_keypoints/   # names <prefix>0, <prefix>1, ... in index order
        rate_hz: 125
      front_rgb:
        topic: /camera/front/color/image_raw
        type: image       # sensor_msgs/Image rgb8 or bgr8 -> centre-cropped, resized uint8
        rate_hz: 30

``rate_hz`` is the stream's expected rate: a window whose sample is more than
``max_gap_periods`` periods older than its grid time counts a gap. (A lockstep server waits by
the simulator's announcements instead: :mod:`policy_runtime.serving.lockstep`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from policy_runtime.inference.specs import PolicySpecs
from policy_runtime.serving.history import StreamSpec
from policy_runtime.validation import load_yaml_model

#: A pose observation: position (3) and 6D rotation (6), the ``ee_pose`` encoding.
POSE_DIM = 9


class ObservationSource(BaseModel):
    """One observation key's topic and how its messages become the key's array."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str = Field(min_length=1)
    type: Literal["joint_state", "pose", "image"]
    #: joint_state: the names to pick, in order (or ``name_prefix``).
    names: tuple[str, ...] | None = None
    #: joint_state: every name ``<prefix><i>``, i = 0, 1, ... (a task state's key).
    name_prefix: str | None = None
    #: joint_state: which array of the message.
    field: Literal["position", "velocity", "effort"] = "position"
    rate_hz: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _selection(self) -> ObservationSource:
        picks = (self.names is not None) + (self.name_prefix is not None)
        if self.type == "joint_state" and picks != 1:
            raise ValueError("a joint_state source needs exactly one of names or name_prefix")
        if self.type != "joint_state" and picks:
            raise ValueError(f"names and name_prefix are for joint_state sources, not {self.type}")
        return self


class ServerConfig(BaseModel):
    """The policy server's observation mapping (see the module docs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    observations: dict[str, ObservationSource]
    max_gap_periods: float = Field(default=2.5, gt=0)

    @classmethod
    def load(cls, path: Path | str) -> ServerConfig:
        """The config in the YAML file ``path``; a bad file raises ValueError naming the file
        and the field."""
        return load_yaml_model(cls, path, "server config")

    def for_policy(self, specs: PolicySpecs) -> dict[str, ObservationSource]:
        """The sources of the policy's keys, checked against their kinds and shapes; raises
        ValueError naming the key that has no source or does not fit."""
        sources: dict[str, ObservationSource] = {}
        for key in specs.obs.keys:
            source = self.observations.get(key.key)
            if source is None:
                raise ValueError(
                    f"the policy reads observation {key.key!r}, which the server config does "
                    f"not map to a topic (it maps {sorted(self.observations)})"
                )
            if (key.kind == "image") != (source.type == "image"):
                raise ValueError(
                    f"observations.{key.key}: a {key.kind} key cannot come from a "
                    f"{source.type} source"
                )
            if source.type == "pose" and tuple(key.shape) != (POSE_DIM,):
                raise ValueError(
                    f"observations.{key.key}: a pose gives ({POSE_DIM},), the policy wants "
                    f"{tuple(key.shape)}"
                )
            if source.names is not None and tuple(key.shape) != (len(source.names),):
                raise ValueError(
                    f"observations.{key.key}: {len(source.names)} names give "
                    f"({len(source.names)},), the policy wants {tuple(key.shape)}"
                )
            if source.type == "image" and (len(key.shape) != 3 or key.shape[2] != 3):
                raise ValueError(
                    f"observations.{key.key}: images are (H, W, 3), the policy wants "
                    f"{tuple(key.shape)}"
                )
            sources[key.key] = source
        return sources

    def streams(self, keys: list[str]) -> list[StreamSpec]:
        """The history's streams of ``keys``, with their periods."""
        streams = []
        for key in keys:
            rate = self.observations[key].rate_hz
            streams.append(StreamSpec(key, None if rate is None else 1.0 / rate))
        return streams
