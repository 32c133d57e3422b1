"""A camera's calibration as one YAML file: intrinsics, extrinsics, how they were found.

::

    camera: front
    parent_frame: base_link                  # tool0 for a camera on the tool
    child_frame: front_color_optical_frame   # realsense-ros's optical frame of the camera
    translation_m: [1.15, 0.0, 0.75]         # the optical frame's origin in the parent
    rotation_xyzw: [...]                     # and its orientation (x right, y down, z forward)
    intrinsics: {width: 640, height: 480, fx: ..., fy: ..., cx: ..., cy: ...,
                 distortion_model: plumb_bob, d: [...]}
    method: park
    mode: eye_to_base
    captures: 20
    residual_translation_mm: {median: 0.4, max: 1.1}
    residual_rotation_deg: {median: 0.03, max: 0.08}
    date: 2026-12-02T07:00:00+00:00

The real cell's launch file publishes ``parent_frame -> child_frame`` as a static transform;
the simulator places its camera there (:meth:`CameraCalibration.parent_from_optical`), so a
policy sees in sim what it will see on the robot.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from calibration.intrinsics import CameraIntrinsics
from policy_runtime.robots.poses import matrix_from_quaternion, quaternion_from_matrix
from policy_runtime.validation import load_yaml_model


class Residual(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    median: float
    max: float


class CameraCalibration(BaseModel):
    """See the module docs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    camera: str = Field(min_length=1)
    parent_frame: Literal["base_link", "tool0"]
    child_frame: str = Field(min_length=1)
    translation_m: tuple[float, float, float]
    rotation_xyzw: tuple[float, float, float, float]
    intrinsics: CameraIntrinsics
    method: str
    mode: Literal["eye_in_hand", "eye_to_base"]
    captures: int = Field(ge=3)
    residual_translation_mm: Residual
    residual_rotation_deg: Residual
    date: str

    @classmethod
    def from_transform(
        cls,
        camera: str,
        parent_from_optical: np.ndarray,
        intrinsics: CameraIntrinsics,
        method: str,
        mode: Literal["eye_in_hand", "eye_to_base"],
        captures: int,
        translation_mm: np.ndarray,
        rotation_deg: np.ndarray,
    ) -> CameraCalibration:
        """A calibration from a solved transform and its per-capture residuals."""
        pose = np.asarray(parent_from_optical, dtype=np.float64)
        quaternion = quaternion_from_matrix(pose[:3, :3])
        return cls(
            camera=camera,
            parent_frame="tool0" if mode == "eye_in_hand" else "base_link",
            child_frame=f"{camera}_color_optical_frame",
            translation_m=tuple(float(v) for v in pose[:3, 3]),  # type: ignore[arg-type]
            rotation_xyzw=tuple(float(v) for v in quaternion),  # type: ignore[arg-type]
            intrinsics=intrinsics,
            method=method,
            mode=mode,
            captures=captures,
            residual_translation_mm=_residual(translation_mm),
            residual_rotation_deg=_residual(rotation_deg),
            date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        )

    @property
    def parent_from_optical(self) -> np.ndarray:
        """The camera's optical frame in ``parent_frame`` (4x4)."""
        pose = np.eye(4)
        pose[:3, :3] = matrix_from_quaternion(np.asarray(self.rotation_xyzw))
        pose[:3, 3] = self.translation_m
        return pose

    @property
    def fovy_deg(self) -> float:
        """The vertical field of view of the calibrated image (a simulated camera's focus)."""
        return float(np.degrees(2 * np.arctan(self.intrinsics.height / 2 / self.intrinsics.fy)))

    def sim_placement(self) -> tuple[str, np.ndarray, float]:
        """(parent frame, ``parent_from_optical``, vertical FOV): what the simulator needs to put
        its camera of the same name where this one is (principal point and distortion are
        not simulated)."""
        return self.parent_frame, self.parent_from_optical, self.fovy_deg

    def save(self, path: Path | str) -> None:
        """Write the YAML, beside then over any old file (never half written)."""
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(
            f"# {self.camera}: {self.mode} calibration ({self.method}), policy_runtime\n"
            + yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        )
        partial.replace(path)

    @classmethod
    def load(cls, path: Path | str) -> CameraCalibration:
        """The calibration in ``path``; ValueError naming the file and the field."""
        return load_yaml_model(cls, path, "camera calibration")


def _residual(values: np.ndarray) -> Residual:
    values = np.asarray(values, dtype=np.float64)
    return Residual(median=float(np.median(values)), max=float(np.max(values)))
