"""A deployment: everything site-specific about one robot cell, in one YAML file.

::

    robot:
      type: ur5                     # ur5 (CB3, 125 Hz controller) | ur5e (e-series, 500 Hz)
      tcp_offset_m: [0, 0, 0.145]   # the TCP in tool0 (m): the gripper's length along z
    bundle: ../bundles/push_t_drifting   # relative to this file
    cameras:                        # one prt-camera node each (realsense-ros topics)
      front: {serial: "123456789012", observation: front_rgb, exposure_us: 8000,
              calibration: calibration/front.yaml}   # prt calibrate's YAML, relative
    observations:                   # the bundle's other keys: topic and decoding
      ee_pose: {topic: /tcp_pose_broadcaster/pose, type: pose, rate_hz: 125}
    object_state:                   # keys a marker tracker estimates (prt-object-state)
      block_keypoints: {cameras: [front, side], object: push_t_block_markers.yaml}
    executor:                       # the execution stack; unset fields keep the defaults
      limits: {velocity_fraction: 0.25, workspace_min_m: [0.3, -0.3, 0.02]}

The policy server, the executor, the camera nodes and the object state node read the same file
(parameter ``deployment``), and ``prt doctor --robot`` checks a live graph against it. A wrong
key or value is refused with its path in the file (``executor.limits.velocity_fraction: ...``).
Each ``object_state`` key is published by ``prt-object-state`` on
:meth:`DeploymentConfig.object_state_topic` (a ``sensor_msgs/JointState`` named as
:func:`object_state_names` says) and read by the policy server like any joint_state source.
Cores only: nothing here imports rclpy, pyrealsense2 or OpenCV.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from calibration.tracker_settings import TrackerSettings
from policy_runtime.camera.config import CameraConfig
from policy_runtime.execution.config import ExecutorConfig
from policy_runtime.execution.kinematics import DEFAULT_TCP_OFFSET_M, EeToJoint
from policy_runtime.robots.ur5 import CB3_CONTROL_HZ, E_SERIES_CONTROL_HZ
from policy_runtime.serving.config import ObservationSource, ServerConfig
from policy_runtime.validation import load_yaml_model

__all__ = [
    "CONTROLLER_HZ",
    "DeploymentCamera",
    "DeploymentConfig",
    "ObjectStateSource",
    "RobotSettings",
    "object_state_names",
]

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
    #: The camera's calibration YAML (``prt calibrate handeye``: intrinsics and its pose in
    #: ``base_link`` or ``tool0``), relative to the deployment file (resolved by
    #: :meth:`DeploymentConfig.load`). Not read here: the file may not exist yet (it is written
    #: with this deployment's cameras running); the nodes that read it name it when it is
    #: missing or wrong.
    calibration: Path | None = None


class ObjectStateSource(BaseModel):
    """An observation key estimated from images: an object's keypoints tracked by its markers
    in calibrated cameras fixed in the cell (:mod:`calibration.tracking`). Each camera that
    sees the object publishes its estimate, stamped with its frame's stamp, on the key's topic:
    the key stays fresh while any of them sees the object (the arm hides it from one camera
    when it reaches over it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Keys of ``cameras``; each must have a ``calibration`` (an eye_to_base one).
    cameras: tuple[str, ...] = Field(min_length=1)
    #: The object model YAML (markers, keypoints), relative to the deployment file (resolved
    #: by :meth:`DeploymentConfig.load`).
    object: Path
    tracker: TrackerSettings = Field(default_factory=TrackerSettings)


def object_state_names(key: str, n_values: int) -> list[str]:
    """The names of an object state message's values: ``<key>/0`` ... ``<key>/<n-1>`` the
    keypoints flattened (x0, y0, x1, y1, ..., the layout of ``/sim_bridge/task_state``), then
    ``<key>.confidence`` and ``<key>.latency_s``, which the policy server's ``name_prefix``
    ``<key>/`` does not pick."""
    return [*(f"{key}/{i}" for i in range(n_values)), f"{key}.confidence", f"{key}.latency_s"]


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
    #: Observation keys tracked from a camera's images (``prt-object-state``), by key.
    object_state: dict[str, ObjectStateSource] = Field(default_factory=dict)
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
        observed_by = {c.observation: n for n, c in self.cameras.items() if c.observation}
        for key, source in self.object_state.items():
            if key in self.observations:
                raise ValueError(
                    f"object_state.{key} is also under observations: give each key one source"
                )
            if key in observed_by:
                raise ValueError(
                    f"object_state.{key} is also cameras.{observed_by[key]}.observation: give "
                    "each key one source"
                )
            for name in source.cameras:
                tracking = self.cameras.get(name)
                if tracking is None:
                    raise ValueError(
                        f"object_state.{key}.cameras: {name!r} is not under cameras (they are "
                        f"{sorted(self.cameras)})"
                    )
                if tracking.calibration is None:
                    raise ValueError(
                        f"object_state.{key}.cameras: {name!r} has no calibration: set "
                        f"cameras.{name}.calibration to its `prt calibrate handeye --mode "
                        "eye_to_base` YAML"
                    )
        return self

    @classmethod
    def load(cls, path: Path | str) -> DeploymentConfig:
        """The deployment in the YAML file ``path``, its paths (bundle, camera calibrations,
        object models) resolved against the file's folder; ValueError naming the file and the
        field for anything wrong."""
        path = Path(path)
        config = load_yaml_model(cls, path, "deployment")

        def resolve(relative: Path) -> Path:
            return (relative if relative.is_absolute() else path.parent / relative).resolve()

        cameras = {
            name: camera
            if camera.calibration is None
            else camera.model_copy(update={"calibration": resolve(camera.calibration)})
            for name, camera in config.cameras.items()
        }
        object_state = {
            key: source.model_copy(update={"object": resolve(source.object)})
            for key, source in config.object_state.items()
        }
        return config.model_copy(
            update={
                "bundle": resolve(config.bundle),
                "cameras": cameras,
                "object_state": object_state,
            }
        )

    def camera_topic(self, name: str) -> str:
        """The colour image topic of camera ``name`` (realsense-ros 4.x layout)."""
        return f"/{self.camera_namespace}/{name}/color/image_raw"

    def object_state_topic(self, key: str) -> str:
        """The topic ``prt-object-state`` publishes ``object_state`` key ``key`` on."""
        return f"/perception/{key}"

    def server_config(self) -> ServerConfig:
        """The policy server's observation mapping: ``observations``, each camera's image, and
        each ``object_state`` key (its keypoints by ``name_prefix``, at its slowest camera's
        rate: the stream's rate when only that camera sees the object)."""
        sources = dict(self.observations)
        for name, camera in self.cameras.items():
            if camera.observation is not None:
                sources[camera.observation] = ObservationSource(
                    topic=self.camera_topic(name), type="image", rate_hz=camera.fps
                )
        for key, source in self.object_state.items():
            sources[key] = ObservationSource(
                topic=self.object_state_topic(key),
                type="joint_state",
                name_prefix=f"{key}/",
                rate_hz=min(self.cameras[name].fps for name in source.cameras),
            )
        return ServerConfig(observations=sources)

    def kinematics(self) -> EeToJoint:
        """The arm's kinematics with this cell's TCP."""
        tool0_to_tcp = np.eye(4)
        tool0_to_tcp[:3, 3] = self.robot.tcp_offset_m
        return EeToJoint(tool0_to_tcp)
