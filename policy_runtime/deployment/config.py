"""A deployment: everything site-specific about one robot cell, in one YAML file.

::

    robot:
      type: ur5                     # ur5 (CB3, 125 Hz controller) | ur5e (e-series, 500 Hz)
      tcp_offset_m: [0, 0, 0.145]   # the TCP in tool0 (m): the gripper's length along z
    bundle: ../bundles/push_t_drifting   # relative to this file
    cameras:                        # one prt-camera node each (realsense-ros topics)
      front: {serial: "123456789012", observation: front_rgb, exposure_us: 8000}
    observations:                   # the bundle's other keys: topic and decoding
      ee_pose: {topic: /tcp_pose_broadcaster/pose, type: pose, rate_hz: 125}
    executor:                       # the execution stack; unset fields keep the defaults
      limits: {velocity_fraction: 0.25, workspace_min_m: [0.3, -0.3, 0.02]}

The policy server, the executor and the camera nodes read the same file (parameter
``deployment``), and ``prt doctor --robot`` checks a live graph against it. A wrong key or
value is refused with its path in the file (``executor.limits.velocity_fraction: ...``).
Cores only: nothing here imports rclpy or pyrealsense2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from policy_runtime.camera.config import CameraConfig
from policy_runtime.execution.config import ExecutorConfig
from policy_runtime.execution.kinematics import DEFAULT_TCP_OFFSET_M, EeToJoint
from policy_runtime.robots.ur5 import CB3_CONTROL_HZ, E_SERIES_CONTROL_HZ
from policy_runtime.serving.config import ObservationSource, ServerConfig
from policy_runtime.validation import load_yaml_model

__all__ = ["CONTROLLER_HZ", "DeploymentCamera", "DeploymentConfig", "RobotSettings"]

#: The UR driver's controller rate per robot type.
CONTROLLER_HZ = {"ur5": CB3_CONTROL_HZ, "ur5e": E_SERIES_CONTROL_HZ}


class RobotSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["ur5", "ur5e"]
    #: The TCP's position in ``tool0`` (m); its orientation is tool0's.
    tcp_offset_m: tuple[float, float, float] = (0.0, 0.0, DEFAULT_TCP_OFFSET_M)

    @property
    def controller_hz(self) -> float:
        return CONTROLLER_HZ[self.type]


class DeploymentCamera(CameraConfig):
    """A camera of the cell: its device settings, and the image observation key it feeds (none:
    the camera runs for recording or monitoring only)."""

    observation: str | None = None


class DeploymentConfig(BaseModel):
    """See the module docs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    robot: RobotSettings
    #: The policy bundle, relative to the deployment file (resolved by :meth:`load`).
    bundle: Path
    cameras: dict[str, DeploymentCamera] = Field(default_factory=dict)
    #: The realsense-ros ``camera_namespace`` of every camera: ``/<namespace>/<name>/color/...``.
    camera_namespace: str = Field(default="camera", min_length=1)
    observations: dict[str, ObservationSource] = Field(default_factory=dict)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentConfig:
        loop = self.executor.loop
        hz = self.robot.controller_hz
        if "controller_hz" not in loop.model_fields_set:
            # The robot type states the rate; the loop takes it (frozen: set it in place once).
            updated = self.executor.model_copy(
                update={"loop": loop.model_copy(update={"controller_hz": hz})}
            )
            object.__setattr__(self, "executor", updated)
        elif loop.controller_hz != hz:
            raise ValueError(
                f"executor.loop.controller_hz is {loop.controller_hz:g} but robot.type "
                f"{self.robot.type} runs a {hz:g} Hz controller"
            )
        for name, camera in self.cameras.items():
            key = camera.observation
            if key is not None and key in self.observations:
                raise ValueError(
                    f"cameras.{name}.observation {key!r} is also under observations: "
                    "give each key one source"
                )
        return self

    @classmethod
    def load(cls, path: Path | str) -> DeploymentConfig:
        """The deployment in the YAML file ``path``, its bundle path resolved against the
        file's folder; ValueError naming the file and the field for anything wrong."""
        path = Path(path)
        config = load_yaml_model(cls, path, "deployment")
        bundle = config.bundle if config.bundle.is_absolute() else path.parent / config.bundle
        return config.model_copy(update={"bundle": bundle.resolve()})

    def camera_topic(self, name: str) -> str:
        """The colour image topic of camera ``name`` (realsense-ros 4.x layout)."""
        return f"/{self.camera_namespace}/{name}/color/image_raw"

    def server_config(self) -> ServerConfig:
        """The policy server's observation mapping: ``observations`` plus each camera's image."""
        sources = dict(self.observations)
        for name, camera in self.cameras.items():
            if camera.observation is not None:
                sources[camera.observation] = ObservationSource(
                    topic=self.camera_topic(name), type="image", rate_hz=camera.fps
                )
        return ServerConfig(observations=sources)

    def kinematics(self) -> EeToJoint:
        """The arm's kinematics with this cell's TCP."""
        tool0_to_tcp = np.eye(4)
        tool0_to_tcp[:3, 3] = self.robot.tcp_offset_m
        return EeToJoint(tool0_to_tcp)
